//! Per-region token buckets, enforced before forwarding.
//!
//! A GCRA bucket in one `AtomicU64` (the theoretical arrival time): `governor`
//! implements the same algorithm, but it cannot look at a bucket without
//! taking from it, which `explain` needs, nor say how full it is for the
//! status page; the whole algorithm is the compare-and-swap loop below.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use switchyard_config::RateLimit;

/// The instant bucket times count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`], for `now` arguments.
pub fn nanos(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

/// A token bucket holding up to `burst` tokens, refilled at `rps`.
#[derive(Debug)]
pub struct TokenBucket {
    pub limit: RateLimit,
    /// Nanoseconds per token.
    interval: u64,
    /// How far ahead of now the arrival time may run: `burst` tokens' worth.
    tolerance: u64,
    /// Theoretical arrival time of the next request, nanos since the epoch.
    tat: AtomicU64,
}

/// Why a bucket refused: when a token will be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetryIn(pub Duration);

impl RetryIn {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn secs(self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl TokenBucket {
    pub fn new(limit: RateLimit) -> Self {
        let interval = (1e9 / limit.rps).max(1.0) as u64;
        TokenBucket {
            limit,
            interval,
            tolerance: interval.saturating_mul(u64::from(limit.burst)),
            tat: AtomicU64::new(0),
        }
    }

    /// Takes a token at `now` (see [`nanos`]), or says when one will be there.
    #[inline]
    pub fn try_take(&self, now: u64) -> Result<(), RetryIn> {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + self.interval;
            if next - now > self.tolerance {
                return Err(RetryIn(Duration::from_nanos(next - now - self.tolerance)));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Whether a token is there at `now`, without taking it.
    pub fn peek(&self, now: u64) -> Result<(), RetryIn> {
        let next = self.tat.load(Ordering::Relaxed).max(now) + self.interval;
        if next - now > self.tolerance {
            Err(RetryIn(Duration::from_nanos(next - now - self.tolerance)))
        } else {
            Ok(())
        }
    }

    /// Whole tokens in the bucket at `now`.
    pub fn available(&self, now: u64) -> u64 {
        let used = self.tat.load(Ordering::Relaxed).saturating_sub(now);
        self.tolerance.saturating_sub(used) / self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn burst_then_rate() {
        let b = TokenBucket::new(RateLimit {
            rps: 10.0,
            burst: 5,
        });
        let t0 = 100 * SEC;
        assert_eq!(b.available(t0), 5);
        for _ in 0..5 {
            assert_eq!(b.try_take(t0), Ok(()));
        }
        let wait = b.try_take(t0).expect_err("empty");
        assert_eq!(wait.0, Duration::from_millis(100));
        assert_eq!(wait.secs(), 1);
        assert!(b.peek(t0 + SEC / 10).is_ok());
        assert_eq!(b.try_take(t0 + SEC / 10), Ok(()));
        assert!(b.try_take(t0 + SEC / 10).is_err());
        // A quiet second refills the burst, never beyond it.
        assert_eq!(b.available(t0 + 10 * SEC), 5);
    }

    #[test]
    fn peek_takes_nothing() {
        let b = TokenBucket::new(RateLimit { rps: 1.0, burst: 1 });
        let t0 = 5 * SEC;
        for _ in 0..10 {
            assert!(b.peek(t0).is_ok());
        }
        assert!(b.try_take(t0).is_ok());
        assert!(b.peek(t0).is_err());
    }

    #[test]
    fn sustained_rate_is_kept_over_time() {
        let b = TokenBucket::new(RateLimit {
            rps: 100.0,
            burst: 10,
        });
        let mut admitted = 0;
        // 1000 requests/s offered for 10 s, in 1 ms steps.
        for ms in 0..10_000u64 {
            if b.try_take(SEC + ms * 1_000_000).is_ok() {
                admitted += 1;
            }
        }
        assert!((1000..=1011).contains(&admitted), "{admitted}");
    }
}
