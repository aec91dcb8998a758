//! Latency: the lowest moving average of measured time wins. A region's score
//! blends its health-probe round trip with the response times of real
//! requests; when a region gets no traffic its response average goes stale and
//! the probe alone speaks for it, so a region that recovers is seen to recover.
//! Regions within `tolerance` of the best count as tied and share the load by
//! the sticky hash.

use super::mix;
use crate::live::RegionLive;
use crate::topology::{RegionIdx, Topology};

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

/// Orders `candidates` in place, fastest first.
pub fn order(topo: &Topology, sticky: u64, candidates: &mut [RegionIdx]) {
    let tolerance = topo.config.routing.latency.tolerance;
    let mut scored: smallvec::SmallVec<[(RegionIdx, f64); 8]> = candidates
        .iter()
        .map(|i| {
            let s = score(&topo.regions[*i as usize].live).unwrap_or(f64::MAX / 4.0);
            (*i, s)
        })
        .collect();
    let best = scored.iter().map(|(_, s)| *s).fold(f64::MAX, f64::min);
    let band = best * tolerance;
    scored.sort_by(|(ia, sa), (ib, sb)| {
        let tied_a = *sa <= band;
        let tied_b = *sb <= band;
        match (tied_a, tied_b) {
            (true, true) => {
                let ha = mix(sticky, topo.regions[*ia as usize].seed);
                let hb = mix(sticky, topo.regions[*ib as usize].seed);
                ha.cmp(&hb)
            }
            _ => sa.total_cmp(sb),
        }
    });
    for (slot, (idx, _)) in candidates.iter_mut().zip(scored) {
        *slot = idx;
    }
}
