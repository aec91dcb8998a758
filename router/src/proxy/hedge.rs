//! Hedged reads (`routing.hedge`): when the first region has not answered a
//! read after `after` (fixed, or that region's recent p95), the same read
//! goes to the next candidate; the first answer that is not a 5xx wins and
//! is streamed to the client, the others are dropped (their connections
//! closed, which cancels them). Only the read's own candidates are used, so
//! freshness, residency and read-your-writes hold for every try; each hedge
//! spends the retry budget; writes are never hedged.
//!
//! A hedged read is answered here rather than by pingora's proxy loop,
//! which drives one upstream at a time: the tries are made with the same
//! connector, transport and timeouts as proxied requests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use switchyard_config::{Hedge, HedgeAfter, RequestClass};
use tower::retry::budget::Budget;

use crate::control::region_client;
use crate::control::RouterState;
use crate::metrics;
use crate::proxy::ctx::Ctx;
use crate::route::headers::STALE;
use crate::route::live::{EndpointCount, RegionCount};
use crate::route::topology::{RegionIdx, Topology};

/// `after: p95` before the region has answered anything.
const P95_UNKNOWN: Duration = Duration::from_millis(50);
/// A try's connection is kept for the next one this long.
const IDLE: Duration = Duration::from_secs(60);

/// Whether this request is one to hedge.
pub(super) fn applies(session: &Session, ctx: &Ctx) -> Option<Hedge> {
    let hedge = ctx.topo.config.routing.hedge?;
    let method = &session.req_header().method;
    let plain_read = ctx.class == RequestClass::Read
        && (method == http::Method::GET || method == http::Method::HEAD)
        && !ctx.seen.websocket
        && !ctx.seen.grpc;
    (plain_read && ctx.order.len() > 1).then_some(hedge)
}

/// One try that got an answer's header.
struct Answered {
    idx: RegionIdx,
    addr: std::net::SocketAddr,
    session: HttpSession,
    peer: Box<HttpPeer>,
    started: Instant,
    _region: RegionCount,
    _endpoint: EndpointCount,
}

type Try = Result<Answered, (RegionIdx, String)>;

/// Sends the read to `order[0]`, and to the next candidates as hedges, and
/// answers the client with the first good answer.
pub(super) async fn serve(
    state: &RouterState,
    session: &mut Session,
    ctx: &mut Ctx,
    hedge: Hedge,
) -> Result<()> {
    let topo = ctx.topo.clone();
    let req = session.req_header().clone();
    let first = ctx.order[0];
    let after = match hedge.after {
        HedgeAfter::Fixed(d) => d,
        HedgeAfter::P95 => match topo.regions[first as usize]
            .live
            .recent_p95_us
            .load(Ordering::Relaxed)
        {
            0 => P95_UNKNOWN,
            us => Duration::from_micros(us),
        },
    };
    let mut tries = FuturesUnordered::new();
    let mut next = 0;
    let mut hedges = 0;
    let mut last_5xx: Option<Answered> = None;
    let mut last_error = String::new();
    // The first try (a region at its concurrency limit is passed over).
    while next < ctx.order.len() && tries.is_empty() {
        if let Some(t) = start(&topo, ctx, ctx.order[next], &req) {
            tries.push(t);
        }
        next += 1;
    }
    let mut hedge_at = tokio::time::Instant::now() + after;
    let winner = loop {
        if tries.is_empty() {
            break None;
        }
        let may_hedge = hedges < hedge.max && next < ctx.order.len();
        tokio::select! {
            done = tries.next() => {
                let Some(done): Option<Try> = done else { break None };
                match done {
                    Ok(a) if a.session.response_header().is_some_and(|r| !r.status.is_server_error()) => {
                        break Some(a);
                    }
                    Ok(a) => {
                        let region = &topo.regions[a.idx as usize];
                        region.live.stats.answer(false, a.started.elapsed().as_secs_f64());
                        metrics::upstream_error(&region.spec.name, "5xx");
                        last_5xx = Some(a);
                    }
                    Err((idx, why)) => {
                        let region = &topo.regions[idx as usize];
                        region.live.stats.no_answer();
                        metrics::upstream_error(&region.spec.name, "proxy");
                        last_error = why;
                    }
                }
                // Nothing left in flight: the next candidate now, as a retry.
                if tries.is_empty() && may_hedge && state.retry_budget.withdraw() {
                    hedges += 1;
                    while next < ctx.order.len() && tries.is_empty() {
                        if let Some(t) = start(&topo, ctx, ctx.order[next], &req) {
                            tries.push(t);
                        }
                        next += 1;
                    }
                }
            }
            _ = tokio::time::sleep_until(hedge_at), if may_hedge => {
                hedge_at = tokio::time::Instant::now() + after;
                if state.retry_budget.withdraw() {
                    hedges += 1;
                    metrics::hedge("sent");
                    while next < ctx.order.len() {
                        let idx = ctx.order[next];
                        next += 1;
                        if let Some(t) = start(&topo, ctx, idx, &req) {
                            tries.push(t);
                            break;
                        }
                    }
                } else {
                    metrics::hedge("denied_by_budget");
                    next = ctx.order.len();
                }
            }
        }
    };
    let hedged = hedges > 0;
    let answer = winner.or(last_5xx);
    let Some(answer) = answer else {
        ctx.seen.refused = Some(format!("no region answered: {last_error}").into());
        return Error::e_explain(ErrorType::HTTPStatus(502), "no region answered the read");
    };
    if hedged {
        let won_by_hedge = answer.idx != first;
        metrics::hedge(if won_by_hedge {
            "hedge_won"
        } else {
            "first_won"
        });
    }
    // The losers are dropped here: their connections close.
    drop(tries);
    relay(session, ctx, &topo, answer).await
}

