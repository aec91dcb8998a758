//! The admin API: bearer-authenticated JSON over HTTP on `admin.addr`.
//! `GET /admin/v1/status`, `POST /admin/v1/reload`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::reload::Reloader;
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
        (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.trim().as_bytes()) => {
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

/// Compares without an early exit, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn status(State(s): State<AdminState>) -> Json<Value> {
    Json(status_json(&s.router.topology.load(), s.router.inflight()))
}

/// The status document: regions, owners, ramps.
pub fn status_json(topo: &Topology, inflight: usize) -> Value {
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
                "dial": live.dial(),
                "lag_ms": live.lag_ms.load(Ordering::Relaxed),
                "applied_position": live.applied_position.load(Ordering::Relaxed),
                "ejected": live.is_ejected(),
                "drift": !drift.is_empty(),
                "drift_reasons": drift,
                "probe_rtt_ms": live.probe_rtt.get().map(|s| (s * 1e5).round() / 100.0),
                "response_ms": live.response_time.get().map(|s| (s * 1e5).round() / 100.0),
                "services": r.spec.services,
                "endpoints": endpoints,
            }),
        );
    }
    let mut owners = Map::new();
    if let Some(o) = topo.default_owner {
        owners.insert(
            "default".into(),
            json!({"region": topo.name(o), "epoch": 1}),
        );
    }
    for (p, o) in &topo.owners {
        owners.insert(p.clone(), json!({"region": topo.name(*o), "epoch": 1}));
    }
    json!({
        "regions": regions,
        "owners": owners,
        "ramps": {},
        "policy": format!("{:?}", topo.config.routing.policy).to_lowercase(),
        "inflight": inflight,
        "config": topo.config.source.display().to_string(),
    })
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
