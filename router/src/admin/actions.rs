//! The admin API's actions: reload, dials, drains, ramps, explain and
//! promotion. Each refusal goes through [`AdminError`], the one place that
//! maps it to a status.

use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use switchyard_config::Percent;

use crate::admin::error::AdminError;
use crate::admin::AdminState;
use crate::control::error::ControlError;
use crate::control::ramp::RampAction;
use crate::control::safety::Change;
use crate::route::topology::{RegionIdx, Topology};
use crate::store::traffic::DialOverride;

/// An action's answer.
type Answer = Result<Json<Value>, AdminError>;

pub(super) async fn reload(State(s): State<AdminState>) -> Answer {
    match s.reloader.reload().await {
        Ok(()) => Ok(Json(json!({"reloaded": true}))),
        Err(e) => Err(AdminError::bad_request(format!("reload failed: {e}"))),
    }
}

/// Reads a JSON body into `T`; a body that does not fit is a 400 with serde's reason.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], example: &str) -> Result<T, AdminError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AdminError::bad_request(format!("bad request body: {e}; expected {example}")))
}

fn region_index(topo: &Topology, name: &str) -> Result<RegionIdx, AdminError> {
    topo.index_of(name).ok_or_else(|| {
        let known: Vec<&str> = topo.regions.iter().map(|r| r.spec.name.as_str()).collect();
        AdminError::not_found(format!(
            "no region {name:?}; configured: {}",
            known.join(", ")
        ))
    })
}

/// The ramp that controls a region's dial now, if any.
fn ramp_in_control(s: &AdminState, topo: &Topology, region: &str) -> Option<String> {
    let runs = s.router.traffic.snapshot().ramps;
    topo.config
        .ramps
        .iter()
        .filter(|r| r.region.as_str() == region)
        .find(|r| runs.get(&r.name).is_some_and(|run| run.in_control()))
        .map(|r| r.name.clone())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DialBody {
    percent: f64,
}

pub(super) async fn set_dial(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Answer {
    let topo = s.router.topology.load_full();
    let idx = region_index(&topo, &name)?;
    let req: DialBody = body(&bytes, r#"{"percent": 0-100 in steps of 0.1}"#)?;
    let Some(to) = Percent::from_f64(req.percent) else {
        return Err(AdminError::bad_request(format!(
            "percent must be from 0 to 100 in steps of 0.1, found {}",
            req.percent
        )));
    };
    if let Some(ramp) = ramp_in_control(&s, &topo, &name) {
        return Err(ControlError::refused(
            "ramp_in_control",
            format!("ramp {ramp} sets {name}'s dial; pause it and wait, or abort it, first"),
        )
        .into());
    }
    crate::control::safety::check(&topo, &s.router.dial_history, Change::Dial(idx, to))?;
    let entry = &topo.regions[idx as usize];
    let from = entry.live.dial();
    if let Some(fleet) = &s.router.fleet {
        // The fleet's routers take it from etcd; this one applies it below too.
        fleet.put_dial(&name, to).await.map_err(|e| {
            ControlError::Unavailable(format!("cannot share the dial through etcd: {e:#}"))
        })?;
    }
    s.router.dial_history.record(&name, from);
    entry.live.set_dial(to);
    s.router.dial_history.record(&name, to);
    entry.live.publish_gauges(&entry.spec.name);
    tracing::info!(region = %name, %from, %to, "dial set by an operator");
    let config_tenths = entry.spec.dial.tenths();
    s.router
        .traffic
        .update(|t| {
            t.dials.insert(
                name.clone(),
                DialOverride {
                    tenths: to.tenths(),
                    config_tenths,
                },
            );
        })
        .map_err(|e| {
            ControlError::Internal(format!("dial set, but it could not be persisted: {e:#}"))
        })?;
    Ok(Json(
        json!({"region": name, "dial": to.to_json_number(), "previous": from.to_json_number()}),
    ))
}

pub(super) async fn drain(State(s): State<AdminState>, Path(name): Path<String>) -> Answer {
    set_draining(&s, &name, true)
}

pub(super) async fn undrain(State(s): State<AdminState>, Path(name): Path<String>) -> Answer {
    set_draining(&s, &name, false)
}

fn set_draining(s: &AdminState, name: &str, on: bool) -> Answer {
    let topo = s.router.topology.load_full();
    let idx = region_index(&topo, name)?;
    let live = &topo.regions[idx as usize].live;
    if on && !live.is_draining() {
        crate::control::safety::check(&topo, &s.router.dial_history, Change::Drain(idx))?;
    }
    live.draining.store(on, Ordering::Relaxed);
    live.publish_gauges(&topo.regions[idx as usize].spec.name);
    tracing::info!(region = name, draining = on, "drain set by an operator");
    s.router
        .traffic
        .update(|t| {
            if on {
                t.drained.insert(name.to_string());
            } else {
                t.drained.remove(name);
            }
        })
        .map_err(|e| {
            ControlError::Internal(format!("drain set, but it could not be persisted: {e:#}"))
        })?;
    Ok(Json(json!({
        "region": name,
        "draining": on,
        "inflight": live.inflight.load(Ordering::Relaxed),
    })))
}

pub(super) async fn ramp_action(
    State(s): State<AdminState>,
    Path((name, action)): Path<(String, String)>,
) -> Answer {
    let topo = s.router.topology.load_full();
    let Some(spec) = topo.config.ramps.iter().find(|r| r.name == name) else {
        let known: Vec<&str> = topo.config.ramps.iter().map(|r| r.name.as_str()).collect();
        return Err(AdminError::not_found(format!(
            "no ramp {name:?}; configured: {}",
            known.join(", ")
        )));
    };
    let Some(action) = RampAction::parse(&action) else {
        return Err(AdminError::bad_request(format!(
            "ramp action must be start, pause or abort, found {action:?}"
        )));
    };
    Ok(Json(
        crate::control::fleet_sync::act_on_ramp(&s.router, spec, action).await?,
    ))
}

pub(super) async fn explain(State(s): State<AdminState>, bytes: axum::body::Bytes) -> Answer {
    let req: crate::route::explain::ExplainRequest = body(
        &bytes,
        r#"{"method": "GET", "path": "/…", "headers": {"name": "value"}, "client": "203.0.113.7"}"#,
    )?;
    let now = crate::route::ratelimit::nanos(std::time::Instant::now());
    Ok(Json(crate::route::explain::explain(
        &s.router.topology.load(),
        &req,
        now,
        switchyard_oplog::unix_ms(),
    )?))
}

pub(super) async fn promote(State(s): State<AdminState>, bytes: axum::body::Bytes) -> Answer {
    let req: crate::control::promote::PromoteRequest = body(
        &bytes,
        r#"{"partition": "P" | "*", "to": "REGION", "force": false, "dry_run": false}"#,
    )?;
    if req.dry_run {
        return Ok(Json(
            crate::control::promote::preview(&s.router, &req).await?,
        ));
    }
    if req.to.is_none() {
        return Err(AdminError::bad_request(
            "\"to\" names the region to promote; only a dry run may leave it out (to compare every candidate)",
        ));
    }
    let records = crate::control::promote::promote(&s.router, &req, "manual").await?;
    Ok(Json(json!({ "promoted": records })))
}
