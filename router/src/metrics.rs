//! Prometheus metrics. Names start with `switchyard_`; counters end in
//! `_total`, durations in `_seconds`; labels stay low-cardinality (region,
//! class, status code).

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram, Counter, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchyard_config::{RegionName, RequestClass};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the global recorder; the handle renders the text format.
pub(crate) fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    metrics::describe_counter!(
        "switchyard_requests_total",
        "Requests answered, by region, class and status"
    );
    metrics::describe_histogram!(
        "switchyard_request_duration_seconds",
        "Time from request to response header, by region and class"
    );
    metrics::describe_counter!(
        "switchyard_upstream_errors_total",
        "Failed upstream attempts, by region and kind"
    );
    metrics::describe_counter!(
        "switchyard_retries_total",
        "Requests retried on another region, by the region that failed"
    );
    metrics::describe_counter!(
        "switchyard_repair_on_read_total",
        "Reads whose own write was missing on the partition's new owner, by what was done"
    );
    metrics::describe_counter!(
        "switchyard_concurrency_spilled_total",
        "Reads passed on to the next region because this one was at its concurrency limit"
    );
    metrics::describe_gauge!(
        "switchyard_panic_mode",
        "1 while too few of a service's regions are healthy and its reads ignore health"
    );
    metrics::describe_counter!(
        "switchyard_panic_reads_total",
        "Reads routed while their service was in panic mode (health ignored)"
    );
    metrics::describe_counter!(
        "switchyard_hedges_total",
        "Hedged reads by outcome: sent, denied_by_budget, first_won, hedge_won"
    );
    metrics::describe_gauge!(
        "switchyard_region_concurrency_limit",
        "A region's adaptive concurrency limit now"
    );
    metrics::describe_counter!(
        "switchyard_retries_denied_total",
        "Retries the retry budget refused"
    );
    metrics::describe_counter!(
        "switchyard_rejected_total",
        "Requests the router answered itself, by status"
    );
    metrics::describe_gauge!(
        "switchyard_region_healthy",
        "1 when at least one endpoint of the region is up"
    );
    metrics::describe_gauge!(
        "switchyard_region_replica_lag_seconds",
        "Replica lag the region reports"
    );
    metrics::describe_gauge!(
        "switchyard_region_dial_percent",
        "Share of its policy traffic the region takes"
    );
    metrics::describe_gauge!(
        "switchyard_region_drifted",
        "1 when the region departs from its Region Artifact"
    );
    metrics::describe_gauge!(
        "switchyard_region_probe_rtt_seconds",
        "Moving average of health probe round trips"
    );
    metrics::describe_counter!(
        "switchyard_rate_limited_total",
        "Requests a region's rate limit refused, by region and outcome (spilled to the next region, or rejected with 429)"
    );
    metrics::describe_gauge!(
        "switchyard_region_ejected",
        "1 while brownout detection keeps the region out of rotation for reads"
    );
    metrics::describe_counter!(
        "switchyard_ejections_total",
        "Brownout ejections, by region and reason (failures, error_rate, slow)"
    );
    metrics::describe_gauge!(
        "switchyard_region_draining",
        "1 while an operator drains the region"
    );
    metrics::describe_gauge!("switchyard_ramp_step", "Index of the step a ramp is at");
    metrics::describe_gauge!(
        "switchyard_ramp_state",
        "1 for the state a ramp is in, by ramp and state"
    );
    metrics::describe_counter!(
        "switchyard_ramp_halts_total",
        "Ramps halted by a gate, by ramp and gate"
    );
    metrics::describe_counter!(
        "switchyard_shadow_reads_total",
        "Reads mirrored to a ramping region, by result (match, status_mismatch, body_mismatch, error)"
    );
    metrics::describe_counter!(
        "switchyard_promotions_total",
        "Ownership promotions, by kind (manual, auto)"
    );
    metrics::describe_counter!(
        "switchyard_fenced_writes_total",
        "Writes a region refused with X-Fenced: this router's epoch was stale"
    );
    metrics::describe_counter!(
        "switchyard_client_cutoffs_total",
        "Client connections or requests cut off by a limit, by reason"
    );
    metrics::describe_counter!(
        "switchyard_client_abandoned_headers_total",
        "Client connections closed or reset partway through a request header"
    );
    metrics::describe_gauge!(
        "switchyard_idempotency_keys",
        "Idempotency keys the edge remembers now"
    );
    metrics::describe_counter!(
        "switchyard_idempotency_evictions_total",
        "Idempotency keys forgotten, by reason (expired after the window, or evicted at capacity)"
    );
    metrics::describe_counter!(
        "switchyard_admin_login_failures_total",
        "Requests to the admin API or /metrics with a missing or wrong bearer token"
    );
    metrics::describe_gauge!(
        "switchyard_client_connections",
        "Client connections open now"
    );
    metrics::describe_counter!(
        "switchyard_client_limited_total",
        "Requests refused with 429 because their client was over limits.per_client"
    );
    for (name, help) in [
        (
            "switchyard_dns_failures_total",
            "Upstream name lookups that failed (the last addresses are kept)",
        ),
        (
            "switchyard_oplog_errors_total",
            "Op log appends or syncs that failed",
        ),
        (
            "switchyard_oplog_gap_records_total",
            "Op log records cut from the NATS backlog past oplog.max_backlog_bytes",
        ),
        (
            "switchyard_oplog_nats_errors_total",
            "Failed attempts to forward op log records to NATS",
        ),
        (
            "switchyard_oplog_nats_forwarded_total",
            "Op log records forwarded to NATS JetStream",
        ),
        (
            "switchyard_oplog_records_total",
            "Op log records appended, by kind",
        ),
    ] {
        metrics::describe_counter!(name, help);
    }
    for (name, help) in [
        (
            "switchyard_oplog_nats_backlog_bytes",
            "Bytes of op log segments kept for records not yet forwarded to NATS",
        ),
        (
            "switchyard_oplog_nats_backlog_records",
            "Op log records not yet forwarded to NATS",
        ),
        (
            "switchyard_oplog_next_seq",
            "Sequence number the next op log record gets",
        ),
        (
            "switchyard_oplog_queued",
            "Op log records waiting for the writer",
        ),
        (
            "switchyard_region_websockets_open",
            "WebSocket connections open through the router, by region",
        ),
    ] {
        metrics::describe_gauge!(name, help);
    }
    metrics::describe_histogram!(
        "switchyard_oplog_sync_seconds",
        metrics::Unit::Seconds,
        "Time an op log fsync (or flush) took"
    );
    metrics::describe_gauge!(
        "switchyard_oplog_writable",
        "1 while the op log can write; 0 while writes are refused because it cannot"
    );
    metrics::describe_counter!(
        "switchyard_config_reloads_total",
        "Config reloads, by result"
    );
    metrics::describe_counter!(
        "switchyard_access_log_dropped_total",
        "Access log lines dropped, by reason (queue_full: the writer fell behind; write_failed; writer_stopped)"
    );
    metrics::describe_counter!(
        "switchyard_grpc_responses_total",
        "gRPC calls answered, by region and grpc-status (from the headers or the trailers)"
    );
    metrics::describe_counter!(
        "switchyard_upstream_connections_total",
        "Upstream connections requests used, by region and whether a pooled one was reused"
    );
}

