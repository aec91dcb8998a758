//! The routing decision: which regions may serve a classified request
//! (service, health, residency, class), in what order (the policy), and which
//! of them the traffic dials let take it.

use std::sync::atomic::Ordering;

use smallvec::SmallVec;
use switchyard_config::{Policy, RequestClass};

use crate::classify::Classified;
use crate::error::Reject;
use crate::policy::{self, mix};
use crate::topology::{RegionIdx, Topology};

/// Regions to try, best first.
pub type Order = SmallVec<[RegionIdx; 8]>;

/// Why a region was kept or dropped for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    NoService,
    Unhealthy,
    Ejected,
    /// Its data residency differs from the client's zone.
    Residency,
    /// A write goes to its partition's owner only.
    NotOwner,
    /// Its replica lag exceeds the read's freshness bound.
    TooStale,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Keep => "keep",
            Verdict::NoService => "service not served",
            Verdict::Unhealthy => "unhealthy",
            Verdict::Ejected => "ejected",
            Verdict::Residency => "outside the client's residency zone",
            Verdict::NotOwner => "not the partition's owner",
            Verdict::TooStale => "replica lag over the freshness bound",
        }
    }
}

/// Whether region `idx` may serve `req`, and if not, the first rule that drops it.
pub fn verdict(topo: &Topology, req: &Classified<'_>, owner: Option<RegionIdx>, idx: RegionIdx) -> Verdict {
    let r = &topo.regions[idx as usize];
    if !r.serves_service(req.service_hash) {
        return Verdict::NoService;
    }
    if let Some(zone) = req.zone {
        if r.spec.data_residency.as_deref() != Some(zone) {
            return Verdict::Residency;
        }
    }
    if !r.live.is_healthy() {
        return Verdict::Unhealthy;
    }
    if r.live.is_ejected() {
        return Verdict::Ejected;
    }
    let is_owner = owner == Some(idx);
    match req.class {
        RequestClass::Write if !is_owner => Verdict::NotOwner,
        RequestClass::Read
            if !is_owner
                && r.live.lag_ms.load(Ordering::Relaxed) as u128 > req.freshness.as_millis() =>
        {
            Verdict::TooStale
        }
        _ => Verdict::Keep,
    }
}

/// Whether the region's dial lets this request in: a dial of d% admits the
/// d% of sticky keys whose hash falls below it.
#[inline]
pub fn dial_admits(topo: &Topology, req: &Classified<'_>, idx: RegionIdx) -> bool {
    let r = &topo.regions[idx as usize];
    let dial = r.live.dial() as u64;
    dial >= 100 || mix(req.sticky, !r.seed) % 100 < dial
}

/// Decides where `req` goes: the regions to try, best first.
pub fn decide(topo: &Topology, req: &Classified<'_>) -> Result<Order, Reject> {
    let owner = topo.owner_of(req.partition);
    let mut order: Order = (0..topo.regions.len() as RegionIdx)
        .filter(|i| verdict(topo, req, owner, *i) == Verdict::Keep)
        .collect();
    if order.is_empty() {
        return Err(nothing_eligible(topo, req, owner));
    }
    if req.class == RequestClass::Write {
        // The owner takes every write of its partition, whatever its dial.
        return Ok(order);
    }
    match topo.config.routing.policy {
        Policy::Weighted => policy::weighted::order(topo, req.sticky, &mut order),
        Policy::Geo => policy::geo::order(topo, &req.place, &mut order),
        Policy::Latency => policy::latency::order(topo, req.sticky, &mut order),
    }
    order.retain(|i| dial_admits(topo, req, *i));
    if order.is_empty() {
        return Err(Reject::unavailable(
            "no region may take this request: every eligible region is dialled down",
        ));
    }
    Ok(order)
}

fn nothing_eligible(topo: &Topology, req: &Classified<'_>, owner: Option<RegionIdx>) -> Reject {
    if req.class == RequestClass::Write {
        let name = owner.map_or("none", |o| topo.name(o));
        return Reject::unavailable(format!(
            "the owner of partition {} ({name}) cannot take writes now",
            req.partition.unwrap_or("default")
        ));
    }
    match req.zone {
        Some(zone) => Reject::unavailable(format!(
            "no healthy region in residency zone {zone} serves {}",
            req.service
        )),
        None => Reject::unavailable(format!("no healthy region serves {}", req.service)),
    }
}
