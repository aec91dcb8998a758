//! The one `impl ProxyHttp`: each pingora phase does one step of a request's
//! way (see docs/request-lifecycle.md) and delegates the deciding to plain
//! modules that never see a `Session`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use switchyard_config::{Idempotency, RequestClass};
use tower::retry::budget::Budget;

use crate::classify::classify;
use crate::decide::{decide_with_fallback, take_rate_tokens, Order};
use crate::error::Reject;
use crate::headers::{
    COMMIT_POSITION, FENCED, FENCING_TOKEN, FORWARDED_FOR, REGION, REQUEST_ID, RYW, STALE,
};
use crate::hygiene;
use crate::idempotency::{self, Admit, KeyGuard};
use crate::live::RegionInflight;
use crate::metrics;
use crate::ratelimit;
use crate::ryw::Mark;
use crate::shadow::{self, ShadowPlan};
use crate::state::{InflightGuard, RouterState};
use crate::topology::{RegionIdx, Topology};
use switchyard_oplog::{Body, Intent, OpId, Outcome, OutcomeKind, Record};

/// Upstream connections kept idle this long for reuse.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a waiting read looks at its replica's lag again.
const WAIT_POLL: Duration = Duration::from_millis(20);

pub struct Edge {
    pub state: Arc<RouterState>,
}

/// Per-request state, carried through the phases.
pub struct Ctx {
    topo: Arc<Topology>,
    started: Instant,
    reject: Option<Reject>,
    class: RequestClass,
    /// Regions to try, best first; `next` indexes the one to try next.
    order: Order,
    next: usize,
    region: Option<RegionIdx>,
    addr: Option<SocketAddr>,
    /// Set once the one retry this request may have is spent.
    retried: bool,
    /// Set when a phase of ours asked pingora to retry this attempt.
    retry_requested: bool,
    upstream_started: Option<Instant>,
    /// The current attempt got a response header.
    answered: bool,
    /// Carries the synthetic marker with the right token.
    synthetic: bool,
    /// A write's partition epoch: its fencing token.
    epoch: u64,
    /// A write's partition, for its read-your-writes token.
    partition: Option<String>,
    /// Served by a replica beyond the read's bound (`stale` fallback): its lag.
    stale_ms: Option<u64>,
    /// A keyed write's hold on its idempotency key.
    idempotency: Option<KeyGuard>,
    /// Counts this request on the region serving it.
    region_inflight: Option<RegionInflight>,
    /// Set when this read is mirrored to a ramping region once answered.
    shadow: Option<Box<ShadowPlan>>,
    /// A write's record in the op log, until its outcome is written.
    op: Option<Box<OpInFlight>>,
    _inflight: InflightGuard,
}

/// What the op log needs to write a write's outcome.
struct OpInFlight {
    id: OpId,
    /// A body too large to read ahead, collected (and hashed) as it streams.
    streamed: Option<StreamedBody>,
    /// The region's status; 0 until it answers.
    status: u16,
    commit_position: Option<u64>,
}

struct StreamedBody {
    kept: Vec<u8>,
    sha256: ring::digest::Context,
    len: u64,
    max: usize,
}

impl StreamedBody {
    fn add(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        self.sha256.update(chunk);
        if self.len <= self.max as u64 {
            self.kept.extend_from_slice(chunk);
        } else {
            self.kept = Vec::new();
        }
    }

    fn finish(self) -> Body {
        if self.len <= self.max as u64 {
            Body::Inline(self.kept)
        } else {
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(self.sha256.finish().as_ref());
            Body::Hashed {
                len: self.len,
                sha256,
            }
        }
    }
}

/// Request headers an op log record keeps, so a replay means the same thing.
/// Credentials are never kept.
const KEPT_FOR_REPLAY: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-language",
    "accept",
];

/// A write's body as the router has it before forwarding.
enum WriteBody {
    /// Read whole (pingora replays it to the region from its retry buffer).
    Whole(Bytes),
    /// Too large, or of unknown length: it streams.
    Streams { length: Option<usize> },
}

