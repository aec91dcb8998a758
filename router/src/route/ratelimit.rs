//! Per-region token buckets, enforced before forwarding.
//!
//! A GCRA bucket in one `AtomicU64` (the theoretical arrival time): `governor`
//! implements the same algorithm, but it cannot look at a bucket without
//! taking from it, which `explain` needs, nor say how full it is for the
//! status page; the whole algorithm is the compare-and-swap loop below.
//!
//! In fleet mode a region's limit is the fleet's budget: each router takes
//! a fraction of the rate and of the burst (at least one token): `1/N` for
//! `N` live members, then, each second, in proportion to the routers'
//! recent demand for the region (`control::fleet_demand`), so that an edge with all
//! the traffic is not held to a sliver.

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
    /// This router's fraction of the limit, parts per million: `1/N` until
    /// the fleet's demand says otherwise.
    fraction_ppm: AtomicU32,
    /// Requests that wanted a token (taken or not): this router's demand.
    demand: AtomicU64,
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
            fraction_ppm: AtomicU32::new(0),
            demand: AtomicU64::new(0),
            tat: AtomicU64::new(0),
        };
        b.set_share(1);
        b
    }

    /// Enforces `1/routers` of the limit from now on, when the number of
    /// routers changed (the fleet's demand then moves the fraction).
    pub(crate) fn set_share(&self, routers: u32) {
        let routers = routers.max(1);
        if self.share.swap(routers, Ordering::Relaxed) == routers {
            return;
        }
        self.set_fraction(1.0 / f64::from(routers));
    }

    /// Enforces `fraction` (0 to 1) of the limit's rate and burst (at least
    /// one token) from now on.
    pub(crate) fn set_fraction(&self, fraction: f64) {
        let fraction = fraction.clamp(1e-6, 1.0);
        let ppm = (fraction * 1e6).round() as u32;
        if self.fraction_ppm.swap(ppm, Ordering::Relaxed) == ppm {
            return;
        }
        let fraction = f64::from(ppm) / 1e6;
        let interval = (1e9 / (self.limit.rps * fraction)).max(1.0) as u64;
        let burst = ((f64::from(self.limit.burst) * fraction).ceil() as u64).max(1);
        self.interval.store(interval, Ordering::Relaxed);
        self.tolerance
            .store(interval.saturating_mul(burst), Ordering::Relaxed);
    }

    /// How many routers share the limit.
    pub(crate) fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    /// This router's fraction of the limit.
    pub(crate) fn fraction(&self) -> f64 {
        f64::from(self.fraction_ppm.load(Ordering::Relaxed)) / 1e6
    }

    /// This router's rate, tokens per second.
    pub(crate) fn share_rps(&self) -> f64 {
        self.limit.rps * self.fraction()
    }

    /// Requests that have wanted a token so far (taken or refused).
    pub(crate) fn demand(&self) -> u64 {
        self.demand.load(Ordering::Relaxed)
    }

    /// Takes a token at `now` (see [`nanos`]), or says when one will be there.
    #[inline]
    pub fn try_take(&self, now: u64) -> Result<(), RetryIn> {
        self.demand.fetch_add(1, Ordering::Relaxed);
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

/// Per-client rate limits in fixed memory: two rows of GCRA cells, each
/// client hashed to one cell per row with independent seeds. A request is
/// admitted while either of its cells has a token, and then charges both.
///
/// Written here rather than taken from `governor`'s keyed limiter, whose
/// table grows with every key it sees (a flood of spoofed or rotating keys
/// would grow it without bound). Here memory is `2 × CELLS × 8` bytes
/// whatever the clients do. A client sharing one cell with a heavy hitter
/// still has its other cell (the chance that both are shared is about
/// `(active clients / CELLS)^2`); the heavy hitter drains both of its own.
pub(crate) struct ClientLimiter {
    /// Nanoseconds per token.
    interval: u64,
    /// How far ahead of now a cell's arrival time may run: the burst.
    tolerance: u64,
    rows: [Box<[AtomicU64]>; 2],
}

/// Cells per row.
const CELLS: usize = 1 << 16;
const ROW_SEEDS: [u64; 2] = [0x9E37_79B9_7F4A_7C15, 0xD6E8_FEB8_6659_FD93];

impl ClientLimiter {
    pub(crate) fn new(rps: f64, burst: u32) -> Self {
        let interval = (1e9 / rps).max(1.0) as u64;
        let row = || (0..CELLS).map(|_| AtomicU64::new(0)).collect();
        ClientLimiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1))),
            rows: [row(), row()],
        }
    }

    fn cell(&self, row: usize, key: u64) -> &AtomicU64 {
        let h = crate::route::policy::mix(key, ROW_SEEDS[row]);
        &self.rows[row][(h as usize) & (CELLS - 1)]
    }

    /// Admits a request of the client whose key hashes to `key` at `now`
    /// (see [`nanos`]), or says when it may come back.
    pub(crate) fn try_take(&self, key: u64, now: u64) -> Result<(), RetryIn> {
        let cells = [self.cell(0, key), self.cell(1, key)];
        let waits = cells.map(|c| {
            let next = c.load(Ordering::Relaxed).max(now) + self.interval;
            next.saturating_sub(now).saturating_sub(self.tolerance)
        });
        if waits.iter().all(|w| *w > 0) {
            let soonest = waits.iter().copied().min().unwrap_or(0);
            return Err(RetryIn(Duration::from_nanos(soonest)));
        }
        for c in cells {
            // Charge each cell, but never run it further ahead than the
            // burst: a full cell stays full instead of piling up debt.
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some((tat.max(now) + self.interval).min(now + self.tolerance))
            });
        }
        Ok(())
    }
}

