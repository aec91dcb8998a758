//! Latency: the lowest moving average of measured time wins. A region's score
//! blends its health-probe round trip with the response times of real
//! requests; when a region gets no traffic its response average goes stale and
//! the probe alone speaks for it, so a region that recovers is seen to recover.
//! The score is computed off the hot path, after each probe. Regions within
//! `tolerance` of the best count as tied and share the load by sticky hash.

use super::{mix, unit};
use crate::live::RegionLive;
use crate::topology::{RegionEntry, RegionIdx};

/// Responses older than this no longer count toward the score.
const STALE_AFTER_SECS: f64 = 5.0;

/// A region's latency score in seconds; `None` before any measurement.
pub fn score(live: &RegionLive) -> Option<f64> {
    let probe = live.probe_rtt.get();
    let response = live
        .response_time
        .get()
        .filter(|_| live.response_sample_age() < STALE_AFTER_SECS);
    match (probe, response) {
        (Some(p), Some(r)) => Some((p + r) / 2.0),
        (p, r) => p.or(r),
    }
}

/// The score a region is ranked by now; unmeasured regions rank last.
#[inline]
pub fn current(region: &RegionEntry) -> f64 {
    region.live.latency_score.get().unwrap_or(1e9)
}

/// Every region with its score, best first (ties in config order).
pub fn order(regions: &[RegionEntry]) -> Vec<(RegionIdx, f64)> {
    let mut out: Vec<(RegionIdx, f64)> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| (i as RegionIdx, current(r)))
        .collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    out
}

/// Where a region falls among those tied with the best: by sticky hash.
#[inline]
pub fn tie_key(region: &RegionEntry, sticky: u64) -> f64 {
    unit(mix(sticky, region.seed))
}
