//! What the connections measure into: the measurement window, the counters every task adds
//! to, and the latency histograms.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The measurement window, shared by every task.
#[derive(Debug)]
pub(super) struct Window {
    pub(super) start: Instant,
    pub(super) end: Instant,
}

impl Window {
    pub(super) fn contains(&self, t: Instant) -> bool {
        t >= self.start && t <= self.end
    }
}

/// Counters every task adds to.
#[derive(Debug, Default)]
pub(super) struct Totals {
    /// Messages received in the window.
    pub(super) messages: AtomicU64,
    /// Payload bytes received in the window.
    pub(super) bytes: AtomicU64,
    /// Messages received since the start (for the progress line).
    pub(super) seen: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) connect_errors: AtomicU64,
    pub(super) first_error: Mutex<Option<String>>,
}

impl Totals {
    pub(super) fn error(&self, what: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        self.note(what);
    }

    pub(super) fn note(&self, what: impl std::fmt::Display) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| what.to_string());
        }
    }
}

/// What one connection measured.
pub(super) type Latencies = Histogram<u64>;

pub(super) fn histogram() -> Latencies {
    // Nanoseconds, 1 ns to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

pub(super) fn record(hist: &mut Latencies, d: Duration) {
    hist.saturating_record(d.as_nanos().clamp(1, u128::from(u64::MAX)) as u64);
}
