//! Weighted, sticky: weighted rendezvous hashing. Each region scores
//! `-ln(u) / weight` with `u` from the request's sticky hash and the region's
//! seed; the lowest score wins. A region wins with probability proportional to
//! its weight, the same key lands in the same region while weights are
//! unchanged, and changing one weight moves only the keys it must.

use super::{mix, unit};
use crate::topology::{RegionIdx, Topology};

/// Orders `candidates` in place, best first. Weight-0 regions go last.
pub fn order(topo: &Topology, sticky: u64, candidates: &mut [RegionIdx]) {
    candidates.sort_by(|a, b| {
        let sa = score(topo, sticky, *a);
        let sb = score(topo, sticky, *b);
        sa.total_cmp(&sb)
    });
}

fn score(topo: &Topology, sticky: u64, idx: RegionIdx) -> f64 {
    let r = &topo.regions[idx as usize];
    let u = unit(mix(sticky, r.seed));
    if r.weight > 0.0 {
        -u.ln() / r.weight
    } else {
        // After every weighted region, still in a sticky order.
        f64::MAX / 2.0 + u
    }
}
