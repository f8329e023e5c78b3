//! The counting allocator counts what it should, installed as a test binary's allocator.

use duplex_testkit::alloc::{self, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn the_counter_sees_allocations_on_this_thread() {
    let n = alloc::count_allocations(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(100));
        std::hint::black_box(vec![1u8; 10].into_boxed_slice());
    });
    assert_eq!(n, 2);
    // Not counting: nothing is counted, and the next count starts from zero.
    std::hint::black_box(Vec::<u8>::with_capacity(100));
    assert_eq!(alloc::count_allocations(|| {}), 0);
}

#[test]
fn the_peak_follows_live_bytes() {
    let baseline = alloc::reset_peak();
    let big = std::hint::black_box(vec![0u8; 1 << 20]);
    assert!(alloc::live_bytes() >= baseline + (1 << 20) - (64 << 10));
    drop(big);
    // Other test threads allocate too: the peak is at least the megabyte held above.
    assert!(alloc::peak_bytes() >= baseline + (1 << 20) - (64 << 10));
}