pub(crate) fn class_label(class: RequestClass) -> &'static str {
    match class {
        RequestClass::Read => "read",
        RequestClass::Write => "write",
    }
}

/// Labels a status without allocating for the common ones.
pub(crate) fn status_label(status: u16) -> metrics::SharedString {
    match status {
        200 => "200".into(),
        201 => "201".into(),
        204 => "204".into(),
        304 => "304".into(),
        404 => "404".into(),
        429 => "429".into(),
        500 => "500".into(),
        502 => "502".into(),
        503 => "503".into(),
        other => other.to_string().into(),
    }
}

/// Statuses whose request counters are kept at hand; others are looked up.
const COMMON_STATUSES: [u16; 17] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504,
];

pub(crate) fn class_index(class: RequestClass) -> usize {
    match class {
        RequestClass::Read => 0,
        RequestClass::Write => 1,
    }
}

/// One region's request metrics, with handles kept after first use so that
/// the hot path does not build and hash label sets for every request.
pub(crate) struct RegionMetrics {
    region: SharedString,
    requests: [[OnceLock<Counter>; COMMON_STATUSES.len()]; 2],
    durations: [OnceLock<Histogram>; 2],
    /// Connections used: [new, reused].
    connections: [OnceLock<Counter>; 2],
}

impl RegionMetrics {
    pub(crate) fn new(region: &RegionName) -> Self {
        RegionMetrics {
            region: SharedString::from(region.0.clone()),
            requests: Default::default(),
            durations: Default::default(),
            connections: Default::default(),
        }
    }

