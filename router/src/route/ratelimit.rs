//! Per-region token buckets, enforced before forwarding.
//!
//! A GCRA bucket in one `AtomicU64` (the theoretical arrival time): `governor`
//! implements the same algorithm, but it cannot look at a bucket without
//! taking from it, which `explain` needs, nor say how full it is for the
//! status page; the whole algorithm is the compare-and-swap loop below.
//!
//! In fleet mode a region's limit is the fleet's budget: each router takes
//! its share, `1/N` of the rate and of the burst (at least one token) for `N`
//! live members, and the share follows the membership.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    pub(crate) limit: RateLimit,
    /// Nanoseconds per token (of this router's share).
    interval: AtomicU64,
    /// How far ahead of now the arrival time may run: the share's burst.
    tolerance: AtomicU64,
    /// How many routers share the limit.
    share: AtomicU32,
    /// Theoretical arrival time of the next request, nanos since the epoch.
    tat: AtomicU64,
}

/// Why a bucket refused: when a token will be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetryIn(pub(crate) Duration);

impl RetryIn {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn secs(self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl TokenBucket {
    pub fn new(limit: RateLimit) -> Self {
        let b = TokenBucket {
            limit,
            interval: AtomicU64::new(0),
            tolerance: AtomicU64::new(0),
            share: AtomicU32::new(0),
            tat: AtomicU64::new(0),
        };
        b.set_share(1);
        b
    }

    /// Enforces `1/routers` of the limit from now on.
    pub(crate) fn set_share(&self, routers: u32) {
        let routers = routers.max(1);
        if self.share.swap(routers, Ordering::Relaxed) == routers {
            return;
        }
        let interval = (1e9 * f64::from(routers) / self.limit.rps).max(1.0) as u64;
        let burst = self.limit.burst.div_ceil(routers).max(1);
        self.interval.store(interval, Ordering::Relaxed);
        self.tolerance
            .store(interval.saturating_mul(u64::from(burst)), Ordering::Relaxed);
    }

    /// How many routers share the limit.
    pub(crate) fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    /// This router's rate, tokens per second.
    pub(crate) fn share_rps(&self) -> f64 {
        self.limit.rps / f64::from(self.share())
    }

    /// Takes a token at `now` (see [`nanos`]), or says when one will be there.
    #[inline]
    pub fn try_take(&self, now: u64) -> Result<(), RetryIn> {
        let interval = self.interval.load(Ordering::Relaxed);
        let tolerance = self.tolerance.load(Ordering::Relaxed);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + interval;
            if next - now > tolerance {
                return Err(RetryIn(Duration::from_nanos(next - now - tolerance)));
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
        let tolerance = self.tolerance.load(Ordering::Relaxed);
        let next =
            self.tat.load(Ordering::Relaxed).max(now) + self.interval.load(Ordering::Relaxed);
        if next - now > tolerance {
            Err(RetryIn(Duration::from_nanos(next - now - tolerance)))
        } else {
            Ok(())
        }
    }

    /// Whole tokens in the bucket at `now`.
    pub fn available(&self, now: u64) -> u64 {
        let used = self.tat.load(Ordering::Relaxed).saturating_sub(now);
        self.tolerance.load(Ordering::Relaxed).saturating_sub(used)
            / self.interval.load(Ordering::Relaxed)
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
    fn a_share_is_a_fraction_of_rate_and_burst() {
        let b = TokenBucket::new(RateLimit {
            rps: 100.0,
            burst: 10,
        });
        b.set_share(3);
        assert_eq!(b.share(), 3);
        let t0 = 100 * SEC;
        // ceil(10 / 3) = 4 tokens of burst, then 100/3 per second.
        assert_eq!(b.available(t0), 4);
        let mut admitted = 0;
        for ms in 0..10_000u64 {
            if b.try_take(t0 + ms * 1_000_000).is_ok() {
                admitted += 1;
            }
        }
        assert!((333..=338).contains(&admitted), "{admitted}");
        // Back to the whole limit when alone again; a share never drops below a token.
        b.set_share(1);
        assert_eq!(b.available(t0 + 20 * SEC), 10);
        b.set_share(50);
        assert_eq!(b.available(t0 + 40 * SEC), 1);
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
