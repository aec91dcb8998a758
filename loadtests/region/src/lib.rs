//! A reference region: one region of a key-value API that behaves the way
//! Switchyard expects a region to behave. It reports health JSON (role, epoch,
//! replica lag, applied position, services), serves `/kv/{key}`, refuses writes
//! whose fencing token is stale (`409`, `X-Fenced: true`), answers repeated
//! idempotency keys from its store (`Idempotent-Replayed: true`), returns
//! `X-Commit-Position`, and replicates from an owner with a settable lag.
//! A settable response delay simulates the distance to the region.

pub mod grpc;
pub mod store;
pub mod transport;
mod websocket;

pub use transport::ServerTls;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use store::{now_ms, Commit, Fence, Store, StoredResponse};

pub const FENCING_TOKEN: &str = "x-fencing-token";
pub const FENCED: &str = "x-fenced";
pub const COMMIT_POSITION: &str = "x-commit-position";
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
pub const REGION_HEADER: &str = "x-region-name";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
}

/// How a region starts.
#[derive(Debug, Clone)]
pub struct RegionOpts {
    pub name: String,
    pub role: Role,
    pub services: Vec<String>,
    /// Base URL of the owner to replicate from (replicas only).
    pub replicate_from: Option<String>,
    pub lag: Duration,
    pub delay: Duration,
    /// The header that names a request's partition.
    pub partition_header: String,
}

/// The live region; every knob is settable while it runs.
pub struct Region {
    pub name: String,
    role: RwLock<Role>,
    services: RwLock<Vec<String>>,
    epoch: AtomicU64,
    store: Mutex<Store>,
    /// Commits fetched from the owner, held back until the lag has passed.
    pending: Mutex<VecDeque<Commit>>,
    replicate_from: RwLock<Option<String>>,
    last_sync_ms: AtomicU64,
    lag_ms: AtomicU64,
    delay_ms: AtomicU64,
    /// Extra delay for API requests only: slow, yet passing health checks.
    slow_ms: AtomicU64,
    /// Extra delay per other API request being answered at the same time: a
    /// region whose latency grows with its load.
    load_ms: AtomicU64,
    health_status: AtomicU16,
    fail_status: AtomicU16,
    pub requests: AtomicU64,
    /// API requests being answered now, and the most there have been at once.
    pub concurrent: AtomicU64,
    pub concurrent_max: AtomicU64,
    /// Health answers a plain `OK` instead of its JSON report (no lag, no role).
    plain_health: std::sync::atomic::AtomicBool,
    /// The headers of the last request to `/_echo`, for tests to look at.
    pub last_echo_headers: Mutex<Vec<(String, String)>>,
    /// WebSocket connections open now, and the close codes their clients sent.
    pub ws_open: AtomicU64,
    pub ws_close_codes: Mutex<Vec<u16>>,
    partition_header: String,
}

impl Region {
    pub fn new(o: RegionOpts) -> Arc<Self> {
        Arc::new(Region {
            name: o.name,
            role: RwLock::new(o.role),
            services: RwLock::new(o.services),
            epoch: AtomicU64::new(1),
            store: Mutex::new(Store::default()),
            pending: Mutex::new(VecDeque::new()),
            replicate_from: RwLock::new(o.replicate_from),
            last_sync_ms: AtomicU64::new(now_ms()),
            lag_ms: AtomicU64::new(o.lag.as_millis() as u64),
            delay_ms: AtomicU64::new(o.delay.as_millis() as u64),
            slow_ms: AtomicU64::new(0),
            load_ms: AtomicU64::new(0),
            health_status: AtomicU16::new(200),
            fail_status: AtomicU16::new(0),
            requests: AtomicU64::new(0),
            concurrent: AtomicU64::new(0),
            concurrent_max: AtomicU64::new(0),
            plain_health: std::sync::atomic::AtomicBool::new(false),
            last_echo_headers: Mutex::new(Vec::new()),
            ws_open: AtomicU64::new(0),
            ws_close_codes: Mutex::new(Vec::new()),
            partition_header: o.partition_header.to_ascii_lowercase(),
        })
    }

