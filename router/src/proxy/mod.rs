//! The one `impl ProxyHttp`: each pingora phase does one step of a request's
//! way (see docs/request-lifecycle.md) and delegates the deciding to `route`,
//! which never sees a `Session`. A write's extra steps are in `write`, the
//! router's own answers in `respond`.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};
use switchyard_config::RequestClass;
use tower::retry::budget::Budget;

use crate::control::repair;
use crate::control::RouterState;
use crate::metrics;
use crate::route::classify::classify_at;
use crate::route::concurrency;
use crate::route::decide::{
    decide_with_fallback, take_rate_tokens, verdict, Verdict, WAIT_EXPIRED,
};
use crate::route::fields::{self, Fields};
use crate::route::headers::{
    FENCED, FENCING_TOKEN, FORWARDED_FOR, GRPC_TIMEOUT, REGION, REQUEST_ID, STALE,
};
use crate::route::hygiene;
use crate::route::live::{EndpointCount, RegionCount};
use crate::route::ratelimit;
use crate::route::reject::Reject;
use crate::route::shadow;

mod access;
mod ctx;
mod grpc;
mod hedge;
mod respond;
mod write;

use ctx::Ctx;
use respond::{client_ip, request_line_len, respond};

/// Upstream connections kept idle this long for reuse.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a waiting read looks at its replica's lag again.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// Pingora's keep-alive timeouts are whole seconds, and 0 means forever.
pub(crate) fn whole_seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// The proxy: pingora calls its phases for every request.
pub(crate) struct Edge {
    state: Arc<RouterState>,
}

impl Edge {
    /// A write's owner and epoch were looked up before its body was read
    /// (and logged); a promotion, or etcd going quiet, since then must not
    /// see it forwarded with a stale fencing token to a demoted owner. The
    /// check is made again just before each attempt is sent; a refusal here
    /// is a 503 the client may retry, and the op log records it as never
    /// sent.
    fn owner_still_holds(&self, ctx: &mut Ctx) -> Result<()> {
        let why = match self.state.ownership_unconfirmed() {
            Some(why) => why,
            None => {
                let now = self.state.topology.load();
                let current = now.owner_and_epoch(ctx.partition.as_deref());
                let name = |t: &crate::route::topology::Topology,
                            i: crate::route::topology::RegionIdx| {
                    t.regions.get(i as usize).map(|r| r.spec.name.clone())
                };
                let same_owner = current.is_some_and(|(owner, epoch)| {
                    epoch == ctx.epoch
                        && ctx.region.and_then(|r| name(&ctx.topo, r)) == name(&now, owner)
                });
                if same_owner {
                    return Ok(());
                }
                format!(
                    "the owner of partition {} changed while the request was read (epoch {} then, {} now): not forwarded, retry",
                    ctx.partition.as_deref().unwrap_or(crate::route::owners::DEFAULT),
                    ctx.epoch,
                    current.map_or(0, |c| c.1)
                )
            }
        };
        // Answered by `fail_to_proxy` as it stands, like a fenced write.
        ctx.reject = Some(Reject::unavailable(why));
        Error::e_explain(
            ErrorType::HTTPStatus(503),
            "ownership moved before forwarding",
        )
    }

    pub(crate) fn new(state: Arc<RouterState>) -> Self {
        Edge { state }
    }

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

