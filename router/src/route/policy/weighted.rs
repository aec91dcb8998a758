//! Weighted, sticky: weighted rendezvous hashing. Each region scores
//! `-ln(u) / weight` with `u` from the request's sticky hash and the region's
//! seed; the lowest score wins. A region wins with probability proportional to
//! its weight, the same key lands in the same region while weights are
//! unchanged, and changing one weight moves only the keys it must.

//!
//! The hot path does not score every region: the hash space is cut into
//! `SLOTS` slots, and each slot's rendezvous order (its best `PER_SLOT`
//! regions) is computed once per topology. A request takes its slot's list
//! and walks it; only when the list runs dry (most of it unhealthy or dialled
//! down) does it score every region itself.

use smallvec::SmallVec;

use super::{best_first, fast_ln, mix, unit, Order};
use crate::route::topology::{RegionEntry, RegionIdx, Topology};

/// Hash slots; with 16384 a region's share is within about ±0.5% of its weight.
pub(crate) const SLOTS: usize = 16384;
/// Regions kept per slot, best first.
pub(crate) const PER_SLOT: usize = 4;
/// Marks an empty place in a slot's list (fewer regions than `PER_SLOT`).
pub(crate) const NONE: RegionIdx = RegionIdx::MAX;
const SLOT_SEED: u64 = 0x5157_1C4E_D00D_F00D;

/// The slot a request's sticky hash falls in.
#[inline]
pub(crate) fn slot(sticky: u64) -> usize {
    (sticky >> 20) as usize % SLOTS
}

/// Every slot's best `PER_SLOT` regions, in rendezvous order.
pub(crate) fn slots(regions: &[RegionEntry]) -> Vec<[RegionIdx; PER_SLOT]> {
    let mut keyed: Vec<(f64, RegionIdx)> = Vec::with_capacity(regions.len());
    (0..SLOTS)
        .map(|s| {
            let sticky = mix(s as u64, SLOT_SEED);
            keyed.clear();
            keyed.extend(
                regions
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (key(r, sticky), i as RegionIdx)),
            );
            let keep = keyed.len().min(PER_SLOT);
            if keyed.len() > keep {
                keyed.select_nth_unstable_by(keep - 1, |a, b| a.0.total_cmp(&b.0));
            }
            keyed[..keep].sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let mut out = [NONE; PER_SLOT];
            for (o, (_, i)) in out.iter_mut().zip(&keyed[..keep]) {
                *o = *i;
            }
            out
        })
        .collect()
}

/// The rank key of `region` for a request's sticky hash (lower is better).
/// Weight-0 regions rank after every weighted one, still in sticky order.
#[inline]
pub(crate) fn key(region: &RegionEntry, sticky: u64) -> f64 {
    let u = unit(mix(sticky, region.seed));
    if region.weight > 0.0 {
        -fast_ln(u) * region.inv_weight
    } else {
        1e300 * (1.0 + u)
    }
}

/// The regions `admits` lets in, in this request's rendezvous order: its
/// slot's list, or, when fewer than two of those are admitted and there are
/// regions beyond the list, every admitted region scored.
pub(crate) fn pick(topo: &Topology, sticky: u64, admits: &dyn Fn(RegionIdx) -> bool) -> Order {
    let listed = &topo.weighted_slots[slot(sticky)];
    let mut order: Order = listed
        .iter()
        .copied()
        .filter(|i| *i != NONE && admits(*i))
        .collect();
    if order.len() < 2 && topo.regions.len() > listed.len() {
        order = by_scoring_all(topo, sticky, admits);
    }
    fewer_outstanding_first(topo, &mut order);
    order
}

/// Least outstanding between equals: when the first two regions weigh the
/// same, the one with fewer requests in flight goes first (two random
/// choices, the pair being the request's sticky pick and runner-up).
fn fewer_outstanding_first(topo: &Topology, order: &mut Order) {
    let [a, b, ..] = order[..] else {
        return;
    };
    let (ra, rb) = (&topo.regions[a as usize], &topo.regions[b as usize]);
    let load = |r: &RegionEntry| r.live.inflight.load(std::sync::atomic::Ordering::Relaxed);
    if ra.weight == rb.weight && load(rb) < load(ra) {
        order.swap(0, 1);
    }
}

/// The slow path: score every admitted region and keep the best.
fn by_scoring_all(topo: &Topology, sticky: u64, admits: &dyn Fn(RegionIdx) -> bool) -> Order {
    let mut ranked: SmallVec<[(f64, RegionIdx); 64]> = (0..topo.regions.len() as RegionIdx)
        .filter(|i| admits(*i))
        .map(|i| (key(&topo.regions[i as usize], sticky), i))
        .collect();
    best_first(&mut ranked)
}
