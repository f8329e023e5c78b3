//! A counting global allocator for tests that count allocations or bytes.
//!
//! Install it in a test binary, then measure:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: duplex_testkit::alloc::Counting = duplex_testkit::alloc::Counting;
//!
//! let n = duplex_testkit::alloc::count_allocations(|| { let _ = Vec::<u8>::with_capacity(8); });
//! assert_eq!(n, 1);
//! ```
//!
//! It counts two things, each forwarded call unchanged to the system allocator:
//! - allocations (and reallocations) made on the current thread while [`count_allocations`] or
//!   [`count_allocations_async`] runs: steady-state "no allocation per message" checks;
//! - live heap bytes of the whole process and their peak since [`reset_peak`]: memory bounds.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The allocator: `#[global_allocator] static A: Counting = Counting;`.
#[derive(Debug)]
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations seen on this thread while counting is on; `None` while off.
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

fn bump() {
    // `try_with`: the allocator may run while the thread's locals are being torn down.
    let _ = COUNT.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrank(by: usize) {
    LIVE.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged
// and returns its result; the additions only update atomics and a const-initialised thread
// local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract; forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract; forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`, as
        // the caller guarantees; forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`, as
        // the caller guarantees; forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }
}

/// Runs `f` and returns the allocations it made on this thread (reallocations included).
pub fn count_allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(Some(0)));
    f();
    COUNT.with(|c| c.take()).unwrap_or(0)
}

/// Awaits `f` and returns the allocations made on this thread meanwhile; for a future run on
/// a current-thread runtime, that is all of them.
pub async fn count_allocations_async(f: impl Future<Output = ()>) -> u64 {
    COUNT.with(|c| c.set(Some(0)));
    f.await;
    COUNT.with(|c| c.take()).unwrap_or(0)
}

/// Heap bytes live now (the whole process).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most heap bytes live at once since the last [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak from what is live now; returns that (the baseline of a measurement).
pub fn reset_peak() -> usize {
    let live = live_bytes();
    PEAK.store(live, Ordering::Relaxed);
    live
}