    /// Classifies and decides at `now`. `Ok(Some(limit))`: the read's class
    /// waits up to `limit` for its preferred replica to become fresh; ask
    /// again, with `waited` once the wait is over.
    fn classify_and_route(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        ip: IpAddr,
        now: Instant,
        waited: bool,
    ) -> std::result::Result<Option<Duration>, Reject> {
        let req = session.req_header();
        let now_ms = switchyard_oplog::unix_ms();
        let now_ns = ratelimit::nanos(now);
        let classified = classify_at(
            &ctx.topo,
            &req.method,
            req.uri.path(),
            &Fields::with(&req.headers, ctx.present),
            ip,
            now_ms,
            now_ns,
        )?;
        ctx.class = classified.class;
        ctx.synthetic = classified.synthetic;
        if ctx.class == RequestClass::Read && ctx.topo.in_panic(classified.service_hash) {
            ctx.panic = true;
            metrics::panic_read();
        }
        if ctx.class == RequestClass::Read {
            ctx.seen.freshness_ms = Some(classified.freshness.bound.as_millis() as u64);
            ctx.seen.ryw_used = classified.ryw.is_some();
            if let (Some(origin), Some(mark)) = (classified.ryw_origin, classified.ryw) {
                ctx.suspect =
                    repair::suspect(&ctx.topo, classified.partition, origin, mark).map(Box::new);
            }
        }
        if ctx.class == RequestClass::Write {
            if let Some(why) = self.state.ownership_unconfirmed() {
                return Err(Reject::unavailable(why));
            }
            if let Some(until) = ctx.topo.writes_held_until(classified.partition, now_ms) {
                let wait_ms = until - now_ms;
                return Err(Reject::unavailable(format!(
                    "partition {} has just changed owner: its writes resume in {wait_ms} ms, once every router that may not have seen the promotion has stopped writing",
                    classified.partition.unwrap_or(crate::route::owners::DEFAULT),
                ))
                .retry_in(wait_ms.div_ceil(1000) as u32));
            }
            ctx.epoch = ctx
                .topo
                .owner_and_epoch(classified.partition)
                .map_or(0, |o| o.1);
            ctx.partition = Some(
                classified
                    .partition
                    .unwrap_or(crate::route::owners::DEFAULT)
                    .to_string(),
            );
        }
        let targets = (ctx.class == RequestClass::Read && !ctx.synthetic)
            .then(|| self.state.shadow_active.load())
            .filter(|t| !t.is_empty());
        if let Some(targets) = targets {
            // Shadows follow the read's own candidate rules (residency first),
            // all but brownout ejection: shadow answers are what a ramp's gates
            // judge, and `max_inflight` already bounds what a slow region gets.
            let owner = ctx.topo.owner_of(classified.partition);
            ctx.shadow_ok = targets
                .iter()
                .filter_map(|t| ctx.topo.index_of(t.region.as_str()))
                .filter(|i| {
                    matches!(
                        verdict(&ctx.topo, &classified, owner, *i),
                        Verdict::Keep | Verdict::Ejected
                    )
                })
                .collect();
        }
        let decision = decide_with_fallback(&ctx.topo, &classified)?;
        if let (Some((_, limit)), false) = (decision.wait_for, waited) {
            return Ok(Some(limit));
        }
        if decision.order.is_empty() {
            return Err(Reject::unavailable(WAIT_EXPIRED));
        }
        ctx.order = decision.order;
        ctx.stale_ms = decision.stale_ms;
        take_rate_tokens(&ctx.topo, &mut ctx.order, now_ns)?;
        if ctx.class == RequestClass::Read {
            self.state.retry_budget.deposit();
        }
        Ok(None)
    }

    /// Classifies and decides, waiting (without blocking the worker) when a
    /// read's class asks to wait for a replica to catch up.
    async fn route(&self, session: &mut Session, ctx: &mut Ctx, ip: IpAddr) -> Option<Reject> {
        let mut deadline: Option<Instant> = None;
        // The clock reading taken when the request arrived, microseconds ago,
        // until the request waits.
        let mut now = ctx.started;
        loop {
            let waited = deadline.is_some_and(|d| now >= d);
            match self.classify_and_route(session, ctx, ip, now, waited) {
                Ok(None) => return None,
                Ok(Some(limit)) => {
                    ctx.seen.waited = true;
                    deadline.get_or_insert_with(|| now + limit);
                    tokio::time::sleep(WAIT_POLL).await;
                    now = Instant::now();
                }
                Err(r) => return Some(r),
            }
        }
    }

