//! Geo preference: the client's country list if configured, else its
//! continent's, else `default`; regions not on the list follow in config order.

use crate::geo::Place;
use crate::topology::{RegionIdx, Topology};

/// The preference list that applies to a place (most specific first).
pub fn preference<'t>(topo: &'t Topology, place: &Place) -> Option<&'t [RegionIdx]> {
    let by_country = place.country.and_then(|c| topo.prefer.get(c.as_str()));
    let by_continent = place.continent.and_then(|c| topo.prefer.get(c.as_str()));
    by_country
        .or(by_continent)
        .or_else(|| topo.prefer.get("default"))
        .map(Vec::as_slice)
}

/// Orders `candidates` in place by their rank in the preference list.
pub fn order(topo: &Topology, place: &Place, candidates: &mut [RegionIdx]) {
    let list = preference(topo, place).unwrap_or(&[]);
    candidates.sort_by_key(|idx| {
        let rank = list.iter().position(|r| r == idx).unwrap_or(usize::MAX);
        (rank, *idx)
    });
}
