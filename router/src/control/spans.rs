//! Span export over OTLP/HTTP (protobuf) with the OpenTelemetry SDK: one
//! server span per sampled request, with the routing decision as attributes,
//! and a client span per upstream attempt. The SDK's batch processor sends
//! them from its own thread; a collector that is slow or gone costs dropped
//! spans (the SDK bounds its queue), never a slower request.
//!
//! The ids are the ones the router already sent to the region in
//! `traceparent`, before any span is recorded. The SDK takes ids only from
//! its `IdGenerator`, so ours hands out the ids preset on the calling thread
//! just before a span starts (and random ones otherwise).

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracer,
    SdkTracerProvider,
};
use switchyard_config::Tracing;

thread_local! {
    static PRESET: Cell<(Option<TraceId>, Option<SpanId>)> = const { Cell::new((None, None)) };
}

/// Hands out the ids preset on this thread, once each; random ones otherwise.
#[derive(Debug, Default)]
struct PresetIds(RandomIdGenerator);

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        let (trace, span) = PRESET.with(Cell::get);
        PRESET.with(|p| p.set((None, span)));
        trace.unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        let (trace, span) = PRESET.with(Cell::get);
        PRESET.with(|p| p.set((trace, None)));
        span.unwrap_or_else(|| self.0.new_span_id())
    }
}

/// One upstream attempt, as a child span.
#[derive(Debug, Clone)]
pub(crate) struct AttemptSpan {
    pub(crate) span_id: [u8; 8],
    pub(crate) start: SystemTime,
    pub(crate) end: Option<SystemTime>,
    pub(crate) region: std::sync::Arc<str>,
    pub(crate) endpoint: Option<std::net::SocketAddr>,
    pub(crate) status: Option<u16>,
}

/// A finished request, as a server span.
pub(crate) struct RequestSpan {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) parent_id: Option<[u8; 8]>,
    pub(crate) name: String,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) error: bool,
    pub(crate) attempts: Vec<AttemptSpan>,
}

pub(crate) struct SpanExport {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl SpanExport {
    /// Builds the exporter; nothing is sent until a span ends.
    pub(crate) fn start(cfg: &Tracing) -> anyhow::Result<SpanExport> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.otlp.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| anyhow::anyhow!("tracing.otlp: {e}"))?;
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(500))
            .with_max_queue_size(8192)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_id_generator(PresetIds::default())
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("switchyard");
        Ok(SpanExport { provider, tracer })
    }

    /// Records a request's span and its attempts' spans.
    pub(crate) fn record(&self, req: RequestSpan) {
        let trace_id = TraceId::from_bytes(req.trace_id);
        let parent = match req.parent_id {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                SpanId::from_bytes(p),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        PRESET.with(|p| p.set((Some(trace_id), Some(SpanId::from_bytes(req.span_id)))));
        let mut span = self
            .tracer
            .span_builder(req.name)
            .with_kind(SpanKind::Server)
            .with_start_time(req.start)
            .with_attributes(req.attributes)
            .start_with_context(&self.tracer, &parent);
        if req.error {
            span.set_status(Status::error("the router answered with an error"));
        }
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        for a in req.attempts {
            PRESET.with(|p| p.set((None, Some(SpanId::from_bytes(a.span_id)))));
            let mut attrs = vec![KeyValue::new("switchyard.region", a.region.to_string())];
            if let Some(e) = a.endpoint {
                attrs.push(KeyValue::new("server.address", e.ip().to_string()));
                attrs.push(KeyValue::new("server.port", i64::from(e.port())));
            }
            if let Some(s) = a.status {
                attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
            }
            let mut child = self
                .tracer
                .span_builder("attempt")
                .with_kind(SpanKind::Client)
                .with_start_time(a.start)
                .with_attributes(attrs)
                .start_with_context(&self.tracer, &cx);
            if a.status.is_none() {
                child.set_status(Status::error("no answer from the region"));
            }
            child.end_with_timestamp(a.end.unwrap_or(req.end));
        }
        PRESET.with(|p| p.set((None, None)));
        span.end_with_timestamp(req.end);
    }

    /// Sends what is queued (at shutdown).
    pub(crate) fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "spans left unsent at shutdown");
        }
    }
}