    /// A write's body read ahead, its admission (idempotency key) and its
    /// intent in the op log: the answer to give instead of forwarding it,
    /// if there is one.
    async fn admit_and_log_write(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<Option<Reject>> {
        let body = {
            let _reading = crate::control::Counted::new(&self.state.writes_reading_body);
            write::read_write_body(session, ctx.present).await?
        };
        if let Some(reject) = write::admit_write(&self.state, session, ctx, &body)? {
            return Ok(Some(reject));
        }
        Ok(write::log_intent(&self.state, session, ctx, body).await)
    }

    /// Repair on read: a read whose own write the new owner may lack is
    /// repaired (then served by the owner, which has it now) or marked.
    async fn repair_on_read(&self, ctx: &mut Ctx, suspect: repair::Suspect) {
        let partition = suspect.partition.clone();
        let done = repair::repair(&self.state, &ctx.topo, suspect).await;
        let mode = ctx.topo.config.consistency.repair_on_read;
        self.state.repairs.count(&done, mode);
        match &done {
            repair::Repair::NotNeeded => return,
            repair::Repair::Replayed { .. } => {
                // The owner has the write now; a replica may not yet.
                if let Some((owner, _)) = ctx.topo.owner_and_epoch(Some(&partition)) {
                    ctx.order = crate::route::decide::Order::from_slice(&[owner]);
                    ctx.stale_ms = None;
                }
                ctx.partition = Some(partition);
            }
            repair::Repair::Pending { .. } => {}
        }
        ctx.repair = Some(Box::new(done));
    }

    /// Strips reserved headers, appends the peer to `X-Forwarded-For`, sets
    /// `X-Request-Id`.
    fn rewrite_request(session: &mut Session, ctx: &mut Ctx, peer: IpAddr) -> Result<()> {
        let req = session.req_header_mut();
        let marker = ctx.topo.synthetic.as_ref().map(|m| &m.header);
        let fields = Fields::with(&req.headers, ctx.present);
        for name in hygiene::reserved_headers(&fields, marker, ctx.synthetic) {
            req.remove_header(&name);
            ctx.present.removed(&name);
        }
        let fields = Fields::with(&req.headers, ctx.present);
        let xff = hygiene::forwarded_for(&fields, peer);
        let id = hygiene::request_id(&fields);
        req.insert_header(FORWARDED_FOR, xff)?;
        ctx.present.added(fields::FORWARDED_FOR);
        if let Some(id) = id {
            req.insert_header(REQUEST_ID, id)?;
            ctx.present.added(fields::REQUEST_ID);
        }
        Ok(())
    }
}

impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(&self.state)
    }

    /// None. The default is a compression module set to level 0: it changes
    /// nothing, yet its context is allocated and each of its filters called
    /// for every request (~360 instructions). Responses go out in the
    /// encoding their region chose.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Limits and framing, before anything else looks at the request.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let req = session.req_header();
        let limits = &ctx.topo.config.limits;
        let fields = Fields::new(&req.headers);
        ctx.present = fields.present();
        let mut verdict = hygiene::check_limits(&req.headers, request_line_len(req), limits)
            .and_then(|()| hygiene::check_target(&req.method, req.raw_path()))
            .and_then(|()| hygiene::check_framing(&fields))
            .and_then(|()| hygiene::check_http1(req.version, &fields));
        if verdict.is_ok() && fields.contains(fields::TRANSFER_ENCODING) {
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
        // Pipelined HTTP/1.1 requests are served in order, one after the
        // other (RFC 9112 §9.3.2), as nginx and HAProxy do, rather than the
        // connection closing after the first and the rest dropped. Each is
        // parsed and checked as strictly as the first.
        session.as_downstream_mut().set_pipelining_enabled(true);
        // A body that stops arriving is cut (408); an idle connection after
        // this request is closed after `keepalive_timeout` (pingora counts
        // whole seconds, and 0 would mean forever). A client that asked to
        // close keeps its `Connection: close`.
        session.set_read_timeout(Some(limits.body_timeout));
        if session.get_keepalive().is_some() {
            let idle = whole_seconds(limits.keepalive_timeout);
            session.set_keepalive(Some(idle));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let peer = client_ip(session);
        // The trust boundary, before anything reads where the request is from.
        let origin = {
            let config = &ctx.topo.config;
            let fields = Fields::with(&session.req_header().headers, ctx.present);
            hygiene::origin(&fields, peer, ctx.topo.geo.header(), |a| config.trusts(a))
        };
        let websocket = hygiene::is_websocket_upgrade(&Fields::with(
            &session.req_header().headers,
            ctx.present,
        ));
        for name in &origin.drop {
            session.req_header_mut().remove_header(name);
            ctx.present.removed(name);
        }
        if websocket && ctx.reject.is_none() {
            let path = session.req_header().uri.path();
            match ctx.topo.config.route_for_path(path) {
                Some(route) if route.websocket => {
                    ctx.seen.websocket = true;
                    // The upgrade is passed on, normalised; the connection
                    // lives as long as the conversation, not a body timeout.
                    let req = session.req_header_mut();
                    req.insert_header(http::header::UPGRADE, "websocket")?;
                    req.insert_header(http::header::CONNECTION, "upgrade")?;
                    ctx.present.added(fields::UPGRADE);
                    ctx.present.added(fields::CONNECTION);
                    session.set_read_timeout(None);
                }
                route => {
                    ctx.reject = Some(Reject::bad_request(format!(
                        "this path does not take WebSocket upgrades (set `websocket: true` on its route{})",
                        route.map_or(String::new(), |r| format!(" `routes.{}`", r.prefix))
                    )));
                }
            }
        }
        ctx.seen.client = Some(origin.client);
        access::start_trace(session, ctx);
        let headers = Fields::with(&session.req_header().headers, ctx.present);
        if grpc::is_grpc(&headers) {
            ctx.seen.grpc = true;
            ctx.seen.deadline = headers
                .get(fields::GRPC_TIMEOUT)
                .and_then(|v| v.to_str().ok())
                .and_then(grpc::parse_timeout)
                .map(|t| ctx.started + t);
        }
        if let Some(v) = headers.get(fields::REQUEST_TIMEOUT) {
            match v.to_str().ok().and_then(parse_request_timeout) {
                Some(t) => {
                    let d = ctx.started + t;
                    ctx.seen.deadline = Some(ctx.seen.deadline.map_or(d, |g| g.min(d)));
                }
                None => {
                    ctx.reject.get_or_insert_with(|| {
                        Reject::bad_request(
                            "X-Request-Timeout must be a duration above 0 such as 250ms or 2s, or whole milliseconds",
                        )
                    });
                }
            }
        }
        if let (None, Some(limit)) = (&ctx.reject, &ctx.topo.per_client) {
            let now = ratelimit::nanos(ctx.started);
            let headers = Fields::with(&session.req_header().headers, ctx.present);
            ctx.reject = limit.admit(&headers, origin.client, now).err();
        }
        if ctx.reject.is_none() {
            ctx.reject = self.route(session, ctx, origin.client).await;
        }
        // The paths only some requests take (a repair, a write's body and
        // admission, an answer from the edge, a hedge) are boxed where they
        // start: held inline, their state would make this future ~14 KiB,
        // allocated and copied for every request.
        if let (None, Some(suspect)) = (&ctx.reject, ctx.suspect.take()) {
            Box::pin(self.repair_on_read(ctx, *suspect)).await;
        }
        if ctx.reject.is_none() && ctx.class == RequestClass::Write {
            ctx.reject = Box::pin(self.admit_and_log_write(session, ctx)).await?;
        }
        if let Some(reject) = ctx.reject.clone() {
            Box::pin(respond(session, &reject)).await?;
            return Ok(true);
        }
        Self::rewrite_request(session, ctx, peer)?;
        if ctx.class == RequestClass::Read && !ctx.synthetic {
            let targets = self.state.shadow_active.load();
            if !targets.is_empty() {
                let first = ctx.order.first().map_or("", |i| ctx.topo.name(*i));
                let req = session.req_header();
                let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
                let topo = &ctx.topo;
                let allowed = &ctx.shadow_ok;
                let may_serve = |r: &switchyard_config::RegionName| {
                    topo.index_of(r.as_str())
                        .is_some_and(|i| allowed.contains(&i))
                };
                ctx.shadow =
                    shadow::sample(&targets, first, may_serve, &req.method, pq, &req.headers);
            }
        }
        if let Some(h) = hedge::applies(session, ctx) {
            Box::pin(hedge::serve(&self.state, session, ctx, h)).await?;
            return Ok(true);
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
            if let Some((addr, endpoint)) =
                entry.endpoints.pick_least_loaded(failed_addr, ctx.panic)
            {
                ctx.endpoint_inflight = Some(EndpointCount::new(endpoint));
                if ctx.region != Some(idx) {
                    ctx.region_inflight = None;
                    match concurrency::admit(&entry.live, ctx.class).await {
                        Some(count) => ctx.region_inflight = Some(count),
                        None => {
                            entry.live.spilled.fetch_add(1, Ordering::Relaxed);
                            metrics::concurrency_spill(&entry.spec.name);
                            ctx.at_limit = true;
                            continue;
                        }
                    }
                }
                ctx.region = Some(idx);
                ctx.addr = Some(addr);
                let Some((connect_timeout, mut read_timeout)) =
                    try_timeouts(&ctx.topo, ctx.seen.deadline)
                else {
                    return Error::e_explain(
                        ErrorType::ReadTimedout,
                        "the request's deadline (grpc-timeout or X-Request-Timeout) passed before it could be sent",
                    );
                };
                if ctx.seen.websocket {
                    // A conversation may idle for long; it ends when a side closes.
                    read_timeout = None;
                }
                let mut peer = entry.transport.peer(
                    addr,
                    &endpoint.spec,
                    connect_timeout,
                    read_timeout,
                    UPSTREAM_IDLE,
                );
                if ctx.seen.websocket {
                    // WebSocket goes over an HTTP/1.1 upgrade to the region.
                    peer.options.alpn = pingora::protocols::ALPN::H1;
                }
                return Ok(peer);
            }
        }
        if ctx.at_limit {
            if let Some(&idx) = ctx.order.first() {
                let live = &ctx.topo.regions[idx as usize].live;
                live.limited.fetch_add(1, Ordering::Relaxed);
            }
            ctx.reject = Some(concurrency::refusal(ctx.class));
        }
        Error::e_explain(
            ErrorType::HTTPStatus(503),
            "no endpoint of any eligible region is up",
        )
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(idx) = ctx.region {
            ctx.topo.regions[idx as usize].metrics.connection(reused);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.class == RequestClass::Write {
            self.owner_still_holds(ctx)?;
            upstream_request.insert_header(FENCING_TOKEN, http::HeaderValue::from(ctx.epoch))?;
        }
        if let Some(deadline) = ctx.seen.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            upstream_request.insert_header(GRPC_TIMEOUT, grpc::format_timeout(left))?;
        }
        if let Some(traceparent) = access::attempt_traceparent(ctx) {
            upstream_request.insert_header(crate::route::trace::TRACEPARENT, traceparent)?;
            if self.state.spans.is_some() {
                access::begin_attempt_span(ctx);
            }
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
        if ctx.seen.grpc {
            ctx.seen.grpc_status = grpc::status_in(&resp.headers);
        }
        if ctx.seen.websocket && resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            let live = &ctx.topo.regions[idx as usize].live;
            ctx.seen.websocket_open = Some(RegionCount::websocket(live));
        }
        let topo = ctx.topo.clone();
        let entry = &topo.regions[idx as usize];
        if let Some(op) = &mut ctx.op {
            op.status = resp.status.as_u16();
            op.commit_position = write::commit_position(resp);
        }
        if let Some(t) = ctx.upstream_started {
            let alpha = ctx.topo.config.routing.latency.ewma_alpha;
            let now = Instant::now();
            let secs = now.saturating_duration_since(t).as_secs_f64();
            ctx.seen.upstream_ms = Some((secs * 1e6).round() / 1e3);
            if let Some(a) = ctx.seen.attempt_spans.last_mut() {
                a.status = Some(resp.status.as_u16());
                a.end = Some(std::time::SystemTime::now());
            }
            ctx.answered = true;
            if let Some(key) = &mut ctx.idempotency {
                key.answered();
            }
            entry.live.record_response_time(secs, alpha, now);
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
        if let Some(done) = &ctx.repair {
            write::mark_repair(resp, ctx, done)?;
        }
        if ctx.class == RequestClass::Write && resp.status.is_success() {
            write::issue_ryw(resp, ctx)?;
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

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.seen.grpc {
            ctx.seen.grpc_status = grpc::status_in(trailers).or(ctx.seen.grpc_status);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let (Some(plan), Some(chunk)) = (&mut ctx.shadow, body.as_ref()) {
            plan.primary_chunk(chunk);
        }
        // A call past its deadline is cut (its stream reset), not let run on.
        if let (Some(deadline), false) = (ctx.seen.deadline, end_of_stream) {
            if Instant::now() >= deadline {
                ctx.seen.grpc_status = Some(grpc::DEADLINE_EXCEEDED);
                return Error::e_explain(
                    ErrorType::ReadTimedout,
                    "the call's grpc-timeout passed while its answer streamed",
                );
            }
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
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if ctx.retry_requested {
            return e;
        }
        // Pingora leaves some errors' retry to depend on whether the
        // connection was a reused one (a pooled connection the region had
        // closed); asking before deciding panics.
        e.retry.decide_reuse(client_reused);
        // A broken connection before any answer, or a try that ran out its
        // `try_timeout` waiting for one: a read may go elsewhere once, while
        // the request's deadline allows.
        let try_timed_out = ctx.topo.config.routing.try_timeout.is_some()
            && !ctx.answered
            && e.etype() == &ErrorType::ReadTimedout
            && ctx.seen.deadline.is_none_or(|d| Instant::now() < d);
        let retry = (e.retry() || try_timed_out) && self.take_retry(ctx);
        // A client that hung up (or broke its side) before the answer is the
        // client's doing, not the region's: counted against the region, the
        // end of a load test or a burst of impatient clients would eject a
        // healthy one.
        let regions_fault = e.esource() != &ErrorSource::Downstream;
        if let (Some(idx), true) = (ctx.region, regions_fault) {
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
        // The connection is not reused after a failed proxy (below): the
        // answer says `Connection: close`, so a client does not send its next
        // request on a connection about to close.
        if session.response_written().is_none() {
            session.set_keepalive(None);
        }
        // A refusal of ours decided while proxying (a fenced write) speaks for itself.
        if let Some(reject) = ctx.reject.take() {
            ctx.seen.refused = Some(reject.reason.clone());
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
        let mut reject = respond::reject_for(e);
        if ctx.seen.deadline.is_some_and(|d| Instant::now() >= d) {
            // `respond` answers a gRPC call with the matching grpc-status:
            // a 504 is DEADLINE_EXCEEDED.
            reject = Some(Reject::with_status(
                504,
                "the request's deadline (grpc-timeout or X-Request-Timeout) passed",
            ));
        }
        ctx.seen.refused = reject.as_ref().map(|r| r.reason.clone());
        let mut status = reject.as_ref().map_or(0, |r| r.status);
        if let (Some(reject), None) = (&reject, session.response_written()) {
            if ctx.seen.grpc {
                // A gRPC answer is an HTTP 200 carrying its status.
                ctx.seen.grpc_status = Some(grpc::status_for_http(reject.status));
                status = 200;
            }
            if let Err(err) = respond(session, reject).await {
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

    /// A client that hangs up, stalls or breaks its framing is its own
    /// business (answered, and counted), not an error of ours.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        matches!(error.esource(), pingora::ErrorSource::Downstream)
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed
                    | ErrorType::ReadError
                    | ErrorType::WriteError
                    | ErrorType::ReadTimedout
                    | ErrorType::Custom("InvalidChunk")
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let Some((log, op, record)) = write::log_outcome(&self.state, ctx) {
            // Boxed: only an outcome that finds the op log's queue full
            // waits here, and its state inline would be allocated and
            // copied for every request.
            Box::pin(write::log_outcome_waiting(log, op, record)).await;
        }
        if let Some(plan) = ctx.shadow.take() {
            // Mirrored only after the client has its whole answer.
            if e.is_none() && plan.primary_status != 0 {
                self.state
                    .control
                    .spawn(crate::control::shadow::mirror(ctx.topo.clone(), plan));
            }
        }
        let refused = ctx
            .reject
            .as_ref()
            .map(|r| r.reason.clone())
            .or_else(|| ctx.seen.refused.take());
        if let Some(log) = &self.state.access_log {
            log.log(access::entry(
                session,
                ctx,
                refused.clone(),
                e,
                log.include_query,
            ));
        }
        if let Some(spans) = &self.state.spans {
            let failed = e.is_some() || refused.is_some();
            if let Some(span) = access::request_span(session, ctx, refused.is_some(), failed) {
                spans.record(span);
            }
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let (Some(idx), Some(grpc_status)) = (ctx.region, ctx.seen.grpc_status) {
            ctx.topo.regions[idx as usize].metrics.grpc(grpc_status);
        }
        if let Some(idx) = ctx.region {
            let region = &ctx.topo.regions[idx as usize];
            region
                .live
                .served
                .record(crate::metrics::class_index(ctx.class));
            region
                .metrics
                .request(ctx.class, status, ctx.started.elapsed().as_secs_f64());
        }
    }
}

/// `X-Request-Timeout`: a duration (`250ms`, `2s`) or whole milliseconds, above 0.
fn parse_request_timeout(v: &str) -> Option<Duration> {
    let v = v.trim();
    let t = v
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
        .or_else(|| switchyard_config::parse_duration(v))?;
    (!t.is_zero()).then_some(t)
}

/// One try's connect and read timeouts: the configured upstream timeout
/// (0s: no read timeout, and no per-read timers), cut to `try_timeout` (a
/// try waits at most that for each read, its answer's header first; a read
/// then goes on to the next region) and to what the client's deadline has
/// left. `None` once the deadline has passed.
pub(super) fn try_timeouts(
    topo: &crate::route::topology::Topology,
    deadline: Option<Instant>,
) -> Option<(Duration, Option<Duration>)> {
    let timeout = topo.config.limits.upstream_timeout;
    let mut read = (!timeout.is_zero()).then_some(timeout);
    let mut connect = CONNECT_TIMEOUT;
    if let Some(t) = topo.config.routing.try_timeout {
        read = Some(read.map_or(t, |r| r.min(t)));
        connect = connect.min(t);
    }
    if let Some(deadline) = deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        read = Some(read.map_or(left, |t| t.min(left)));
    }
    Some((connect, read))
}