/// A per-client limit as configured: the limiter and what keys it.
pub(crate) struct PerClientLimit {
    pub(crate) spec: switchyard_config::PerClient,
    pub(crate) limiter: ClientLimiter,
    /// With `key: header:NAME`, NAME parsed once (the config checked it).
    key_header: Option<http::HeaderName>,
}

impl PerClientLimit {
    pub(crate) fn new(spec: &switchyard_config::PerClient) -> Self {
        let key_header = match &spec.key {
            switchyard_config::ClientKey::Ip => None,
            switchyard_config::ClientKey::Header(name) => {
                http::HeaderName::from_bytes(name.as_bytes()).ok()
            }
        };
        PerClientLimit {
            limiter: ClientLimiter::new(spec.rps, spec.burst),
            spec: spec.clone(),
            key_header,
        }
    }

    /// Admits a request from `client` (after the trust boundary) at `now`;
    /// `429` with `Retry-After` when the client is over its limit. With
    /// `key: header:NAME`, a request without the header is keyed by address.
    pub(crate) fn admit(
        &self,
        headers: &crate::route::fields::Fields,
        client: std::net::IpAddr,
        now: u64,
    ) -> Result<(), crate::route::reject::Reject> {
        use xxhash_rust::xxh3::xxh3_64;
        let by_ip = || match client {
            std::net::IpAddr::V4(v4) => xxh3_64(&v4.octets()),
            std::net::IpAddr::V6(v6) => xxh3_64(&v6.octets()),
        };
        let key = match &self.key_header {
            None => by_ip(),
            Some(name) => headers
                .get_named(name)
                .map_or_else(by_ip, |v| xxh3_64(v.as_bytes()) ^ 0x5EED),
        };
        self.limiter.try_take(key, now).map_err(|wait| {
            crate::metrics::client_limited();
            crate::route::reject::Reject::too_many(
                "this client is over its rate limit (limits.per_client)",
            )
            .retry_in(wait.secs().min(u64::from(u32::MAX)) as u32)
        })
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn one_client_gets_its_burst_then_its_rate() {
        let l = ClientLimiter::new(10.0, 5);
        let t0 = 100 * SEC;
        for _ in 0..5 {
            assert_eq!(l.try_take(42, t0), Ok(()));
        }
        let wait = l.try_take(42, t0).expect_err("burst spent");
        assert!(wait.0 <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(l.try_take(42, t0 + SEC / 10), Ok(()));
        // Sustained: 1000 requests/s offered for 10 s admit about 10/s.
        let admitted = (0..10_000u64)
            .filter(|ms| l.try_take(42, t0 + SEC + ms * 1_000_000).is_ok())
            .count();
        assert!((100..=106).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_heavy_hitter_does_not_starve_others() {
        let l = ClientLimiter::new(10.0, 10);
        let t0 = 100 * SEC;
        for _ in 0..1000 {
            let _ = l.try_take(1, t0);
        }
        assert!(l.try_take(1, t0).is_err());
        let others = (2..2002u64).filter(|k| l.try_take(*k, t0).is_ok()).count();
        assert!(others >= 1995, "{others} of 2000 other clients admitted");
    }

    #[test]
    fn memory_is_fixed() {
        let l = ClientLimiter::new(1.0, 1);
        for k in 0..200_000u64 {
            let _ = l.try_take(k, SEC);
        }
        assert_eq!(l.rows[0].len() + l.rows[1].len(), 2 * CELLS);
    }
}