    /// Keeps a request's headers for tests to look at (`last_echo_headers`).
    fn remember_headers(&self, headers: &HeaderMap) {
        let headers = header_pairs(headers);
        if let Ok(mut last) = self.last_echo_headers.lock() {
            *last = headers;
        }
    }

    fn role(&self) -> Role {
        *self.role.read().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How far behind the owner this region is, in milliseconds.
    pub fn replica_lag_ms(&self) -> u64 {
        if self.role() == Role::Primary {
            return 0;
        }
        let now = now_ms();
        let oldest_pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .map_or(0, |c| now.saturating_sub(c.at_ms));
        // An owner that cannot be reached leaves us behind by the silence.
        let silence = now.saturating_sub(self.last_sync_ms.load(Ordering::Relaxed));
        let silence = if silence > 1000 { silence } else { 0 };
        oldest_pending.max(silence)
    }

    /// The distance: every request waits this long, health probes too.
    async fn health_delay(&self) {
        let ms = self.delay_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// An API request waits for the distance plus any slowness.
    async fn delay(&self) {
        let others = self.concurrent.load(Ordering::Relaxed).saturating_sub(1);
        let ms = self.delay_ms.load(Ordering::Relaxed)
            + self.slow_ms.load(Ordering::Relaxed)
            + self.load_ms.load(Ordering::Relaxed) * others;
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// Serves the region on `listener` until the process ends: HTTP/1.1 and
/// HTTP/2, over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    region: Arc<Region>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    tokio::spawn(replicate(region.clone()));
    transport::serve_connections(listener, router(region), tls).await
}

/// Binds `addr` and serves there in the clear; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    opts: RegionOpts,
) -> std::io::Result<(SocketAddr, Arc<Region>)> {
    spawn_with(addr, opts, None).await
}

/// [`spawn`], over TLS when `tls` is given.
pub async fn spawn_with(
    addr: SocketAddr,
    opts: RegionOpts,
    tls: Option<&ServerTls>,
) -> std::io::Result<(SocketAddr, Arc<Region>)> {
    let tls = tls
        .map(|t| t.config())
        .transpose()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let region = Region::new(opts);
    let r = region.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, r, tls).await {
            tracing::error!(error = %e, "region server stopped");
        }
    });
    Ok((bound, region))
}

pub fn router(region: Arc<Region>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/kv/{key}", any(kv))
        .route("/_echo", any(echo))
        .route("/_echo/{*rest}", any(echo))
        .route("/_replication/log", get(replication_log))
        .route("/_control/{knob}", put(control))
        .route(grpc::UNARY, post(grpc::unary))
        .route(grpc::STREAM, post(grpc::stream))
        .route("/ws/echo", get(websocket::echo))
        .fallback(fallback)
        .with_state(region)
}

async fn health(State(r): State<Arc<Region>>) -> Response {
    r.health_delay().await;
    let status =
        StatusCode::from_u16(r.health_status.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK);
    if r.plain_health.load(Ordering::Relaxed) {
        return (status, "OK\n").into_response();
    }
    let body = json!({
        "region": r.name,
        "role": r.role(),
        "epoch": r.epoch.load(Ordering::Relaxed),
        "replica_lag_ms": r.replica_lag_ms(),
        "applied_position": r.store().applied_position(),
        "services": *r.services.read().unwrap_or_else(|e| e.into_inner()),
    });
    (status, Json(body)).into_response()
}

fn with_region(r: &Region, mut resp: Response) -> Response {
    if let Ok(v) = r.name.parse() {
        resp.headers_mut().insert(REGION_HEADER, v);
    }
    resp
}

/// An injected failure status, if one is set.
fn injected_failure(r: &Region) -> Option<Response> {
    let fail = r.fail_status.load(Ordering::Relaxed);
    (fail >= 400).then(|| {
        let status = StatusCode::from_u16(fail).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        with_region(r, (status, "injected failure\n").into_response())
    })
}

