//! The routing decision: which regions may serve a classified request
//! (service, health, residency, class), in what order (the policy), and which
//! of them the traffic dials let take it.

use std::sync::atomic::Ordering;

use std::time::Duration;

use switchyard_config::{Fallback, Percent, Policy, RequestClass};

use crate::route::ryw::Mark;

use crate::route::classify::Classified;
use crate::route::policy::{self, mix};
use crate::route::reject::Reject;

use crate::route::topology::{RegionIdx, Topology};

pub(crate) use crate::route::policy::{Order, MAX_TRIES};

/// Why a region was kept or dropped for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    NoService,
    Unhealthy,
    /// An operator drained it.
    Drained,
    /// Brownout detection took it out (reads only: writes stay with their owner).
    Ejected,
    /// Its data residency differs from the client's zone.
    Residency,
    /// A write goes to its partition's owner only.
    NotOwner,
    /// Its replica lag exceeds the read's freshness bound (or is unknown).
    TooStale,
    /// It has not applied the reader's own last write (read-your-writes).
    BehindYourWrite,
}

impl Verdict {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Keep => "keep",
            Verdict::NoService => "service not served",
            Verdict::Unhealthy => "unhealthy",
            Verdict::Drained => "drained",
            Verdict::Ejected => "ejected",
            Verdict::Residency => "outside the client's residency zone",
            Verdict::NotOwner => "not the partition's owner",
            Verdict::TooStale => "replica lag over the freshness bound",
            Verdict::BehindYourWrite => "has not applied the reader's last write",
        }
    }
}

/// Whether region `idx` may serve `req`, and if not, the first rule that drops it.
pub(crate) fn verdict(
    topo: &Topology,
    req: &Classified<'_>,
    owner: Option<RegionIdx>,
    idx: RegionIdx,
) -> Verdict {
    let r = &topo.regions[idx as usize];
    if !r.serves_service(req.service_hash) {
        return Verdict::NoService;
    }
    if let Some(zone) = req.zone {
        if r.spec.data_residency.as_deref() != Some(zone) {
            return Verdict::Residency;
        }
    }
    // Panic mode: with too few of its regions healthy, a service's reads
    // ignore health and ejection rather than all fail.
    let panic = || req.class == RequestClass::Read && topo.in_panic(req.service_hash);
    if !r.live.is_healthy() && !panic() {
        return Verdict::Unhealthy;
    }
    if r.live.is_draining() {
        return Verdict::Drained;
    }
    if req.class == RequestClass::Read && r.live.is_ejected() && !panic() {
        return Verdict::Ejected;
    }
    let is_owner = owner == Some(idx);
    match req.class {
        RequestClass::Write if !is_owner => Verdict::NotOwner,
        RequestClass::Read if !is_owner => read_verdict(r, req),
        _ => Verdict::Keep,
    }
}

/// A replica's freshness for a read: its reported lag (unknown when the report
/// is older than the bound) and the reader's own last write.
fn read_verdict(r: &crate::route::topology::RegionEntry, req: &Classified<'_>) -> Verdict {
    let bound = req.freshness.bound;
    if bound != Duration::MAX {
        match r.live.lag_within(bound, req.mono_ns) {
            Some(lag) if u128::from(lag) <= bound.as_millis() => {}
            _ => return Verdict::TooStale,
        }
    }
    let behind = match req.ryw {
        None => false,
        Some(Mark::Position(p)) => r.live.applied_position.load(Ordering::Relaxed) < p,
        Some(Mark::Time(t)) => {
            req.now_ms
                .saturating_sub(r.live.lag_ms.load(Ordering::Relaxed))
                < t
        }
    };
    if behind {
        Verdict::BehindYourWrite
    } else {
        Verdict::Keep
    }
}

