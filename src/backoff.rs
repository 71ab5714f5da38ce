//! One backoff for every retry loop: exponential with full jitter, capped, and optionally a
//! limited number of attempts.

use std::time::Duration;

/// Retries of one call on transient failures (throttling, timeouts, 5xx) before the failure is
/// passed on, where a caller retries in place: with the default `retry_backoff` of 200 ms
/// doubling to `max_retry_backoff` of 10 s, between about half a minute and a minute.
pub(crate) const TRANSIENT_ATTEMPTS: u32 = 10;

/// Waits between attempts: a random wait in `[base·2^n / 2, base·2^n]` before retry `n + 1`,
/// capped at `cap`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    limit: Option<u32>,
}

impl Backoff {
    /// Retries without end (the caller decides when to stop).
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
            limit: None,
        }
    }

    /// The consumer's own retries: `retry_backoff` doubling up to `max_retry_backoff`.
    pub(crate) fn for_config(config: &crate::ConsumerConfig) -> Self {
        Self::new(config.retry_backoff, config.max_retry_backoff)
    }

    /// At most `retries` waits; the next failure after them is final.
    pub(crate) fn limited(mut self, retries: u32) -> Self {
        self.limit = Some(retries);
        self
    }

    /// A failure happened: the wait before trying again, or `None` when the retries are spent.
    pub(crate) fn next_wait(&mut self) -> Option<Duration> {
        if self.limit.is_some_and(|l| self.failures >= l) {
            return None;
        }
        let wait = Self::nth(self.base, self.cap, self.failures);
        self.failures += 1;
        Some(wait)
    }

    /// Failures since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure waits the shortest again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait before retry `n + 1`, for loops that count failures themselves.
    pub(crate) fn nth(base: Duration, cap: Duration, n: u32) -> Duration {
        let exp = base.saturating_mul(1u32 << n.min(20)).min(cap);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_are_jittered_and_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for n in 0..40 {
            let d = Backoff::nth(base, cap, n);
            let exp = base.saturating_mul(1 << n.min(20)).min(cap);
            assert!(d >= exp / 2 && d <= exp, "retry {n}: {d:?} vs {exp:?}");
        }
    }

    #[test]
    fn a_limited_backoff_gives_up_and_a_reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1)).limited(3);
        let waits: Vec<_> = std::iter::from_fn(|| b.next_wait()).collect();
        assert_eq!(waits.len(), 3);
        assert!(waits[0] <= Duration::from_millis(10));
        assert!(waits[2] >= Duration::from_millis(20));
        assert_eq!(b.failures(), 3);
        b.reset();
        assert!(b
            .next_wait()
            .is_some_and(|w| w <= Duration::from_millis(10)));
    }
}