async fn kv(
    State(r): State<Arc<Region>>,
    Path(key): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    r.requests.fetch_add(1, Ordering::Relaxed);
    r.remember_headers(&headers);
    let now = r.concurrent.fetch_add(1, Ordering::AcqRel) + 1;
    r.concurrent_max.fetch_max(now, Ordering::AcqRel);
    let _done = Concurrent(&r);
    r.delay().await;
    if let Some(resp) = injected_failure(&r) {
        return resp;
    }
    let resp = match method {
        Method::GET | Method::HEAD => read_key(&r, &key),
        Method::PUT | Method::POST | Method::DELETE => {
            write_key(&r, &key, &method, &headers, &body)
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, PUT, POST or DELETE\n",
        )
            .into_response(),
    };
    with_region(&r, resp)
}

/// Counts an API request as answered however its handler ends (a client
/// that hangs up drops it mid-delay).
struct Concurrent<'a>(&'a Region);

impl Drop for Concurrent<'_> {
    fn drop(&mut self) {
        self.0.concurrent.fetch_sub(1, Ordering::AcqRel);
    }
}

fn read_key(r: &Region, key: &str) -> Response {
    let store = r.store();
    let position = store.applied_position();
    let mut resp = match store.data.get(key) {
        Some(v) => Json(json!({"key": key, "value": v, "region": r.name})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"key": key, "region": r.name})),
        )
            .into_response(),
    };
    resp.headers_mut().insert(COMMIT_POSITION, position.into());
    resp
}

fn request_hash(method: &Method, key: &str, body: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(method.as_str().as_bytes());
    h.update(key.as_bytes());
    h.update(body);
    h.digest()
}

fn write_key(r: &Region, key: &str, method: &Method, headers: &HeaderMap, body: &[u8]) -> Response {
    let partition = headers
        .get(r.partition_header.as_str())
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default")
        .to_string();
    let token = match headers
        .get(FENCING_TOKEN)
        .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()))
    {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => {
            return (
                StatusCode::BAD_REQUEST,
                "X-Fencing-Token must be a whole number\n",
            )
                .into_response()
        }
    };
    let idem_key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let hash = request_hash(method, key, body);
    let mut store = r.store();

    // A replayed key answers from the store before anything else is checked.
    if let Some(k) = &idem_key {
        if let Some(prev) = store.idempotency.get(k) {
            if prev.request_hash != hash {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Idempotency-Key reused with a different request\n",
                )
                    .into_response();
            }
            let mut resp = (
                StatusCode::from_u16(prev.status).unwrap_or(StatusCode::OK),
                prev.body.clone(),
            )
                .into_response();
            resp.headers_mut()
                .insert(IDEMPOTENT_REPLAYED, "true".parse().expect("static header"));
            if let Some(p) = prev.commit_position {
                resp.headers_mut().insert(COMMIT_POSITION, p.into());
            }
            return resp;
        }
    }
    if let Fence::Stale { highest } = store.fence(&partition, token) {
        let mut resp = (
            StatusCode::CONFLICT,
            format!(
                "fenced: token {} is below {highest} for partition {partition}\n",
                token.unwrap_or(0)
            ),
        )
            .into_response();
        resp.headers_mut()
            .insert(FENCED, "true".parse().expect("static header"));
        return resp;
    }
    if r.role() != Role::Primary {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this region is a replica and takes no writes\n",
        )
            .into_response();
    }
    let value = if *method == Method::DELETE {
        None
    } else {
        Some(String::from_utf8_lossy(body).into_owned())
    };
    let position = store.commit(key, value);
    let status = if *method == Method::DELETE { 200 } else { 201 };
    let body = json!({"key": key, "position": position, "region": r.name}).to_string();
    if let Some(k) = idem_key {
        store.idempotency.insert(
            k,
            StoredResponse {
                status,
                body: body.clone(),
                commit_position: Some(position),
                request_hash: hash,
            },
        );
    }
    let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
    resp.headers_mut().insert(COMMIT_POSITION, position.into());
    resp
}

