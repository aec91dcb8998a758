//! Geo preference: the client's country list if configured, else its
//! continent's, else `default`; regions not on the list follow in config order.

use super::{Order, MAX_TRIES};
use crate::route::geo::Place;
use crate::route::topology::{RegionIdx, Topology};

/// Every region in preference order: the list, then the rest in config
/// order. Built once per topology.
pub(crate) fn full_order(list: &[RegionIdx], regions: usize) -> Vec<RegionIdx> {
    let mut out = Vec::with_capacity(regions);
    for i in list.iter().copied().chain(0..regions as RegionIdx) {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The order that applies to a place (most specific key first).
pub(crate) fn order_for<'t>(topo: &'t Topology, place: &Place) -> &'t [RegionIdx] {
    let by_country = place.country.and_then(|c| topo.geo_orders.get(c.as_str()));
    let by_continent = place
        .continent
        .and_then(|c| topo.geo_orders.get(c.as_str()));
    by_country
        .or(by_continent)
        .or_else(|| topo.geo_orders.get("default"))
        .map_or(&topo.config_order, Vec::as_slice)
}

/// The first `MAX_TRIES` regions `admits` lets in, in the place's order.
pub(crate) fn pick(topo: &Topology, place: &Place, admits: &dyn Fn(RegionIdx) -> bool) -> Order {
    let mut order = Order::new();
    for &i in order_for(topo, place) {
        if admits(i) {
            order.push(i);
            if order.len() == MAX_TRIES {
                break;
            }
        }
    }
    order
}
