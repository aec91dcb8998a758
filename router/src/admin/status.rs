//! `GET /admin/v1/status`: the status document, built in one place.

use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::admin::AdminState;
use crate::control::RouterState;

pub(super) async fn status(State(s): State<AdminState>) -> Json<Value> {
    Json(status_json(&s.router))
}

/// The latest promotions status shows, newest first (all are in `ownership.json`).
const PROMOTIONS_SHOWN: usize = 20;

/// `GET /admin/v1/series?since_ms=T`: the traffic samples taken after `T`
/// (all of the last five minutes without it), oldest first.
pub(super) async fn series(
    State(s): State<AdminState>,
    Query(q): Query<SeriesQuery>,
) -> Json<Value> {
    Json(json!({
        "interval_s": crate::control::series::INTERVAL.as_secs_f64(),
        "samples": s.router.series.since(q.since_ms.unwrap_or(0)),
    }))
}

#[derive(serde::Deserialize)]
pub(super) struct SeriesQuery {
    since_ms: Option<u64>,
}

/// The status document: regions, owners, ramps, and the fleet in fleet mode.
fn status_json(state: &RouterState) -> Value {
    let topo = state.topology.load_full();
    let now = crate::route::ratelimit::nanos(std::time::Instant::now());
    let ownership = state.ownership.snapshot();
    let mut regions = Map::new();
    for r in &topo.regions {
        let live = &r.live;
        let endpoints: Vec<Value> = r
            .endpoints
            .endpoints
            .iter()
            .map(|e| {
                json!({
                    "endpoint": e.spec.to_string(),
                    "addresses": e.addrs.load().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "usable": e.usable.load().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "healthy": e.is_up(),
                    "tls": e.spec.tls,
                    // Why it is down: the last probe's failure, as the transport said it.
                    "reason": (!e.is_up()).then(|| e.last_failure.load_full()).flatten().map(|r| r.to_string()),
                })
            })
            .collect();
        let drift = live.drift();
        regions.insert(
            r.spec.name.to_string(),
            json!({
                "type": r.spec.kind.as_str(),
                "zone": r.spec.data_residency,
                "healthy": live.is_healthy(),
                "dial": live.dial().to_json_number(),
                "lag_ms": live.lag_ms.load(Ordering::Relaxed),
                "lag_known": live
                    .lag_within(crate::control::promote::report_max_age(&r.spec), crate::route::live::now_nanos())
                    .is_some(),
                "applied_position": live.applied_position.load(Ordering::Relaxed),
                "role": live.role().as_str(),
                "ejected": live.is_ejected(),
                "ejection": live.ejection().map(|e| json!({
                    "reason": e.reason,
                    "for_s": e.duration.as_secs_f64(),
                    "left_s": (e.until.saturating_sub(crate::route::live::now_nanos()) as f64 / 1e9 * 10.0).round() / 10.0,
                })),
                "ejections": live.ejections.load(Ordering::Relaxed),
                "draining": live.is_draining(),
                "inflight": live.inflight.load(Ordering::Relaxed),
                "concurrency": concurrency_json(&r.spec, live),
                "websockets": live.websockets.load(Ordering::Relaxed),
                "rate": r.rate.as_ref().map(|b| json!({
                    "rps": b.limit.rps,
                    "burst": b.limit.burst,
                    "tokens": b.available(now),
                    "share": b.share(),
                    "fraction": (b.fraction() * 1e4).round() / 1e4,
                    "share_rps": (b.share_rps() * 1e3).round() / 1e3,
                })),
                "drift": !drift.is_empty(),
                "drift_reasons": drift,
                "probe_rtt_ms": live.probe_rtt.get().map(|s| (s * 1e5).round() / 100.0),
                "response_ms": live.response_time.get().map(|s| (s * 1e5).round() / 100.0),
                "services": r.spec.services,
                "protocol": r.spec.protocol.as_str(),
                "endpoints": endpoints,
            }),
        );
    }
    let mut doc = json!({
        "regions": regions,
        "owners": ownership.status_json(),
        "promotions": ownership.promotions.iter().rev().take(PROMOTIONS_SHOWN).collect::<Vec<_>>(),
        "ramps": crate::control::ramp::status(state, &topo),
        "policy": topo.config.routing.policy.as_str(),
        "inflight": state.inflight(),
        "writes_reading_body": state.writes_reading_body.load(Ordering::Relaxed),
        "idempotency_keys": state.idempotency.len(),
        "repair_on_read": state.repairs.status_json(topo.config.consistency.repair_on_read),
        "panic": topo.panic.iter().map(|p| (p.name.clone(), json!(p.on.load(Ordering::Relaxed)))).collect::<serde_json::Map<_, _>>(),
        "connections": state.connections.get().map(|c| json!({
            "open": c.open(),
            "max": c.max(),
            "refused": c.refused(),
        })),
        "config": topo.config.source.display().to_string(),
    });
    if let Some(p) = &state.presence {
        doc["fleet"] = p.status_json();
    }
    if let Some(log) = &state.oplog {
        doc["oplog"] = log.status_json(&topo.config.oplog);
    }
    doc
}

/// A region's concurrency limit: its kind, the limit now, and what it turned away.
fn concurrency_json(
    spec: &switchyard_config::Region,
    live: &crate::route::live::RegionLive,
) -> serde_json::Value {
    use switchyard_config::Concurrency;
    let kind = match spec.concurrency {
        Concurrency::Unlimited => return serde_json::Value::Null,
        Concurrency::Fixed(_) => "fixed",
        Concurrency::Adaptive(_) => "adaptive",
    };
    json!({
        "kind": kind,
        "limit": live.limit.load(Ordering::Relaxed),
        "queued_writes": live.queued.load(Ordering::Relaxed),
        "spilled": live.spilled.load(Ordering::Relaxed),
        "refused": live.limited.load(Ordering::Relaxed),
        "min_rtt_ms": (kind == "adaptive").then(|| live.adaptive_min_rtt_us.load(Ordering::Relaxed) as f64 / 1e3),
        "sample_ms": (kind == "adaptive").then(|| live.adaptive_sample_us.load(Ordering::Relaxed) as f64 / 1e3),
    })
}