/// Whether the region's dial lets this request in: a dial of d% admits the
/// d% of sticky keys whose hash falls below it (per mille, for 0.1% steps).
/// Synthetic requests pass every dial.
#[inline]
pub(crate) fn dial_admits(topo: &Topology, req: &Classified<'_>, idx: RegionIdx) -> bool {
    if req.synthetic {
        return true;
    }
    let r = &topo.regions[idx as usize];
    let dial = u64::from(r.live.dial().tenths());
    dial >= 1000 || mix(req.sticky, !r.seed) % 1000 < dial
}

/// Decides where `req` goes: the regions to try, best first.
///
/// Each policy walks regions in its own order and stops once it has
/// `MAX_TRIES` admitted ones, so the rules run only on the regions it looks at.
pub fn decide(topo: &Topology, req: &Classified<'_>) -> Result<Order, Reject> {
    let owner = topo.owner_of(req.partition);
    if req.class == RequestClass::Write {
        // The owner takes every write of its partition, whatever its dial.
        return match owner {
            Some(o) if verdict(topo, req, owner, o) == Verdict::Keep => Ok(Order::from_slice(&[o])),
            _ => Err(nothing_eligible(topo, req, owner)),
        };
    }
    let admits =
        |i: RegionIdx| verdict(topo, req, owner, i) == Verdict::Keep && dial_admits(topo, req, i);
    let mut order = match topo.config.routing.policy {
        Policy::Weighted => policy::weighted::pick(topo, req.sticky, &admits),
        Policy::Geo => policy::geo::pick(topo, &req.place, &admits),
        Policy::Latency => policy::latency::pick(topo, req.sticky, &admits),
    };
    if req.synthetic {
        // Synthetic traffic is for the regions real traffic cannot reach yet.
        let dark = |i: &RegionIdx| topo.regions[*i as usize].live.dial() == Percent::ZERO;
        if !order.iter().any(dark) {
            if let Some(i) = (0..topo.regions.len() as RegionIdx)
                .find(|i| dark(i) && verdict(topo, req, owner, *i) == Verdict::Keep)
            {
                order.insert(0, i);
                order.truncate(MAX_TRIES);
            }
        } else {
            let (mut first, rest): (Order, Order) = order.iter().copied().partition(|i| dark(i));
            first.extend(rest);
            order = first;
        }
    }
    if order.is_empty() {
        let any_eligible = (0..topo.regions.len() as RegionIdx)
            .any(|i| verdict(topo, req, owner, i) == Verdict::Keep);
        return Err(if any_eligible {
            Reject::unavailable(
                "no region may take this request: every eligible region is dialled down",
            )
        } else {
            nothing_eligible(topo, req, owner)
        });
    }
    Ok(order)
}

/// A decision with what the read's freshness class asked for.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub order: Order,
    /// Serving a replica beyond the bound (`stale` fallback): its lag in ms.
    pub stale_ms: Option<u64>,
    /// `wait` fallback: the preferred replica, and how long to wait for it.
    pub wait_for: Option<(RegionIdx, Duration)>,
}

impl Decision {
    fn plain(order: Order) -> Self {
        Decision {
            order,
            ..Decision::default()
        }
    }
}

/// [`decide`], plus the freshness class's fallback when the region the
/// client would get if freshness did not matter is a replica too stale for
/// it: `owner` (the plain decision), `stale`, `wait` or `reject`.
pub fn decide_with_fallback(topo: &Topology, req: &Classified<'_>) -> Result<Decision, Reject> {
    let fresh = decide(topo, req);
    if req.class == RequestClass::Write || req.freshness.fallback == Fallback::Owner {
        return fresh.map(Decision::plain);
    }
    let mut relaxed = req.clone();
    relaxed.freshness.bound = Duration::MAX;
    relaxed.ryw = None;
    let Ok(preferred) = decide(topo, &relaxed) else {
        return fresh.map(Decision::plain);
    };
    let owner = topo.owner_of(req.partition);
    let first = preferred[0];
    let first_is_stale = Some(first) != owner
        && matches!(
            verdict(topo, req, owner, first),
            Verdict::TooStale | Verdict::BehindYourWrite
        );
    if !first_is_stale {
        return fresh.map(Decision::plain);
    }
    let bound = req.freshness.bound.as_millis();
    match req.freshness.fallback {
        Fallback::Owner => fresh.map(Decision::plain),
        Fallback::Reject => Err(class_rejects(bound)),
        Fallback::Stale => {
            let lag = |i: &RegionIdx| {
                topo.regions[*i as usize]
                    .live
                    .lag_ms
                    .load(Ordering::Relaxed)
            };
            let least = preferred
                .iter()
                .copied()
                .filter(|i| Some(*i) != owner)
                .min_by_key(lag)
                .unwrap_or(first);
            let mut order = Order::from_slice(&[least]);
            if let Ok(f) = fresh {
                order.extend(f.into_iter().filter(|i| *i != least));
                order.truncate(MAX_TRIES);
            }
            Ok(Decision {
                stale_ms: Some(lag(&least)),
                order,
                wait_for: None,
            })
        }
        Fallback::Wait => Ok(Decision {
            order: fresh.unwrap_or_default(),
            stale_ms: None,
            wait_for: Some((first, req.freshness.wait)),
        }),
    }
}

