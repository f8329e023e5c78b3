//! A token bucket: the per-connection message rate limit.

use std::time::Instant;

/// Allows `rate` messages per second on average and bursts of up to `2 * rate` (see the tests
/// below for the numbers).
#[derive(Debug)]
pub(crate) struct RateLimit {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket; `rate` 0 means unlimited.
    pub(crate) fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate);
        // Twice the rate: a person pasting a few lines, or a client replaying its outbox after
        // a reconnect, should not be cut off.
        let capacity = rate * 2.0;
        RateLimit {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_up_to_twice_the_rate_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = RateLimit::new(10, t0);
        assert!((0..20).all(|_| bucket.allow(t0)));
        assert!(!bucket.allow(t0));
        let t1 = t0 + Duration::from_millis(500);
        assert!((0..5).all(|_| bucket.allow(t1)));
        assert!(!bucket.allow(t1));
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut bucket = RateLimit::new(0, t0);
        assert!((0..10_000).all(|_| bucket.allow(t0)));
    }
}