    /// Counts a gRPC call's final status.
    pub(crate) fn grpc(&self, status: u16) {
        counter!("switchyard_grpc_responses_total", "region" => self.region.clone(), "grpc_status" => status_label(status)).increment(1);
    }

    /// Counts a connection an attempt went out on, new or reused from the pool.
    pub(crate) fn connection(&self, reused: bool) {
        self.connections[usize::from(reused)]
            .get_or_init(|| {
                counter!("switchyard_upstream_connections_total", "region" => self.region.clone(), "reused" => if reused { "true" } else { "false" })
            })
            .increment(1);
    }

    fn counter(&self, class: RequestClass, status: u16) -> Counter {
        counter!("switchyard_requests_total", "region" => self.region.clone(), "class" => class_label(class), "status" => status_label(status))
    }

    /// Counts one answered request and records its duration.
    pub(crate) fn request(&self, class: RequestClass, status: u16, secs: f64) {
        let c = class_index(class);
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.requests[c][i]
                .get_or_init(|| self.counter(class, status))
                .increment(1),
            None => self.counter(class, status).increment(1),
        }
        self.durations[c]
            .get_or_init(|| {
                histogram!("switchyard_request_duration_seconds", "region" => self.region.clone(), "class" => class_label(class))
            })
            .record(secs);
    }
}

pub(crate) fn access_log_dropped(reason: &'static str) {
    counter!("switchyard_access_log_dropped_total", "reason" => reason).increment(1);
}

pub(crate) fn rejected(status: u16) {
    counter!("switchyard_rejected_total", "status" => status_label(status)).increment(1);
}

pub(crate) fn upstream_error(region: &RegionName, kind: &'static str) {
    counter!("switchyard_upstream_errors_total", "region" => metrics::SharedString::from(region.0.clone()), "kind" => kind).increment(1);
}

pub(crate) fn retry(region: &RegionName) {
    counter!("switchyard_retries_total", "region" => metrics::SharedString::from(region.0.clone()))
        .increment(1);
}

/// A region refused a request over its rate limit: it went to the next
/// candidate (`spilled`) or, with none left, was answered 429 (`rejected`).
pub(crate) fn rate_limited(region: &RegionName, spilled: bool) {
    counter!("switchyard_rate_limited_total", "region" => metrics::SharedString::from(region.0.clone()), "outcome" => if spilled { "spilled" } else { "rejected" }).increment(1);
}

/// A client connection or request cut off by a limit, by reason
/// (`header_timeout`, `keepalive_timeout`, `body_timeout`, `max_connections`).
pub(crate) fn client_cutoff(reason: &'static str) {
    counter!("switchyard_client_cutoffs_total", "reason" => reason).increment(1);
}

/// A client closed or reset its connection partway through a request header.
pub(crate) fn client_abandoned_header() {
    counter!("switchyard_client_abandoned_headers_total").increment(1);
}

/// Client connections open now, and those refused at accept so far for
/// being over `limits.max_connections`.
pub(crate) fn client_connections(open: usize, refused: u64) {
    gauge!("switchyard_client_connections").set(open as f64);
    counter!("switchyard_client_cutoffs_total", "reason" => "max_connections").absolute(refused);
}

/// `n` idempotency keys forgotten, by reason (`expired`, `capacity`).
pub(crate) fn idempotency_evicted(reason: &'static str, n: u64) {
    counter!("switchyard_idempotency_evictions_total", "reason" => reason).increment(n);
}

/// Idempotency keys remembered now.
pub(crate) fn idempotency_keys(n: usize) {
    gauge!("switchyard_idempotency_keys").set(n as f64);
}

/// A request to the admin API (or `/metrics`) with a missing or wrong token.
pub(crate) fn admin_login_failed() {
    counter!("switchyard_admin_login_failures_total").increment(1);
}

/// A client over `limits.per_client`, answered 429.
pub(crate) fn client_limited() {
    counter!("switchyard_client_limited_total").increment(1);
}

pub(crate) fn retry_denied() {
    counter!("switchyard_retries_denied_total").increment(1);
}

pub(crate) fn reload(ok: bool) {
    counter!("switchyard_config_reloads_total", "result" => if ok { "ok" } else { "error" })
        .increment(1);
}

