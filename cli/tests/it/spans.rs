//! Spans over OTLP/HTTP: a receiver started here gets the request's span,
//! with the decision as attributes and a child span per attempt whose id is
//! the parent the region saw in `traceparent`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::support::*;

type Received = Arc<Mutex<Vec<Span>>>;

async fn collect(State(got): State<Received>, body: Bytes) -> &'static str {
    if let Ok(req) = ExportTraceServiceRequest::decode(body) {
        let spans = req
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        got.lock().expect("lock").extend(spans);
    }
    ""
}

/// An OTLP/HTTP traces receiver on a free port: its URL and what it got.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(collect))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1/traces"), got)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(|v| format!("{:?}", v.value))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sampled_request_is_exported_with_its_attempt_as_the_regions_parent() {
    let a = region("a").await;
    let (url, got) = receiver().await;
    let dir = TempDir::new();
    let top = format!("tracing: {{ otlp: \"{url}\", sample: 1, service_name: edge-test }}\n");
    let cfg = one_region(&dir, &top, &a);
    let router = Router::start_in(dir, &cfg);
    router.wait_healthy("a", true).await;

    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = reqwest::Client::new()
        .get(router.url("/_echo/traced"))
        .header("traceparent", parent)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let seen = a
        .last_header("traceparent")
        .expect("the region saw a traceparent");
    let attempt_id = seen.split('-').nth(2).expect("parent id").to_string();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    eventually(Duration::from_secs(10), || async {
        got.lock()
            .expect("lock")
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .count()
            >= 2
    })
    .await;
    let spans: Vec<Span> = got
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| hex(&s.trace_id) == trace)
        .cloned()
        .collect();
    let server = spans
        .iter()
        .find(|s| s.name == "GET /_echo/traced")
        .expect("the request's span");
    assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
    assert!(
        attr(server, "switchyard.region").contains("\"a\""),
        "{server:?}"
    );
    assert!(attr(server, "switchyard.rule").contains("weighted"));
    assert!(attr(server, "http.response.status_code").contains("200"));
    let attempt = spans
        .iter()
        .find(|s| s.name == "attempt")
        .expect("the attempt's span");
    assert_eq!(
        hex(&attempt.span_id),
        attempt_id,
        "the region's parent is the attempt"
    );
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert!(attempt.end_time_unix_nano >= attempt.start_time_unix_nano);
}
