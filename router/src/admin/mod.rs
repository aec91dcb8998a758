//! The admin API: bearer-authenticated JSON over HTTP on `admin.addr`.
//! `GET /admin/v1/status`, `POST /admin/v1/reload`,
//! `PUT /admin/v1/regions/{name}/dial`, `POST /admin/v1/regions/{name}/drain`
//! (and `/undrain`), `POST /admin/v1/ramps/{name}/{start|pause|abort}`,
//! `POST /admin/v1/explain`, `POST /admin/v1/promote`. Bad bodies get 400, a change that breaks an
//! interlock 409 naming the rule.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use crate::control::reload::Reloader;
use crate::control::RouterState;

mod actions;
mod error;
mod status;

use actions::{drain, explain, promote, ramp_action, reload, set_dial, undrain};
use status::status;

#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) router: Arc<RouterState>,
    pub(crate) reloader: Arc<Reloader>,
    /// The bearer token; `None` refuses every request.
    pub(crate) token: Option<Arc<str>>,
}

pub(crate) fn router(state: AdminState) -> Router {
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
            if crate::route::hygiene::constant_time_eq(want.as_bytes(), got.trim().as_bytes()) =>
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