/// A region's state as its gauges show it.
pub(crate) struct RegionGauges {
    pub(crate) healthy: bool,
    pub(crate) lag_ms: u64,
    pub(crate) dial_percent: f64,
    pub(crate) ejected: bool,
    pub(crate) draining: bool,
    pub(crate) drifted: bool,
    pub(crate) probe_rtt: Option<f64>,
    pub(crate) websockets: usize,
}

pub(crate) fn region_gauges(name: &RegionName, g: RegionGauges) {
    let region = metrics::SharedString::from(name.0.clone());
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    gauge!("switchyard_region_healthy", "region" => region.clone()).set(flag(g.healthy));
    gauge!("switchyard_region_replica_lag_seconds", "region" => region.clone())
        .set(g.lag_ms as f64 / 1000.0);
    gauge!("switchyard_region_dial_percent", "region" => region.clone()).set(g.dial_percent);
    gauge!("switchyard_region_ejected", "region" => region.clone()).set(flag(g.ejected));
    gauge!("switchyard_region_draining", "region" => region.clone()).set(flag(g.draining));
    gauge!("switchyard_region_drifted", "region" => region.clone()).set(flag(g.drifted));
    gauge!("switchyard_region_websockets_open", "region" => region.clone())
        .set(g.websockets as f64);
    if let Some(rtt) = g.probe_rtt {
        gauge!("switchyard_region_probe_rtt_seconds", "region" => region).set(rtt);
    }
}

pub(crate) fn ejection(region: &RegionName, reason: &'static str) {
    counter!("switchyard_ejections_total", "region" => metrics::SharedString::from(region.0.clone()), "reason" => reason).increment(1);
}

pub(crate) fn shadow_read(region: &RegionName, result: &'static str) {
    counter!("switchyard_shadow_reads_total", "region" => metrics::SharedString::from(region.0.clone()), "result" => result).increment(1);
}

/// A ramp's step index and its state as a one-hot gauge over `states`.
pub(crate) fn ramp(name: &str, step: usize, state: &str, states: &[&'static str]) {
    let ramp = SharedString::from(name.to_string());
    gauge!("switchyard_ramp_step", "ramp" => ramp.clone()).set(step as f64);
    for s in states {
        gauge!("switchyard_ramp_state", "ramp" => ramp.clone(), "state" => *s)
            .set(if *s == state { 1.0 } else { 0.0 });
    }
}

pub(crate) fn ramp_halt(name: &str, gate: &'static str) {
    counter!("switchyard_ramp_halts_total", "ramp" => SharedString::from(name.to_string()), "gate" => gate).increment(1);
}

pub(crate) fn promotion(kind: &'static str) {
    counter!("switchyard_promotions_total", "kind" => kind).increment(1);
}

/// 1 while the op log can write, 0 while writes are refused for it.
pub(crate) fn oplog_writable(writable: bool) {
    gauge!("switchyard_oplog_writable").set(if writable { 1.0 } else { 0.0 });
}

/// A write the owner refused as fenced: this router's view of ownership was stale.
/// A read whose own write was missing on its partition's new owner, by what
/// was done: `replayed`, `flagged` (served marked), `failed` (a replay that
/// did not take; served marked).
pub(crate) fn repair_on_read(result: &'static str) {
    counter!("switchyard_repair_on_read_total", "result" => result).increment(1);
}

/// A read passed on from a region at its concurrency limit.
pub(crate) fn concurrency_spill(region: &RegionName) {
    counter!("switchyard_concurrency_spilled_total", "region" => metrics::SharedString::from(region.0.clone())).increment(1);
}

/// A service entering (1) or leaving (0) panic mode.
pub(crate) fn panic_mode(service: &str, on: bool) {
    gauge!("switchyard_panic_mode", "service" => service.to_string()).set(f64::from(u8::from(on)));
}

/// A read served while its service was in panic mode.
pub(crate) fn panic_read() {
    counter!("switchyard_panic_reads_total").increment(1);
}

/// A hedged read, by outcome: `sent`, `denied_by_budget`, `first_won`, `hedge_won`.
pub(crate) fn hedge(outcome: &'static str) {
    counter!("switchyard_hedges_total", "outcome" => outcome).increment(1);
}

/// A region's adaptive concurrency limit.
pub(crate) fn concurrency_limit(region: &RegionName, limit: usize) {
    gauge!("switchyard_region_concurrency_limit", "region" => metrics::SharedString::from(region.0.clone())).set(limit as f64);
}

pub(crate) fn fenced() {
    counter!("switchyard_fenced_writes_total").increment(1);
}
