//! Per-region answer statistics that ramps and outlier detection judge:
//! answers, errors, a latency sum and a latency histogram, all cumulative
//! atomics. A judge takes a [`StatsSnapshot`] now and subtracts one taken at
//! the start of its window.
//!
//! The histogram is written here rather than taken from `hdrhistogram`:
//! every pingora worker records into the same region's histogram on the hot
//! path, so it must be lock-free (`hdrhistogram` needs `&mut` or a lock per
//! record), and 8 buckets per power of two (≤ 9% error) is all a p99
//! comparison between regions needs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Octaves of microseconds covered: 1 µs up to ~2^36 µs (19 hours).
const OCTAVES: usize = 37;
const BUCKETS: usize = OCTAVES * SUB;

/// Bucket index of a latency in microseconds.
#[inline]
fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros();
    let sub = (us >> (octave - SUB_BITS)) as usize & (SUB - 1);
    (((octave - SUB_BITS + 1) as usize) * SUB + sub).min(BUCKETS - 1)
}

/// The upper bound of a bucket, in microseconds.
fn bucket_upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64 + 1;
    }
    let octave = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = (i % SUB) as u64;
    ((SUB as u64 + sub + 1) << (octave - SUB_BITS)).max(1)
}

/// Cumulative answers of one region.
pub(crate) struct RegionStats {
    answers: AtomicU64,
    errors: AtomicU64,
    latency_us_sum: AtomicU64,
    latency: Box<[AtomicU64]>,
    /// Failures since the last success: outlier detection's fastest signal.
    pub(crate) consecutive_failures: AtomicU64,
}

impl Default for RegionStats {
    fn default() -> Self {
        RegionStats {
            answers: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_us_sum: AtomicU64::new(0),
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            consecutive_failures: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for RegionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionStats")
            .field("answers", &self.answers.load(Ordering::Relaxed))
            .field("errors", &self.errors.load(Ordering::Relaxed))
            .finish()
    }
}

impl RegionStats {
    /// One answer (a response header) after `secs`; `ok` unless it was a 5xx.
    #[inline]
    pub(crate) fn answer(&self, ok: bool, secs: f64) {
        let us = (secs * 1e6) as u64;
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.latency_us_sum.fetch_add(us, Ordering::Relaxed);
        self.latency[bucket(us)].fetch_add(1, Ordering::Relaxed);
        if ok {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An attempt that got no answer (refused, reset, timed out).
    pub(crate) fn no_answer(&self) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            answers: self.answers.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency_us_sum: self.latency_us_sum.load(Ordering::Relaxed),
            latency: self
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// Requests a region served by class (read, write); cumulative.
#[derive(Debug, Default)]
pub(crate) struct ClassCounts {
    requests: [AtomicU64; 2],
}

impl ClassCounts {
    #[inline]
    pub(crate) fn record(&self, class: usize) {
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of each class, reads first.
    pub(crate) fn totals(&self) -> [u64; 2] {
        [0, 1].map(|c| self.requests[c].load(Ordering::Relaxed))
    }
}

/// A copy of [`RegionStats`] at one moment, or the difference of two.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StatsSnapshot {
    pub(crate) answers: u64,
    pub(crate) errors: u64,
    pub(crate) latency_us_sum: u64,
    latency: Vec<u64>,
}

impl StatsSnapshot {
    /// What happened between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            answers: self.answers.saturating_sub(earlier.answers),
            errors: self.errors.saturating_sub(earlier.errors),
            latency_us_sum: self.latency_us_sum.saturating_sub(earlier.latency_us_sum),
            latency: self
                .latency
                .iter()
                .enumerate()
                .map(|(i, v)| v.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// Adds another region's figures (to judge "the others" as one).
    pub(crate) fn add(&mut self, other: &StatsSnapshot) {
        self.answers += other.answers;
        self.errors += other.errors;
        self.latency_us_sum += other.latency_us_sum;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    pub(crate) fn error_rate(&self) -> Option<f64> {
        (self.answers > 0).then(|| self.errors as f64 / self.answers as f64)
    }

    /// Mean latency of the answers that carried one, in seconds.
    pub(crate) fn mean_secs(&self) -> Option<f64> {
        let n: u64 = self.latency.iter().sum();
        (n > 0).then(|| self.latency_us_sum as f64 / n as f64 / 1e6)
    }

    /// The latency below which `q` of answers fell, in seconds (bucket upper bound).
    pub(crate) fn quantile_secs(&self, q: f64) -> Option<f64> {
        let n: u64 = self.latency.iter().sum();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.latency.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_upper(i) as f64 / 1e6);
            }
        }
        None
    }

    /// Answers that carried a latency.
    pub(crate) fn timed(&self) -> u64 {
        self.latency.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for us in [
            0u64, 1, 7, 8, 9, 15, 16, 100, 1000, 12_345, 1_000_000, 60_000_000,
        ] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            assert!(bucket_upper(b) > us, "{us} → {b} → {}", bucket_upper(b));
            assert!(
                bucket_upper(b) as f64 <= (us as f64 * 1.13).max(us as f64 + 1.0),
                "{us}: {}",
                bucket_upper(b)
            );
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_and_rates_over_a_window() {
        let s = RegionStats::default();
        for _ in 0..98 {
            s.answer(true, 0.010);
        }
        let start = s.snapshot();
        for _ in 0..99 {
            s.answer(true, 0.010);
        }
        s.answer(false, 0.500);
        let w = s.snapshot().since(&start);
        assert_eq!(w.answers, 100);
        assert_eq!(w.error_rate(), Some(0.01));
        let p50 = w.quantile_secs(0.5).expect("p50");
        assert!((0.010..0.0115).contains(&p50), "{p50}");
        let p100 = w.quantile_secs(1.0).expect("max");
        assert!((0.5..0.57).contains(&p100), "{p100}");
        assert_eq!(s.consecutive_failures.load(Ordering::Relaxed), 1);
        s.answer(true, 0.01);
        assert_eq!(s.consecutive_failures.load(Ordering::Relaxed), 0);
    }
}
