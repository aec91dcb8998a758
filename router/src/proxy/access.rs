//! A request's access log line and trace context, from what the phases saw.

use std::borrow::Cow;

use pingora::proxy::Session;
use switchyard_config::RequestClass;

use crate::control::spans::{AttemptSpan, RequestSpan};
use crate::metrics::class_label;
use crate::proxy::ctx::Ctx;
use crate::route::fields::{self, Fields};
use crate::route::headers::REQUEST_ID;
use crate::route::ids;
use crate::route::trace::TraceContext;
use crate::store::access_log::{rfc3339_ms, AccessEntry, Decision};

/// Starts the request's trace: the client's continued, else a new one.
pub(super) fn start_trace(session: &Session, ctx: &mut Ctx) {
    let incoming = Fields::with(&session.req_header().headers, ctx.present)
        .get(fields::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    let sample = ctx.topo.config.tracing.as_ref().map_or(0.0, |t| t.sample);
    ctx.seen.trace = Some(TraceContext::start(incoming, sample, ids::random_u64));
}

/// The `traceparent` for a new attempt: a child span of the request's.
pub(super) fn attempt_traceparent(ctx: &mut Ctx) -> Option<http::HeaderValue> {
    let trace = ctx.seen.trace?;
    let mut span = ids::random_u64().to_be_bytes();
    if span == [0; 8] {
        span[7] = 1;
    }
    ctx.seen.attempt_span = Some(span);
    Some(trace.header_for(span))
}

/// How the router chose: `refused` when it answered itself, `owner` for a
/// write (pinned), else the read policy's name.
fn rule(ctx: &Ctx, refused: bool) -> &'static str {
    match (refused, ctx.class) {
        (true, _) => "refused",
        (false, RequestClass::Write) => "owner",
        (false, RequestClass::Read) => ctx.topo.config.routing.policy.as_str(),
    }
}

/// The access log entry for a finished request.
pub(super) fn entry(
    session: &Session,
    ctx: &Ctx,
    refused: Option<Cow<'static, str>>,
    error: Option<&pingora::Error>,
    include_query: bool,
) -> AccessEntry {
    let req = session.req_header();
    let path = if include_query {
        req.uri.path_and_query().map_or("/", |p| p.as_str())
    } else {
        req.uri.path()
    };
    let elapsed = ctx.started.elapsed();
    let started_ms = switchyard_oplog::unix_ms().saturating_sub(elapsed.as_millis() as u64);
    let rule = rule(ctx, refused.is_some());
    let fallback = if ctx.stale_ms.is_some() {
        Some("stale")
    } else if ctx.seen.waited {
        Some("wait")
    } else {
        None
    };
    AccessEntry {
        time: rfc3339_ms(started_ms),
        request_id: req
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        trace_id: ctx.seen.trace.map(|t| t.trace_id_hex()),
        client: ctx
            .seen
            .client
            .unwrap_or_else(|| crate::proxy::respond::client_ip(session)),
        method: req.method.as_str().to_string(),
        path: path.to_string(),
        protocol: if session.is_http2() {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        },
        status: session.response_written().map_or(0, |r| r.status.as_u16()),
        bytes_in: session.body_bytes_read(),
        bytes_out: session.body_bytes_sent(),
        duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        upstream_ms: ctx.seen.upstream_ms,
        region: ctx
            .region
            .map(|i| ctx.topo.regions[i as usize].spec.name.0.clone()),
        endpoint: ctx.addr,
        class: class_label(ctx.class),
        freshness_ms: ctx.seen.freshness_ms,
        partition: ctx.partition.clone(),
        epoch: (ctx.class == RequestClass::Write && ctx.epoch > 0).then_some(ctx.epoch),
        decision: Decision {
            rule,
            fallback,
            retries: u8::from(ctx.retried),
            synthetic: ctx.synthetic,
            ryw: ctx.seen.ryw_used,
            reason: refused.map(Cow::into_owned),
        },
        idempotency: ctx.seen.idempotency,
        grpc_status: ctx.seen.grpc_status,
        error: error.map(|e| e.to_string()),
    }
}

/// Opens the span of the attempt whose `traceparent` was just sent (sampled
/// requests only); the one before it, if any, ends now.
pub(super) fn begin_attempt_span(ctx: &mut Ctx) {
    let (Some(trace), Some(span_id), Some(idx)) =
        (ctx.seen.trace, ctx.seen.attempt_span, ctx.region)
    else {
        return;
    };
    if !trace.sampled {
        return;
    }
    let now = std::time::SystemTime::now();
    if let Some(last) = ctx.seen.attempt_spans.last_mut() {
        last.end.get_or_insert(now);
    }
    ctx.seen.attempt_spans.push(AttemptSpan {
        span_id,
        start: now,
        end: None,
        region: ctx.topo.regions[idx as usize].spec.name.0.clone(),
        endpoint: ctx.addr,
        status: None,
    });
}

/// The request's server span, with the decision as attributes; `None` when
/// the request is not sampled.
pub(super) fn request_span(
    session: &Session,
    ctx: &mut Ctx,
    refused: bool,
    failed: bool,
) -> Option<RequestSpan> {
    use opentelemetry::KeyValue;
    let trace = ctx.seen.trace.filter(|t| t.sampled)?;
    let req = session.req_header();
    let end = std::time::SystemTime::now();
    let start = end - ctx.started.elapsed();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let mut attributes = vec![
        KeyValue::new("http.request.method", req.method.as_str().to_string()),
        KeyValue::new("url.path", req.uri.path().to_string()),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("switchyard.class", class_label(ctx.class)),
        KeyValue::new("switchyard.retries", i64::from(u8::from(ctx.retried))),
        KeyValue::new("switchyard.synthetic", ctx.synthetic),
        KeyValue::new("switchyard.ryw", ctx.seen.ryw_used),
    ];
    let rule = rule(ctx, refused);
    attributes.push(KeyValue::new("switchyard.rule", rule));
    if let Some(idx) = ctx.region {
        let name = ctx.topo.regions[idx as usize].spec.name.to_string();
        attributes.push(KeyValue::new("switchyard.region", name));
    }
    if let Some(p) = &ctx.partition {
        attributes.push(KeyValue::new("switchyard.partition", p.clone()));
        attributes.push(KeyValue::new("switchyard.epoch", ctx.epoch as i64));
    }
    if let Some(ms) = ctx.seen.freshness_ms {
        attributes.push(KeyValue::new("switchyard.freshness_ms", ms as i64));
    }
    if let Some(lag) = ctx.stale_ms {
        attributes.push(KeyValue::new("switchyard.stale_ms", lag as i64));
    }
    if let Some(g) = ctx.seen.grpc_status {
        attributes.push(KeyValue::new("rpc.grpc.status_code", i64::from(g)));
    }
    Some(RequestSpan {
        trace_id: trace.trace_id,
        span_id: trace.span_id,
        parent_id: trace.parent_id,
        name: format!("{} {}", req.method, req.uri.path()),
        start,
        end,
        attributes,
        error: failed || status >= 500,
        attempts: std::mem::take(&mut ctx.seen.attempt_spans),
    })
}
