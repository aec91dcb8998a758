//! The admin API: bearer-authenticated JSON over HTTP on `admin.addr`.
//! `GET /admin/v1/status`, `POST /admin/v1/reload`,
//! `PUT /admin/v1/regions/{name}/dial`, `POST /admin/v1/regions/{name}/drain`
//! (and `/undrain`), `POST /admin/v1/ramps/{name}/{start|pause|abort}`,
//! `POST /admin/v1/explain`, `POST /admin/v1/promote`, `GET /admin/v1/series`;
//! and, without a token, the console's page at `GET /console`. Bad bodies get 400, a change that breaks an
//! interlock 409 naming the rule.

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use crate::control::reload::Reloader;
use crate::control::RouterState;

mod actions;
mod console;
mod error;
pub(crate) mod login;
mod status;

use actions::{drain, explain, promote, ramp_action, reload, set_dial, undrain};
use status::status;

#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) router: Arc<RouterState>,
    pub(crate) reloader: Arc<Reloader>,
    /// The bearer token; `None` refuses every request.
    pub(crate) token: Option<Arc<str>>,
    /// Failed logins by source.
    pub(crate) throttle: Arc<login::LoginThrottle>,
}

pub(crate) fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/admin/v1/status", get(status))
        .route("/admin/v1/series", get(status::series))
        .route("/admin/v1/reload", post(reload))
        .route("/admin/v1/regions/{name}/dial", put(set_dial))
        .route("/admin/v1/regions/{name}/drain", post(drain))
        .route("/admin/v1/regions/{name}/undrain", post(undrain))
        .route("/admin/v1/ramps/{name}/{action}", post(ramp_action))
        .route("/admin/v1/explain", post(explain))
        .route("/admin/v1/promote", post(promote))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such admin endpoint\n") })
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    // The console's page and assets hold no data: they are served without
    // a token, and everything they show is fetched with one.
    console::routes().merge(api).with_state(state)
}

async fn auth(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let now = std::time::Instant::now();
    let source = peer.ip();
    if let Some(secs) = s.throttle.throttled(source, now) {
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from this address; wait and retry\n",
        )
            .into_response();
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        return resp;
    }
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if login::bearer_matches(s.token.as_deref(), presented) {
        s.throttle.succeeded(source);
        return next.run(req).await;
    }
    s.throttle.failed(source, now);
    crate::metrics::admin_login_failed();
    let mut resp = (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    resp
}
