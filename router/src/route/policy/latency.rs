//! Latency: the lowest moving average of measured time wins. A region's score
//! blends its health-probe round trip with the response times of real
//! requests; when a region gets no traffic its response average goes stale and
//! the probe alone speaks for it, so a region that recovers is seen to recover.
//! The score is computed off the hot path, after each probe. Regions within
//! `tolerance` of the best count as tied: the one with fewer requests in
//! flight goes first, equally loaded ones share by sticky hash.

use smallvec::SmallVec;

use super::{best_first, mix, unit, Order, MAX_TRIES};
use crate::route::live::RegionLive;
use crate::route::topology::{RegionEntry, RegionIdx, Topology};

/// Responses older than this no longer count toward the score.
const STALE_AFTER_SECS: f64 = 5.0;

/// A region's latency score in seconds; `None` before any measurement.
pub(crate) fn score(live: &RegionLive) -> Option<f64> {
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
pub(crate) fn current(region: &RegionEntry) -> f64 {
    region.live.latency_score.get().unwrap_or(1e9)
}

/// Every region with its score, best first (ties in config order).
pub(crate) fn order(regions: &[RegionEntry]) -> Vec<(RegionIdx, f64)> {
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
pub(crate) fn tie_key(region: &RegionEntry, sticky: u64) -> f64 {
    unit(mix(sticky, region.seed))
}

/// Walks regions by score; those within the tolerance of the best admitted
/// one share the load by sticky hash, the rest follow by score.
pub(crate) fn pick(topo: &Topology, sticky: u64, admits: &dyn Fn(RegionIdx) -> bool) -> Order {
    let tolerance = topo.config.routing.latency.tolerance;
    let scores = topo.latency_order.load();
    let mut tied: SmallVec<[(f64, RegionIdx); 64]> = SmallVec::new();
    let mut rest = Order::new();
    let mut best = None;
    for &(i, score) in scores.iter() {
        if !admits(i) {
            continue;
        }
        let b = *best.get_or_insert(score);
        if score <= b * tolerance {
            // Among the tied, fewer requests in flight first; the sticky
            // hash (in (0, 1)) orders the equally loaded.
            let r = &topo.regions[i as usize];
            let load = r.live.inflight.load(std::sync::atomic::Ordering::Relaxed) as f64;
            tied.push((load + tie_key(r, sticky), i));
        } else {
            rest.push(i);
            if rest.len() >= MAX_TRIES {
                break;
            }
        }
    }
    let mut order = best_first(&mut tied);
    order.extend(rest.into_iter().take(MAX_TRIES - order.len()));
    order
}