fn client_ip(session: &Session) -> IpAddr {
    session
        .client_addr()
        .and_then(PingoraAddr::as_inet)
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip())
}

/// The most body the router reads ahead of forwarding: what pingora keeps
/// to replay to the upstream.
const BUFFERED_BODY_LIMIT: usize = 64 * 1024;

/// Reads a write's body ahead of forwarding when it fits pingora's retry buffer.
async fn read_write_body(session: &mut Session) -> Result<WriteBody> {
    let req = session.req_header();
    let length = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    Ok(match (length, chunked) {
        (Some(n), false) if n <= BUFFERED_BODY_LIMIT => {
            WriteBody::Whole(read_body(session, n).await?)
        }
        (None, false) => WriteBody::Whole(Bytes::new()),
        _ => WriteBody::Streams { length },
    })
}

/// Reads a whole request body of `len` bytes; pingora replays it to the region.
async fn read_body(session: &mut Session, len: usize) -> Result<Bytes> {
    // What is read here is kept in the retry buffer, which the proxy sends upstream.
    session.as_downstream_mut().enable_retry_buffering();
    let mut body = bytes::BytesMut::with_capacity(len);
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Length of the request line as on the wire (method, target, version, CRLF).
fn request_line_len(req: &RequestHeader) -> usize {
    req.method.as_str().len() + req.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12
}

/// Writes the router's own answer: status, reason text, `Retry-After`.
async fn respond(session: &mut Session, reject: &Reject) -> Result<()> {
    let body = Bytes::from(format!("{}\n", reject.reason));
    let mut resp = ResponseHeader::build(reject.status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    if let Some(secs) = reject.retry_after {
        resp.insert_header(http::header::RETRY_AFTER, secs.to_string())?;
    }
    if reject.status == 400 || reject.status == 431 {
        // The framing cannot be trusted: never read another request from it.
        session.set_keepalive(None);
    }
    metrics::rejected(reject.status);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

impl Edge {
    /// Whether the current attempt may be retried on the next region.
    fn may_retry(&self, ctx: &Ctx) -> bool {
        ctx.class == RequestClass::Read && !ctx.retried && ctx.next < ctx.order.len()
    }

    /// Spends the retry if the budget allows it.
    fn take_retry(&self, ctx: &mut Ctx) -> bool {
        if !self.may_retry(ctx) {
            return false;
        }
        if !self.state.retry_budget.withdraw() {
            metrics::retry_denied();
            return false;
        }
        ctx.retried = true;
        if let Some(r) = ctx.region {
            metrics::retry(&ctx.topo.regions[r as usize].spec.name);
        }
        true
    }

    /// Classifies and decides. `Ok(Some(limit))`: the read's class waits up
    /// to `limit` for its preferred replica to become fresh; ask again, with
    /// `waited` once the wait is over.
    fn classify_and_route(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        ip: IpAddr,
        waited: bool,
    ) -> std::result::Result<Option<Duration>, Reject> {
        let req = session.req_header();
        let classified = classify(&ctx.topo, &req.method, req.uri.path(), &req.headers, ip)?;
        ctx.class = classified.class;
        ctx.synthetic = classified.synthetic;
        if ctx.class == RequestClass::Write {
            if let Some(why) = self.state.ownership_unconfirmed() {
                return Err(Reject::unavailable(why));
            }
            ctx.epoch = ctx
                .topo
                .owner_and_epoch(classified.partition)
                .map_or(0, |o| o.1);
            ctx.partition = Some(
                classified
                    .partition
                    .unwrap_or(crate::ownership::DEFAULT)
                    .to_string(),
            );
        }
        let decision = decide_with_fallback(&ctx.topo, &classified)?;
        if let (Some((_, limit)), false) = (decision.wait_for, waited) {
            return Ok(Some(limit));
        }
        if decision.order.is_empty() {
            return Err(Reject::unavailable(
                "no replica became fresh enough within the wait, and the partition's owner cannot serve the read",
            ));
        }
        ctx.order = decision.order;
        ctx.stale_ms = decision.stale_ms;
        take_rate_tokens(&ctx.topo, &mut ctx.order, ratelimit::nanos(ctx.started))?;
        if ctx.class == RequestClass::Read {
            self.state.retry_budget.deposit();
        }
        Ok(None)
    }

    /// Classifies and decides, waiting (without blocking the worker) when a
    /// read's class asks to wait for a replica to catch up.
    async fn route(&self, session: &mut Session, ctx: &mut Ctx, ip: IpAddr) -> Option<Reject> {
        let mut deadline: Option<Instant> = None;
        loop {
            let waited = deadline.is_some_and(|d| Instant::now() >= d);
            match self.classify_and_route(session, ctx, ip, waited) {
                Ok(None) => return None,
                Ok(Some(limit)) => {
                    deadline.get_or_insert_with(|| Instant::now() + limit);
                    tokio::time::sleep(WAIT_POLL).await;
                }
                Err(r) => return Some(r),
            }
        }
    }

    /// A write's idempotency key: taken from the client, generated, or
    /// required; then checked against the keys in flight and seen.
    async fn admit_write(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        body: &WriteBody,
    ) -> Result<Option<Reject>> {
        let cfg = &ctx.topo.config.consistency;
        if cfg.idempotency == Idempotency::Off {
            return Ok(None);
        }
        let given = session
            .req_header()
            .headers
            .get(idempotency::HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let key = match given {
            Some(k) if k.len() > idempotency::MAX_KEY_LEN => {
                return Ok(Some(Reject::bad_request(format!(
                    "Idempotency-Key is longer than {} characters",
                    idempotency::MAX_KEY_LEN
                ))))
            }
            Some(k) => k,
            None if cfg.idempotency == Idempotency::Require => {
                return Ok(Some(Reject::bad_request(
                    "writes need an Idempotency-Key header here (consistency.idempotency: require)",
                )))
            }
            None => {
                let k = uuid::Uuid::new_v4().to_string();
                session
                    .req_header_mut()
                    .insert_header(idempotency::HEADER, &k)?;
                k
            }
        };
        let req = session.req_header();
        let method = req.method.as_str().to_string();
        let path = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        // Bodies read ahead are fingerprinted whole; streamed ones by their length.
        let fp = match body {
            WriteBody::Whole(b) => idempotency::fingerprint(&method, &path, b),
            WriteBody::Streams { length } => {
                idempotency::fingerprint(&method, &path, format!("length {length:?}").as_bytes())
            }
        };
        let window = cfg.idempotency_window;
        Ok(match self.state.idempotency.begin(&key, fp, window) {
            Admit::Proceed(guard) => {
                ctx.idempotency = Some(guard);
                None
            }
            Admit::InFlight => Some(Reject::conflict(
                "a request with this Idempotency-Key is still in flight",
            )),
            Admit::Mismatch => Some(Reject::unprocessable(
                "this Idempotency-Key was used for a different request (method, path or body)",
            )),
        })
    }

    /// Logs a write's intent; the write goes on only once the log has it.
    async fn log_intent(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        body: WriteBody,
    ) -> Option<Reject> {
        let log = self.state.oplog.as_ref()?;
        let req = session.req_header();
        let owner = ctx
            .order
            .first()
            .map_or("", |i| ctx.topo.name(*i))
            .to_string();
        let partition = ctx
            .partition
            .clone()
            .unwrap_or_else(|| crate::ownership::DEFAULT.to_string());
        let max = ctx.topo.config.oplog.max_body_bytes;
        let (logged_body, streamed) = match body {
            WriteBody::Whole(b) => (Body::of(&b, max), None),
            WriteBody::Streams { .. } => (
                Body::InOutcome,
                Some(StreamedBody {
                    kept: Vec::new(),
                    sha256: ring::digest::Context::new(&ring::digest::SHA256),
                    len: 0,
                    max,
                }),
            ),
        };
        let id = OpId::new();
        let intent = Intent {
            op_id: id,
            edge_id: log.edge_id.clone(),
            at_ms: crate::ryw::unix_ms(),
            owner_entry: ctx.topo.owner_entry(&partition).to_string(),
            partition,
            method: req.method.as_str().to_string(),
            path: req
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            idempotency_key: req
                .headers
                .get(idempotency::HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            headers: KEPT_FOR_REPLAY
                .iter()
                .filter_map(|name| {
                    let v = req.headers.get(*name)?.to_str().ok()?;
                    Some((name.to_string(), v.to_string()))
                })
                .collect(),
            body: logged_body,
            owner,
            epoch: ctx.epoch,
        };
        if let Err(why) = log.intent(Record::Intent(intent)).await {
            return Some(Reject::unavailable(format!(
                "this write was not forwarded: {why}"
            )));
        }
        ctx.op = Some(Box::new(OpInFlight {
            id,
            streamed,
            status: 0,
            commit_position: None,
        }));
        None
    }

    /// Logs how a write ended.
    async fn log_outcome(&self, ctx: &mut Ctx) {
        let (Some(log), Some(op)) = (self.state.oplog.as_ref(), ctx.op.take()) else {
            return;
        };
        let op = *op;
        let outcome = match op.status {
            0 if ctx.upstream_started.is_some() => OutcomeKind::Unknown,
            0 => OutcomeKind::Failed,
            100..=399 => OutcomeKind::Acked,
            400..=499 => OutcomeKind::Rejected,
            _ => OutcomeKind::Failed,
        };
        let record = Record::Outcome(Outcome {
            op_id: op.id,
            at_ms: crate::ryw::unix_ms(),
            status: op.status,
            outcome,
            commit_position: op.commit_position,
            body: op.streamed.map(StreamedBody::finish),
        });
        if let Err(e) = log.outcome(record).await {
            tracing::error!(op = %op.id, error = %e, "write outcome not logged");
        }
    }

    /// After a write: the read-your-writes token, as cookie and header.
    fn issue_ryw(&self, resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
        let mark = resp
            .headers
            .get(COMMIT_POSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map_or_else(|| Mark::Time(crate::ryw::unix_ms()), Mark::Position);
        let token = ctx.topo.ryw.issue(&crate::ryw::Token {
            partition: ctx
                .partition
                .clone()
                .unwrap_or_else(|| crate::ownership::DEFAULT.to_string()),
            epoch: ctx.epoch,
            mark,
        });
        resp.append_header(
            http::header::SET_COOKIE,
            format!(
                "{}={token}; Path=/; HttpOnly; SameSite=Lax",
                crate::ryw::COOKIE
            ),
        )?;
        resp.insert_header(RYW, token)?;
        Ok(())
    }

    /// Strips reserved headers, appends `X-Forwarded-For`, sets `X-Request-Id`.
    fn rewrite_request(session: &mut Session, ctx: &Ctx, ip: IpAddr) -> Result<()> {
        let req = session.req_header_mut();
        let marker = ctx.topo.synthetic.as_ref().map(|m| &m.header);
        for name in hygiene::reserved_headers(&req.headers, marker, ctx.synthetic) {
            req.remove_header(&name);
        }
        let xff = hygiene::forwarded_for(&req.headers, ip);
        req.insert_header(FORWARDED_FOR, xff)?;
        if let Some(id) = hygiene::request_id(&req.headers) {
            req.insert_header(REQUEST_ID, id)?;
        }
        Ok(())
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            topo: self.state.topology.load_full(),
            started: Instant::now(),
            reject: None,
            class: RequestClass::Read,
            order: Order::new(),
            next: 0,
            region: None,
            addr: None,
            retried: false,
            retry_requested: false,
            upstream_started: None,
            answered: false,
            synthetic: false,
            epoch: 0,
            partition: None,
            stale_ms: None,
            idempotency: None,
            region_inflight: None,
            shadow: None,
            op: None,
            _inflight: InflightGuard::new(&self.state),
        }
    }

    /// Limits and framing, before anything else looks at the request.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let req = session.req_header();
        let limits = &ctx.topo.config.limits;
        let mut verdict = hygiene::check_limits(&req.headers, request_line_len(req), limits)
            .and_then(|()| hygiene::check_framing(&req.headers));
        if verdict.is_ok() && req.headers.contains_key(http::header::TRANSFER_ENCODING) {
            let raw_cl = session
                .as_downstream()
                .as_http1()
                .is_some_and(|h1| hygiene::raw_has_content_length(&h1.get_headers_raw_bytes()));
            if raw_cl {
                verdict = Err(Reject::bad_request(
                    "request has both Content-Length and Transfer-Encoding",
                ));
            }
        }
        ctx.reject = verdict.err();
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let ip = client_ip(session);
        if ctx.reject.is_none() {
            ctx.reject = self.route(session, ctx, ip).await;
        }
        if ctx.reject.is_none() && ctx.class == RequestClass::Write {
            let body = read_write_body(session).await?;
            ctx.reject = self.admit_write(session, ctx, &body).await?;
            if ctx.reject.is_none() {
                ctx.reject = self.log_intent(session, ctx, body).await;
            }
        }
        if let Some(reject) = ctx.reject.clone() {
            respond(session, &reject).await?;
            return Ok(true);
        }
        Self::rewrite_request(session, ctx, ip)?;
        if ctx.class == RequestClass::Read && !ctx.synthetic {
            let targets = self.state.shadow_active.load();
            if !targets.is_empty() {
                let first = ctx.order.first().map_or("", |i| ctx.topo.name(*i));
                let req = session.req_header();
                let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
                ctx.shadow = shadow::sample(&targets, first, &req.method, pq, &req.headers);
            }
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let failed_addr = ctx.addr.take();
        while let Some(&idx) = ctx.order.get(ctx.next) {
            ctx.next += 1;
            let entry = &ctx.topo.regions[idx as usize];
            // The first region's token was taken when deciding; a retry takes its own.
            if ctx.next > 1 && ctx.region != Some(idx) {
                if let Some(bucket) = &entry.rate {
                    if bucket.try_take(ratelimit::nanos(Instant::now())).is_err() {
                        metrics::rate_limited(&entry.spec.name, ctx.next < ctx.order.len());
                        continue;
                    }
                }
            }
            if let Some(addr) = entry.endpoints.pick(failed_addr) {
                if ctx.region != Some(idx) {
                    ctx.region_inflight = Some(RegionInflight::new(&entry.live));
                }
                ctx.region = Some(idx);
                ctx.addr = Some(addr);
                let mut peer = HttpPeer::new(addr, false, String::new());
                peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
                peer.options.total_connection_timeout = Some(CONNECT_TIMEOUT);
                let timeout = ctx.topo.config.limits.upstream_timeout;
                // 0s turns the read timeout off (and its per-read timers).
                peer.options.read_timeout = (!timeout.is_zero()).then_some(timeout);
                peer.options.idle_timeout = Some(UPSTREAM_IDLE);
                return Ok(Box::new(peer));
            }
        }
        Error::e_explain(
            ErrorType::HTTPStatus(503),
            "no endpoint of any eligible region is up",
        )
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.class == RequestClass::Write {
            upstream_request.insert_header(FENCING_TOKEN, http::HeaderValue::from(ctx.epoch))?;
        }
        ctx.retry_requested = false;
        ctx.answered = false;
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(idx) = ctx.region else {
            return Ok(());
        };
        let topo = ctx.topo.clone();
        let entry = &topo.regions[idx as usize];
        if let Some(op) = &mut ctx.op {
            op.status = resp.status.as_u16();
            op.commit_position = resp
                .headers
                .get(COMMIT_POSITION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
        }
        if let Some(t) = ctx.upstream_started {
            let alpha = ctx.topo.config.routing.latency.ewma_alpha;
            let secs = t.elapsed().as_secs_f64();
            ctx.answered = true;
            if let Some(key) = &mut ctx.idempotency {
                key.reached_region = true;
            }
            entry.live.record_response_time(secs, alpha);
            entry
                .live
                .stats
                .answer(!resp.status.is_server_error(), secs);
        }
        if ctx.class == RequestClass::Write
            && resp.status == http::StatusCode::CONFLICT
            && resp
                .headers
                .get(FENCED)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
        {
            // Our epoch is behind the region's: ownership moved on without us.
            metrics::fenced();
            let state = self.state.clone();
            self.state.control.spawn(async move {
                state.refresh_ownership().await;
            });
            ctx.reject = Some(Reject::unavailable(
                "the owner refused this write as fenced: ownership moved on; this router refreshed its view, retry",
            ));
            return Error::e_explain(ErrorType::HTTPStatus(503), "fenced write");
        }
        if resp.status.is_server_error() {
            metrics::upstream_error(&entry.spec.name, "5xx");
            if self.take_retry(ctx) {
                ctx.retry_requested = true;
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(resp.status.as_u16()),
                    "upstream answered 5xx; retrying on the next region",
                );
                e.set_retry(true);
                return Err(e);
            }
        }
        resp.insert_header(REGION, entry.header_value.clone())?;
        if let Some(lag) = ctx.stale_ms {
            resp.insert_header(STALE, format!("{lag}ms"))?;
        }
        if ctx.class == RequestClass::Write && resp.status.is_success() {
            self.issue_ryw(resp, ctx)?;
        }
        if let Some(plan) = &mut ctx.shadow {
            plan.primary_status = resp.status.as_u16();
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(streamed), Some(chunk)) = (
            ctx.op.as_mut().and_then(|op| op.streamed.as_mut()),
            body.as_ref(),
        ) {
            streamed.add(chunk);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let (Some(plan), Some(chunk)) = (&mut ctx.shadow, body.as_ref()) {
            plan.primary_chunk(chunk);
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(idx) = ctx.region {
            let entry = &ctx.topo.regions[idx as usize];
            metrics::upstream_error(&entry.spec.name, "connect");
            entry.live.stats.no_answer();
        }
        let retry = self.take_retry(ctx);
        ctx.retry_requested = retry;
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        _session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if ctx.retry_requested {
            return e;
        }
        // A broken connection before any answer: a read may go elsewhere once.
        let retry = e.retry() && self.take_retry(ctx);
        if let Some(idx) = ctx.region {
            let entry = &ctx.topo.regions[idx as usize];
            metrics::upstream_error(&entry.spec.name, "proxy");
            if ctx.upstream_started.is_some() && !ctx.answered {
                entry.live.stats.no_answer();
            }
        }
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // A refusal of ours decided while proxying (a fenced write) speaks for itself.
        if let Some(reject) = ctx.reject.take() {
            if session.response_written().is_none() {
                if let Err(err) = respond(session, &reject).await {
                    tracing::debug!(error = %err, "could not write the error response");
                }
            }
            return FailToProxy {
                error_code: reject.status,
                can_reuse_downstream: false,
            };
        }
        let (status, reason) = match e.etype() {
            ErrorType::HTTPStatus(code) => {
                (*code, e.context.as_ref().map(|c| c.as_str().to_string()))
            }
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (504, Some("the region did not answer in time".to_string()))
            }
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => {
                    (502, Some("the region could not be reached".to_string()))
                }
                pingora::ErrorSource::Downstream => (0, None),
                _ => (500, Some("internal error".to_string())),
            },
        };
        if status > 0 && session.response_written().is_none() {
            let mut reject = Reject::bad_request(reason.unwrap_or_else(|| "error".into()));
            reject.status = status;
            if status == 503 {
                reject.retry_after = Some(1);
            }
            if let Err(err) = respond(session, &reject).await {
                tracing::debug!(error = %err, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// A retry we asked for (a 5xx on a read) is a decision, not a warning.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &Ctx,
        _error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        ctx.retry_requested
    }

    /// A client that hangs up is its own business, not an error of ours.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        matches!(error.esource(), pingora::ErrorSource::Downstream)
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        self.log_outcome(ctx).await;
        if let Some(plan) = ctx.shadow.take() {
            // Mirrored only after the client has its whole answer.
            if e.is_none() && plan.primary_status != 0 {
                self.state
                    .control
                    .spawn(shadow::mirror(ctx.topo.clone(), plan));
            }
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let Some(idx) = ctx.region {
            ctx.topo.regions[idx as usize].metrics.request(
                ctx.class,
                status,
                ctx.started.elapsed().as_secs_f64(),
            );
        }
    }
}
