//! The admin API: bearer-authenticated JSON over HTTP on `admin.addr`.
//! `GET /admin/v1/status`, `POST /admin/v1/reload`,
//! `PUT /admin/v1/regions/{name}/dial`, `POST /admin/v1/regions/{name}/drain`
//! (and `/undrain`), `POST /admin/v1/ramps/{name}/{start|pause|abort}`,
//! `POST /admin/v1/explain`, `POST /admin/v1/promote`. Bad bodies get 400, a change that breaks an
//! interlock 409 naming the rule.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::Path;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use switchyard_config::Percent;

use crate::persist::DialOverride;
use crate::ramp::RampAction;
use crate::reload::Reloader;
use crate::safety::Change;
use crate::state::RouterState;
use crate::topology::Topology;

#[derive(Clone)]
pub struct AdminState {
    pub router: Arc<RouterState>,
    pub reloader: Arc<Reloader>,
    /// The bearer token; `None` refuses every request.
    pub token: Option<Arc<str>>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/v1/status", get(status))
        .route("/admin/v1/reload", post(reload))
        .route("/admin/v1/regions/{name}/dial", put(set_dial))
        .route("/admin/v1/regions/{name}/drain", post(drain))
        .route("/admin/v1/regions/{name}/undrain", post(undrain))
        .route("/admin/v1/ramps/{name}/{action}", post(ramp_action))
        .route("/admin/v1/explain", post(explain))
        .route("/admin/v1/promote", post(promote))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such admin endpoint\n") })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

async fn auth(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&s.token, presented) {
        (Some(want), Some(got))
            if crate::hygiene::constant_time_eq(want.as_bytes(), got.trim().as_bytes()) =>
        {
            next.run(req).await
        }
        _ => {
            let mut resp =
                (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            resp
        }
    }
}

async fn status(State(s): State<AdminState>) -> Json<Value> {
    Json(status_json(&s.router))
}

/// The status document: regions, owners, ramps, and the fleet in fleet mode.
pub fn status_json(state: &RouterState) -> Value {
    let topo = state.topology.load_full();
    let now = crate::ratelimit::nanos(std::time::Instant::now());
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
                })
            })
            .collect();
        let drift = live.drift();
        regions.insert(
            r.spec.name.to_string(),
            json!({
                "type": r.spec.kind.as_str(),
                "healthy": live.is_healthy(),
                "dial": live.dial().to_json_number(),
                "lag_ms": live.lag_ms.load(Ordering::Relaxed),
                "applied_position": live.applied_position.load(Ordering::Relaxed),
                "ejected": live.is_ejected(),
                "ejection": live.ejection().map(|e| json!({
                    "reason": e.reason,
                    "for_s": e.duration.as_secs_f64(),
                    "left_s": (e.until.saturating_sub(live.now_nanos()) as f64 / 1e9 * 10.0).round() / 10.0,
                })),
                "ejections": live.ejections.load(Ordering::Relaxed),
                "draining": live.is_draining(),
                "inflight": live.inflight.load(Ordering::Relaxed),
                "rate": r.rate.as_ref().map(|b| json!({
                    "rps": b.limit.rps,
                    "burst": b.limit.burst,
                    "tokens": b.available(now),
                    "share": b.share(),
                    "share_rps": b.share_rps(),
                })),
                "drift": !drift.is_empty(),
                "drift_reasons": drift,
                "probe_rtt_ms": live.probe_rtt.get().map(|s| (s * 1e5).round() / 100.0),
                "response_ms": live.response_time.get().map(|s| (s * 1e5).round() / 100.0),
                "services": r.spec.services,
                "endpoints": endpoints,
            }),
        );
    }
    let mut doc = json!({
        "regions": regions,
        "owners": state.ownership.status_json(),
        "ramps": crate::ramp::status(state, &topo),
        "policy": format!("{:?}", topo.config.routing.policy).to_lowercase(),
        "inflight": state.inflight(),
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

async fn reload(State(s): State<AdminState>) -> Response {
    match s.reloader.reload().await {
        Ok(()) => Json(json!({"reloaded": true})).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"reloaded": false, "error": e.to_string()})),
        )
            .into_response(),
    }
}

/// An error answer: status, a reason, and the interlock rule when one refused.
struct AdminError {
    status: StatusCode,
    rule: Option<&'static str>,
    message: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(rule) = self.rule {
            body["rule"] = json!(rule);
        }
        (self.status, Json(body)).into_response()
    }
}

fn refuse(status: StatusCode, rule: Option<&'static str>, message: impl Into<String>) -> Response {
    AdminError {
        status,
        rule,
        message: message.into(),
    }
    .into_response()
}

/// Reads a JSON body into `T`; a body that does not fit is a 400 with serde's reason.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], example: &str) -> Result<T, AdminError> {
    serde_json::from_slice(bytes).map_err(|e| AdminError {
        status: StatusCode::BAD_REQUEST,
        rule: None,
        message: format!("bad request body: {e}; expected {example}"),
    })
}

