//! gRPC through the router: h2c from the client, HTTP/2 to the region,
//! messages and trailers intact, `grpc-status` counted, `grpc-timeout` the
//! call's deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_region::grpc::{frame, messages, STREAM, UNARY};

use crate::support::*;

/// What a call got back.
#[derive(Debug)]
pub struct Call {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub messages: Vec<Bytes>,
    pub trailers: Option<http::HeaderMap>,
    /// The stream broke before it ended (reset).
    pub broken: bool,
}

impl Call {
    /// `grpc-status` from the trailers, or the headers of a trailers-only answer.
    pub fn grpc_status(&self) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// One call over h2c (prior knowledge) to `addr`.
pub async fn call(addr: SocketAddr, path: &str, metadata: &[(&str, &str)], message: &[u8]) -> Call {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in metadata {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(frame(message))).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("answered in time")
        .expect("call");
    let (parts, mut body) = resp.into_parts();
    let (mut data, mut trailers, mut broken) = (Vec::new(), None, false);
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            },
            Some(Err(_)) => {
                broken = true;
                break;
            }
        }
    }
    Call {
        status: parts.status.as_u16(),
        headers: parts.headers,
        messages: messages(&data).unwrap_or_default(),
        trailers,
        broken,
    }
}

/// A router with h2c on its plain listener, in front of region `a` spoken
/// to over h2c; the echo service's methods are reads.
fn grpc_router(a: &TestRegion) -> Router {
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}routes:\n  \"/switchyard.test.Echo/\": {{ service: api, class: read }}\nrouting:\n  policy: weighted\n",
        header(&dir).replace(
            "listen: { http: 127.0.0.1:0 }",
            "listen: { http: 127.0.0.1:0, h2c: true }"
        ),
        region_yaml("a", a.addr, "    protocol: h2\n")
    );
    Router::start_in(dir, &cfg)
}

#[tokio::test(flavor = "multi_thread")]
async fn unary_and_server_streaming_calls_keep_their_messages_and_trailers() {
    let a = region("a").await;
    let router = grpc_router(&a);
    router.wait_healthy("a", true).await;

    let unary = call(router.http, UNARY, &[], b"hello").await;
    assert_eq!(unary.status, 200, "{unary:?}");
    assert_eq!(unary.messages, vec![Bytes::from("hello")]);
    assert_eq!(unary.grpc_status().as_deref(), Some("0"), "{unary:?}");
    assert!(
        unary.trailers.is_some(),
        "the status came in trailers: {unary:?}"
    );
    assert_eq!(served_by_headers(&unary.headers), "a");

    let stream = call(router.http, STREAM, &[("x-stream-count", "5")], b"tick").await;
    assert_eq!(stream.messages.len(), 5, "{stream:?}");
    assert!(stream.messages.iter().all(|m| m == "tick"));
    assert_eq!(stream.grpc_status().as_deref(), Some("0"));

    let failed = call(router.http, UNARY, &[("x-grpc-status", "5")], b"x").await;
    assert_eq!(failed.grpc_status().as_deref(), Some("5"));
    let failed_message = failed
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-message"))
        .cloned();
    assert!(failed_message.is_some(), "{failed:?}");

    let m = router.metrics_text().await;
    let ok = metric(
        &m,
        "switchyard_grpc_responses_total{region=\"a\",grpc_status=\"0\"}",
    );
    let not_found = metric(
        &m,
        "switchyard_grpc_responses_total{region=\"a\",grpc_status=\"5\"}",
    );
    assert_eq!((ok, not_found), (2.0, 1.0), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_timeout_is_the_calls_deadline() {
    let a = region("a").await;
    let router = grpc_router(&a);
    router.wait_healthy("a", true).await;

    // The region is told what is left of the deadline.
    let quick = call(router.http, UNARY, &[("grpc-timeout", "2S")], b"x").await;
    assert_eq!(quick.grpc_status().as_deref(), Some("0"));
    let left = a
        .last_header("grpc-timeout")
        .expect("the region got a grpc-timeout");
    let ms: u64 = left.trim_end_matches('m').parse().expect("milliseconds");
    assert!((1000..=2000).contains(&ms), "{left}");

    // A region slower than the deadline: DEADLINE_EXCEEDED, on time.
    a.set("delay", serde_json::json!(600)).await;
    let started = Instant::now();
    let late = call(router.http, UNARY, &[("grpc-timeout", "150m")], b"x").await;
    let took = started.elapsed();
    assert_eq!(late.status, 200, "{late:?}");
    assert_eq!(late.grpc_status().as_deref(), Some("4"), "{late:?}");
    assert!(took < Duration::from_millis(500), "answered after {took:?}");
    a.set("delay", serde_json::json!(0)).await;

    // A stream that would outlive its deadline is cut at it.
    let started = Instant::now();
    let cut = call(
        router.http,
        STREAM,
        &[
            ("grpc-timeout", "300m"),
            ("x-stream-count", "100"),
            ("x-stream-gap-ms", "20"),
        ],
        b"tick",
    )
    .await;
    let took = started.elapsed();
    assert!(cut.messages.len() < 100, "{} messages", cut.messages.len());
    assert!(
        cut.broken || cut.grpc_status().as_deref() == Some("4"),
        "{cut:?}"
    );
    assert!(took < Duration::from_millis(1500), "cut after {took:?}");
}

/// The region an answer's headers name.
fn served_by_headers(h: &http::HeaderMap) -> String {
    h.get("x-switchyard-region")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}
