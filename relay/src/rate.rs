//! A token bucket: `rate` requests per second with bursts up to `burst`.

/// Per-connection request budget.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last_millis: u64,
}

impl TokenBucket {
    /// A full bucket at time `now_millis`.
    pub(crate) fn new(rate_per_sec: u32, burst: u32, now_millis: u64) -> Self {
        Self {
            rate_per_sec: f64::from(rate_per_sec),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last_millis: now_millis,
        }
    }

    /// How long until one token is there (zero if one is), at
    /// `now_millis`; nothing is taken.
    pub(crate) fn wait_millis(&self, now_millis: u64) -> u64 {
        let elapsed = now_millis.saturating_sub(self.last_millis) as f64 / 1000.0;
        let tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        if tokens >= 1.0 {
            0
        } else {
            ((1.0 - tokens) / self.rate_per_sec * 1000.0).ceil() as u64
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now_millis: u64) -> bool {
        let elapsed = now_millis.saturating_sub(self.last_millis) as f64 / 1000.0;
        self.last_millis = self.last_millis.max(now_millis);
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
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

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let mut bucket = TokenBucket::new(10, 5, 0);
        assert_eq!((0..10).filter(|_| bucket.try_take(0)).count(), 5);
        assert!(!bucket.try_take(50), "half a token after 50 ms");
        assert!(bucket.try_take(100));
        assert_eq!(
            (0..10).filter(|_| bucket.try_take(10_000)).count(),
            5,
            "capped at burst"
        );
    }

    #[test]
    fn the_wait_is_the_time_to_the_next_token() {
        let mut bucket = TokenBucket::new(10, 1, 0);
        assert_eq!(bucket.wait_millis(0), 0);
        assert!(bucket.try_take(0));
        assert_eq!(bucket.wait_millis(0), 100);
        assert_eq!(bucket.wait_millis(40), 60);
        assert_eq!(bucket.wait_millis(100), 0);
    }

    #[test]
    fn a_clock_going_backwards_grants_nothing() {
        let mut bucket = TokenBucket::new(10, 1, 1000);
        assert!(bucket.try_take(1000));
        assert!(!bucket.try_take(0));
    }
}