fn region_index(topo: &Topology, name: &str) -> Result<crate::topology::RegionIdx, AdminError> {
    topo.index_of(name).ok_or_else(|| {
        let known: Vec<&str> = topo.regions.iter().map(|r| r.spec.name.as_str()).collect();
        AdminError {
            status: StatusCode::NOT_FOUND,
            rule: None,
            message: format!("no region {name:?}; configured: {}", known.join(", ")),
        }
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

async fn set_dial(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let topo = s.router.topology.load_full();
    let idx = match region_index(&topo, &name) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    let req: DialBody = match body(&bytes, r#"{"percent": 0-100 in steps of 0.1}"#) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Some(to) = Percent::from_f64(req.percent) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            None,
            format!(
                "percent must be from 0 to 100 in steps of 0.1, found {}",
                req.percent
            ),
        );
    };
    if let Some(ramp) = ramp_in_control(&s, &topo, &name) {
        return refuse(
            StatusCode::CONFLICT,
            Some("ramp_in_control"),
            format!("ramp {ramp} sets {name}'s dial; pause it and wait, or abort it, first"),
        );
    }
    if let Err(r) = crate::safety::check(&topo, &s.router.dial_history, Change::Dial(idx, to)) {
        return refuse(StatusCode::CONFLICT, Some(r.rule), r.message);
    }
    let entry = &topo.regions[idx as usize];
    let from = entry.live.dial();
    if let Some(fleet) = &s.router.fleet {
        // The fleet's routers take it from etcd; this one applies it below too.
        if let Err(e) = fleet.put_dial(&name, to).await {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                format!("cannot share the dial through etcd: {e:#}"),
            );
        }
    }
    s.router.dial_history.record(&name, from);
    entry.live.set_dial(to);
    s.router.dial_history.record(&name, to);
    crate::metrics::region_gauges(&entry.spec.name, &entry.live);
    tracing::info!(region = %name, %from, %to, "dial set by an operator");
    let config_tenths = entry.spec.dial.tenths();
    if let Err(e) = s.router.traffic.update(|t| {
        t.dials.insert(
            name.clone(),
            DialOverride {
                tenths: to.tenths(),
                config_tenths,
            },
        );
    }) {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            format!("dial set, but it could not be persisted: {e:#}"),
        );
    }
    Json(json!({"region": name, "dial": to.to_json_number(), "previous": from.to_json_number()}))
        .into_response()
}

async fn drain(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    set_draining(&s, &name, true)
}

async fn undrain(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    set_draining(&s, &name, false)
}

fn set_draining(s: &AdminState, name: &str, on: bool) -> Response {
    let topo = s.router.topology.load_full();
    let idx = match region_index(&topo, name) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    let live = &topo.regions[idx as usize].live;
    if on && !live.is_draining() {
        if let Err(r) = crate::safety::check(&topo, &s.router.dial_history, Change::Drain(idx)) {
            return refuse(StatusCode::CONFLICT, Some(r.rule), r.message);
        }
    }
    live.draining.store(on, Ordering::Relaxed);
    crate::metrics::region_gauges(&topo.regions[idx as usize].spec.name, live);
    tracing::info!(region = name, draining = on, "drain set by an operator");
    if let Err(e) = s.router.traffic.update(|t| {
        if on {
            t.drained.insert(name.to_string());
        } else {
            t.drained.remove(name);
        }
    }) {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            format!("drain set, but it could not be persisted: {e:#}"),
        );
    }
    Json(json!({
        "region": name,
        "draining": on,
        "inflight": live.inflight.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn ramp_action(
    State(s): State<AdminState>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let topo = s.router.topology.load_full();
    let Some(spec) = topo.config.ramps.iter().find(|r| r.name == name) else {
        let known: Vec<&str> = topo.config.ramps.iter().map(|r| r.name.as_str()).collect();
        return refuse(
            StatusCode::NOT_FOUND,
            None,
            format!("no ramp {name:?}; configured: {}", known.join(", ")),
        );
    };
    let Some(action) = RampAction::parse(&action) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            None,
            format!("ramp action must be start, pause or abort, found {action:?}"),
        );
    };
    match crate::fleet_ramps::act(&s.router, spec, action).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => refuse(StatusCode::CONFLICT, Some(r.rule), r.message),
    }
}

async fn explain(State(s): State<AdminState>, bytes: axum::body::Bytes) -> Response {
    let req: crate::explain::ExplainRequest = match body(
        &bytes,
        r#"{"method": "GET", "path": "/…", "headers": {"name": "value"}, "client": "203.0.113.7"}"#,
    ) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match crate::explain::explain(&s.router.topology.load(), &req) {
        Ok(v) => Json(v).into_response(),
        Err(e) => refuse(StatusCode::BAD_REQUEST, None, e.0),
    }
}

async fn promote(State(s): State<AdminState>, bytes: axum::body::Bytes) -> Response {
    let req: crate::promote::PromoteRequest = match body(
        &bytes,
        r#"{"partition": "P" | "*", "to": "REGION", "force": false}"#,
    ) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match crate::promote::promote(&s.router, &req, "manual").await {
        Ok(records) => Json(json!({ "promoted": records })).into_response(),
        Err(crate::promote::PromoteError::UnknownRegion(r)) => {
            region_index(&s.router.topology.load(), &r)
                .err()
                .map_or_else(
                    || StatusCode::NOT_FOUND.into_response(),
                    IntoResponse::into_response,
                )
        }
        Err(crate::promote::PromoteError::Refused { rule, message }) => {
            refuse(StatusCode::CONFLICT, Some(rule), message)
        }
        Err(crate::promote::PromoteError::Internal(e)) => {
            refuse(StatusCode::INTERNAL_SERVER_ERROR, None, e)
        }
    }
}