/// Starts a try at region `idx`, if it has room under its concurrency limit
/// and an endpoint to send to.
fn start(
    topo: &Arc<Topology>,
    ctx: &Ctx,
    idx: RegionIdx,
    req: &RequestHeader,
) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = Try> + Send>>> {
    let entry = &topo.regions[idx as usize];
    let Some(region) = RegionCount::inflight(&entry.live) else {
        entry.live.spilled.fetch_add(1, Ordering::Relaxed);
        metrics::concurrency_spill(&entry.spec.name);
        return None;
    };
    let (addr, endpoint) = entry.endpoints.pick_least_loaded(None, ctx.panic)?;
    let counted = EndpointCount::new(endpoint);
    let (connect_timeout, read_timeout) = super::try_timeouts(topo, ctx.seen.deadline)?;
    let peer = entry
        .transport
        .peer(addr, &endpoint.spec, connect_timeout, read_timeout, IDLE);
    let spec = endpoint.spec.clone();
    let req = req.clone();
    Some(Box::pin(async move {
        let started = Instant::now();
        match region_client::send_proxied(&peer, &spec, req).await {
            Ok(session) => Ok(Answered {
                idx,
                addr,
                session,
                peer,
                started,
                _region: region,
                _endpoint: counted,
            }),
            Err(e) => Err((idx, e.to_string())),
        }
    }))
}

/// Streams the winning answer to the client, with the headers a proxied
/// read gets.
async fn relay(
    session: &mut Session,
    ctx: &mut Ctx,
    topo: &Arc<Topology>,
    mut a: Answered,
) -> Result<()> {
    let entry = &topo.regions[a.idx as usize];
    let now = Instant::now();
    let secs = now.saturating_duration_since(a.started).as_secs_f64();
    let mut resp: ResponseHeader = a
        .session
        .response_header()
        .cloned()
        .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response header"))?;
    entry
        .live
        .record_response_time(secs, topo.config.routing.latency.ewma_alpha, now);
    entry
        .live
        .stats
        .answer(!resp.status.is_server_error(), secs);
    ctx.region = Some(a.idx);
    ctx.addr = Some(a.addr);
    ctx.seen.upstream_ms = Some((secs * 1e6).round() / 1e3);
    for hop in ["connection", "keep-alive"] {
        resp.remove_header(hop);
    }
    resp.insert_header(crate::route::headers::REGION, entry.header_value.clone())?;
    if ctx.order.first() != Some(&a.idx) {
        // Served by a later candidate: a replica's lag, as a proxied read says.
        ctx.stale_ms = None;
    }
    if let Some(lag) = ctx.stale_ms {
        resp.insert_header(STALE, format!("{lag}ms"))?;
    }
    if let Some(done) = &ctx.repair {
        super::write::mark_repair(&mut resp, ctx, done)?;
    }
    if let Some(plan) = &mut ctx.shadow {
        plan.primary_status = resp.status.as_u16();
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if head_only {
        region_client::release(a.session, &a.peer, IDLE).await;
        return Ok(());
    }
    loop {
        match a.session.read_response_body().await {
            Ok(Some(chunk)) => session.write_response_body(Some(chunk), false).await?,
            Ok(None) => break,
            Err(e) => return Err(e),
        }
    }
    session.write_response_body(None, true).await?;
    region_client::release(a.session, &a.peer, IDLE).await;
    Ok(())
}