/// Headers as (name, value) text pairs, in order.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Answers with what the region received: method, path and headers in order.
async fn echo(
    State(r): State<Arc<Region>>,
    method: Method,
    version: axum::http::Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    r.requests.fetch_add(1, Ordering::Relaxed);
    r.delay().await;
    if let Some(resp) = injected_failure(&r) {
        return resp;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    r.remember_headers(&headers);
    let headers = header_pairs(&headers);
    with_region(
        &r,
        Json(json!({"region": r.name, "method": method.as_str(), "path": uri.to_string(), "version": format!("{version:?}"), "headers": headers, "body": body})).into_response(),
    )
}

/// Any other path: a small answer naming the region (the load drills' target).
async fn fallback(State(r): State<Arc<Region>>) -> Response {
    r.requests.fetch_add(1, Ordering::Relaxed);
    r.delay().await;
    if let Some(resp) = injected_failure(&r) {
        return resp;
    }
    with_region(
        &r,
        format!("{{\"region\":\"{}\"}}\n", r.name).into_response(),
    )
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

async fn replication_log(State(r): State<Arc<Region>>, Query(q): Query<LogQuery>) -> Response {
    Json(r.store().commits_after(q.after, q.limit.min(10_000))).into_response()
}

/// `PUT /_control/{lag|delay|slow|load|health|fail|role|services|epoch}` with `{"value": …}`.
async fn control(State(r): State<Arc<Region>>, Path(knob): Path<String>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Set {
        value: serde_json::Value,
    }
    let Ok(Set { value }) = serde_json::from_slice::<Set>(&body) else {
        return (StatusCode::BAD_REQUEST, "body must be {\"value\": …}\n").into_response();
    };
    let as_u64 = value.as_u64();
    match (knob.as_str(), as_u64) {
        ("lag", Some(v)) => r.lag_ms.store(v, Ordering::Relaxed),
        ("delay", Some(v)) => r.delay_ms.store(v, Ordering::Relaxed),
        ("slow", Some(v)) => r.slow_ms.store(v, Ordering::Relaxed),
        ("load", Some(v)) => r.load_ms.store(v, Ordering::Relaxed),
        ("health", Some(v)) => r.health_status.store(v as u16, Ordering::Relaxed),
        ("fail", Some(v)) => r.fail_status.store(v as u16, Ordering::Relaxed),
        ("epoch", Some(v)) => r.epoch.store(v, Ordering::Relaxed),
        ("health_body", _) => match value.as_str() {
            Some("json") => r.plain_health.store(false, Ordering::Relaxed),
            Some("plain") => r.plain_health.store(true, Ordering::Relaxed),
            _ => {
                return (StatusCode::BAD_REQUEST, "health_body is json or plain\n").into_response()
            }
        },
        ("role", _) => match serde_json::from_value::<Role>(value) {
            Ok(role) => *r.role.write().unwrap_or_else(|e| e.into_inner()) = role,
            Err(_) => {
                return (StatusCode::BAD_REQUEST, "role is primary or replica\n").into_response()
            }
        },
        ("services", _) => match serde_json::from_value::<Vec<String>>(value) {
            Ok(list) => *r.services.write().unwrap_or_else(|e| e.into_inner()) = list,
            Err(_) => {
                return (StatusCode::BAD_REQUEST, "services is a list of names\n").into_response()
            }
        },
        ("replicate_from", _) => {
            *r.replicate_from.write().unwrap_or_else(|e| e.into_inner()) =
                value.as_str().map(str::to_string)
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown knob or bad value: {knob}\n"),
            )
                .into_response()
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Pulls the owner's log and applies each commit once it is `lag` old.
async fn replicate(r: Arc<Region>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    loop {
        tick.tick().await;
        let source = r
            .replicate_from
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(source) = source.filter(|_| r.role() == Role::Replica) else {
            r.last_sync_ms.store(now_ms(), Ordering::Relaxed);
            continue;
        };
        let after = {
            let pending = r.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending
                .back()
                .map_or_else(|| r.store().applied_position(), |c| c.position)
        };
        let url = format!("{source}/_replication/log?after={after}");
        if let Ok(resp) = client.get(&url).send().await {
            if let Ok(commits) = resp.json::<Vec<Commit>>().await {
                r.last_sync_ms.store(now_ms(), Ordering::Relaxed);
                r.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(commits);
            }
        }
        let lag = r.lag_ms.load(Ordering::Relaxed);
        let now = now_ms();
        let mut pending = r.pending.lock().unwrap_or_else(|e| e.into_inner());
        while pending.front().is_some_and(|c| c.at_ms + lag <= now) {
            if let Some(c) = pending.pop_front() {
                r.store().apply(c);
            }
        }
    }
}