/// The answer to a read whose class rejects rather than read from the owner
/// when no replica is within its bound (`bound` in ms).
pub(crate) fn class_rejects(bound: u128) -> Reject {
    Reject::unavailable(format!(
        "no replica is within this read's freshness bound ({bound} ms), and its class rejects rather than read from the owner"
    ))
}

/// The answer when a read waited its whole `wait` and neither a fresh
/// replica nor the owner can serve it.
pub(crate) const WAIT_EXPIRED: &str = "no replica became fresh enough within the wait, and the partition's owner cannot serve the read";

/// Takes a rate-limit token from the first region in `order` that has one;
/// the regions before it (over their limit) are dropped from the order and
/// counted as spills. `429` with `Retry-After` when none has a token.
pub fn take_rate_tokens(topo: &Topology, order: &mut Order, now: u64) -> Result<(), Reject> {
    let pos = first_with_token(topo, order, now, true)?;
    order.drain(..pos);
    Ok(())
}

/// The position in `order` of the first region with a rate-limit token at
/// `now`, taking it when `take` (and counting the regions passed over), or
/// only looking when not (explain). `429` with `Retry-After` when none has one.
pub(crate) fn first_with_token(
    topo: &Topology,
    order: &[RegionIdx],
    now: u64,
    take: bool,
) -> Result<usize, Reject> {
    let mut soonest: Option<crate::route::ratelimit::RetryIn> = None;
    for (pos, &idx) in order.iter().enumerate() {
        let r = &topo.regions[idx as usize];
        let Some(bucket) = &r.rate else {
            return Ok(pos);
        };
        let got = if take {
            bucket.try_take(now)
        } else {
            bucket.peek(now)
        };
        match got {
            Ok(()) => return Ok(pos),
            Err(wait) => {
                if take {
                    crate::metrics::rate_limited(&r.spec.name, pos + 1 < order.len());
                }
                soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
            }
        }
    }
    let wait = soonest.map_or(1, |w| w.secs().min(u64::from(u32::MAX)) as u32);
    Err(Reject::too_many("every eligible region is over its rate limit").retry_in(wait))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::classify::classify;
    use crate::route::topology::Secrets;
    use http::{HeaderMap, HeaderValue, Method};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn topo(regions: usize, routing: &str) -> Topology {
        let mut text = String::from("listen: { http: 127.0.0.1:1 }\nregions:\n");
        for i in 0..regions {
            text.push_str(&format!(
                "  r{i}: {{ type: full, endpoints: [\"127.0.0.1:{}\"], services: [api] }}\n",
                1000 + i
            ));
        }
        text.push_str(routing);
        let cfg =
            switchyard_config::parse_str(&text, std::path::Path::new("t.yaml")).expect("valid");
        let t =
            Topology::build(Arc::new(cfg), None, &Secrets::fixed(b"test key")).expect("topology");
        // As if each had just reported no lag.
        t.assume_probed(|_| 0.010);
        t
    }

    fn pick_counts(t: &Topology, n: usize) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        let ip = "127.0.0.1".parse().expect("ip");
        for k in 0..n {
            let mut h = HeaderMap::new();
            h.insert(
                "x-partition",
                HeaderValue::from_str(&format!("key-{k}")).expect("value"),
            );
            let req = classify(t, &Method::GET, "/", &h, ip, 0).expect("classified");
            let order = decide(t, &req).expect("decided");
            *counts.entry(t.name(order[0]).to_string()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn weighted_shares_follow_weights() {
        let t = topo(
            3,
            "routing: { policy: weighted, weights: { r0: 60, r1: 30, r2: 10 } }\n",
        );
        let c = pick_counts(&t, 20_000);
        for (name, want) in [("r0", 0.6), ("r1", 0.3), ("r2", 0.1)] {
            let got = c.get(name).copied().unwrap_or(0) as f64 / 20_000.0;
            assert!((got - want).abs() < 0.02, "{name}: {got} vs {want}");
        }
    }

    #[test]
    fn weighted_falls_back_past_the_slot_list_when_its_regions_are_down() {
        let t = topo(8, "routing: { policy: weighted }\n");
        for r in &t.regions[..7] {
            r.live
                .healthy
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        let c = pick_counts(&t, 500);
        assert_eq!(c.get("r7"), Some(&500), "{c:?}");
    }

    /// Each key's first pick, key by key.
    fn picks(t: &Topology, n: usize) -> Vec<String> {
        let ip = "127.0.0.1".parse().expect("ip");
        (0..n)
            .map(|k| {
                let mut h = HeaderMap::new();
                h.insert(
                    "x-partition",
                    HeaderValue::from_str(&format!("key-{k}")).expect("value"),
                );
                let req = classify(t, &Method::GET, "/", &h, ip, 0).expect("classified");
                t.name(decide(t, &req).expect("decided")[0]).to_string()
            })
            .collect()
    }

    #[test]
    fn an_unhealthy_regions_keys_move_and_no_others_do() {
        let t = topo(4, "routing: { policy: weighted }\n");
        let before = picks(&t, 2000);
        assert_eq!(picks(&t, 2000), before, "the same keys, the same picks");
        t.regions[1]
            .live
            .healthy
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let after = picks(&t, 2000);
        let mut moved = 0;
        for (k, (was, now)) in before.iter().zip(&after).enumerate() {
            assert_ne!(now, "r1", "key-{k} still goes to the unhealthy region");
            if was == "r1" {
                moved += 1;
            } else {
                assert_eq!(was, now, "key-{k} moved though its region stayed healthy");
            }
        }
        assert!(moved > 300, "r1 had its share of keys: {moved}");
    }

    #[test]
    fn latency_prefers_the_fastest_and_spreads_over_ties() {
        let t = topo(3, "routing: { policy: latency }\n");
        for (r, s) in t.regions.iter().zip([0.050, 0.010, 0.011]) {
            r.live.latency_score.set(s);
        }
        t.refresh_latency_order();
        let c = pick_counts(&t, 2000);
        assert_eq!(c.get("r0"), None, "{c:?}");
        assert!(
            c["r1"] > 700 && c["r2"] > 700,
            "tied within tolerance: {c:?}"
        );
    }

    #[test]
    fn writes_go_to_the_owner_only() {
        let t = topo(
            3,
            "routing: { policy: weighted }\nconsistency: { owners: { default: r2 } }\n",
        );
        let ip = "127.0.0.1".parse().expect("ip");
        let h = HeaderMap::new();
        let req = classify(&t, &Method::PUT, "/", &h, ip, 0).expect("classified");
        assert_eq!(decide(&t, &req).expect("decided").as_slice(), &[2]);
        t.regions[2]
            .live
            .healthy
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let err = decide(&t, &req).expect_err("owner down");
        assert_eq!(err.status, 503);
        assert!(
            err.reason.contains("owner of partition default (r2)"),
            "{}",
            err.reason
        );
    }
}
