//! Request smuggling, black-box: every vector goes to the real router in
//! front of a strict upstream that re-parses each forwarded byte. Nothing
//! may reach the upstream that it does not parse as exactly the request
//! intended, and every required refusal is a 400 (HTTP/1.1) or a refused
//! stream (HTTP/2). Then the HTTP/2 floods: the flooding connection is cut
//! and the router keeps serving.

use std::time::Duration;

use switchyard_hostile::strict::StrictUpstream;
use switchyard_hostile::{desync, floods, h2raw};

use crate::support::*;

/// A router with plain and TLS listeners in front of one strict upstream.
async fn strict_router() -> (Router, StrictUpstream) {
    let upstream = StrictUpstream::start("/health").await.expect("upstream");
    let router = tls_router_to("strict", upstream.addr);
    router.wait_healthy("strict", true).await;
    (router, upstream)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_http1_vector_reaches_the_upstream_as_anything_but_what_was_meant() {
    let (router, upstream) = strict_router().await;
    let vectors = desync::vectors();
    assert!(vectors.len() >= 25, "{} vectors", vectors.len());
    let mut failures = Vec::new();
    for v in &vectors {
        let outcome = desync::run(router.http, &upstream, v).await;
        if let Some(why) = outcome.failure {
            failures.push(format!("{}: {why}", v.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Anything arriving late (a smuggled request behind a refused one) is
    // caught here: the upstream's whole record, after every vector.
    assert_eq!(upstream.violations(), Vec::<String>::new());
    let intended = upstream
        .requests()
        .iter()
        .filter(|r| r.target == "/smuggled")
        .count();
    assert_eq!(intended, 0, "a smuggled request reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_h2_vector_is_forwarded() {
    let (router, upstream) = strict_router().await;
    let tls = router.https.expect("https");
    // The connection works for a well-formed request first.
    let ok = h2raw::H2Vector {
        name: "well formed",
        frames: h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            1,
            &h2raw::block(&h2raw::request(b"GET", b"/fine", b"localhost")),
        ),
    };
    assert_eq!(
        h2raw::run(tls, &ok).await.expect("h2"),
        h2raw::Reply::Status(Some(200))
    );
    let before = upstream.requests().len();
    let mut failures = Vec::new();
    for v in h2raw::vectors("localhost") {
        let reply = h2raw::run(tls, &v).await.expect("h2 connection");
        if !reply.is_refusal() {
            failures.push(format!("{}: {reply:?}", v.name));
        }
    }
    let forwarded: Vec<_> = upstream.requests().split_off(before);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(forwarded.is_empty(), "forwarded: {forwarded:?}");
    assert_eq!(upstream.violations(), Vec::<String>::new());
}

/// Each flood runs a bounded two seconds on four connections; afterwards the
/// router still answers, and what the flood could not be allowed to do
/// (an unending header block, a header list past the limit) ended its
/// connection.
#[tokio::test(flavor = "multi_thread")]
async fn h2_floods_are_cut_off_and_the_router_keeps_serving() {
    let (router, _upstream) = strict_router().await;
    let tls = router.https.expect("https");
    for name in floods::FLOODS {
        let report = floods::measured(
            name,
            tls,
            router.http,
            "/fresh",
            router.pid() as u32,
            Duration::from_secs(2),
        )
        .await;
        println!("{report:?}");
        assert!(report.frames_sent > 0, "{name} never started: {report:?}");
        assert!(
            floods::fresh_get(router.http, "/after").is_some(),
            "{name}: the router stopped answering"
        );
        assert!(report.fresh.requests > 0, "{name}: {report:?}");
        if matches!(name, "CONTINUATION" | "HPACK bomb") {
            assert!(
                report.reaction.contains("GOAWAY") || report.reaction.contains("closed"),
                "{name} was not cut off: {report:?}"
            );
        }
    }
}

/// A write past the read-ahead streams on to the region; when its chunked
/// body breaks mid-way the upstream request is aborted, so the region never
/// sees a complete request, and the client gets a 400.
#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_body_that_breaks_mid_way_never_completes_at_the_region() {
    let (router, upstream) = strict_router().await;
    let mut req = String::from(
        "PUT /kv/streamed HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nIdempotency-Key: s1\r\n\r\n",
    );
    let piece = "x".repeat(1024);
    for _ in 0..100 {
        req.push_str(&format!("400\r\n{piece}\r\n"));
    }
    req.push_str("zz\r\nbroken\r\n0\r\n\r\n");
    let before = upstream.requests().len();
    let answer = tokio::task::spawn_blocking({
        let addr = router.http;
        move || switchyard_hostile::desync::send(addr, req.as_bytes())
    })
    .await
    .expect("task")
    .expect("send");
    assert_eq!(answer.statuses.first(), Some(&400), "{}", answer.text);
    eventually(Duration::from_secs(5), || async {
        upstream.truncated() >= 1
    })
    .await;
    assert_eq!(upstream.requests().len(), before, "no complete request");
    assert_eq!(upstream.violations(), Vec::<String>::new());
}
