use serde_json::Value;
use std::time::Duration;

use crate::support::*;

fn one_region(a: &TestRegion, dir: &TempDir) -> String {
    format!(
        "{}regions:\n{}routing:\n  policy: weighted\ntrusted_proxies: [\"127.0.0.5\"]\n",
        header(dir),
        region_yaml("a", a.addr, "")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn client_headers_are_cleaned_and_forwarding_headers_set() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir);
    let router = Router::start_in(dir, &cfg);
    let resp = reqwest::Client::new()
        .get(router.url("/_echo"))
        .header("X-Switchyard-Region", "forged")
        .header("X-Switchyard-Anything", "forged")
        .header("X-Fencing-Token", "99")
        .header("X-Switchyard-Ryw", "ryw-token")
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.headers()["x-switchyard-region"], "a");
    let echo: Value = resp.json().await.expect("json");
    let headers: Vec<(String, String)> =
        serde_json::from_value(echo["headers"].clone()).expect("pairs");
    let get = |name: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert!(get("x-switchyard-region").is_empty(), "{headers:?}");
    assert!(get("x-switchyard-anything").is_empty(), "{headers:?}");
    assert!(get("x-fencing-token").is_empty(), "{headers:?}");
    assert_eq!(get("x-switchyard-ryw"), vec!["ryw-token"]);
    // 127.0.0.1 is no trusted proxy: its X-Forwarded-For is dropped.
    assert_eq!(get("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(get("x-request-id").len(), 1);
    // A client's own request id is kept.
    let echo: Value = reqwest::Client::new()
        .get(router.url("/_echo"))
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(echo["headers"].to_string().contains("abc-123"));
    // Names are the same names in any case: the router's own are stripped and
    // the client's request id kept, however the client spells them.
    let (code, text) = raw(
        router.http,
        b"GET /_echo HTTP/1.1\r\nHost: a\r\nX-SWITCHYARD-REGION: forged\r\nx-Fencing-TOKEN: 99\r\n\
          X-REQUEST-ID: Case-Kept-Id\r\nX-Forwarded-FOR: 203.0.113.9\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200, "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(
        body.contains(r#"["x-request-id","Case-Kept-Id"]"#),
        "{body}"
    );
    assert_eq!(body.matches("x-request-id").count(), 1, "{body}");
    assert!(
        body.contains(r#"["x-forwarded-for","127.0.0.1"]"#),
        "{body}"
    );
    assert!(
        !body.contains("forged") && !body.contains("x-fencing-token"),
        "{body}"
    );
    // A trusted proxy's X-Forwarded-For is appended to.
    let echo: Value = client_from("127.0.0.5")
        .get(router.url("/_echo"))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(
        echo["headers"]
            .to_string()
            .contains(r#"["x-forwarded-for","203.0.113.9, 127.0.0.5"]"#),
        "{echo}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn header_limits_answer_431() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir);
    let router = Router::start_in(dir, &cfg);
    let mut many = String::from("GET /kv/x HTTP/1.1\r\nHost: t\r\n");
    for i in 0..101 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(raw(router.http, many.as_bytes()).0, 431);
    let big = format!(
        "GET /kv/x HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    assert_eq!(raw(router.http, big.as_bytes()).0, 431);
    let fine = "GET /kv/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(router.http, fine.as_bytes()).0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_framing_is_refused_and_never_forwarded() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir);
    let router = Router::start_in(dir, &cfg);
    let before = a.requests();
    let smuggle = "POST /kv/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /kv/y HTTP/1.1\r\nHost: t\r\n\r\n";
    let (code, text) = raw(router.http, smuggle.as_bytes());
    assert_eq!(code, 400, "{text}");
    assert_eq!(
        text.matches("HTTP/1.1").count(),
        1,
        "only one answer: {text}"
    );
    let two =
        "POST /kv/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    assert_eq!(raw(router.http, two.as_bytes()).0, 400);
    assert_eq!(a.requests(), before, "nothing reached the region");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_freshness_header_is_a_400_with_a_reason() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir);
    let router = Router::start_in(dir, &cfg);
    let resp = reqwest::Client::new()
        .get(router.url("/kv/x"))
        .header("X-Freshness", "eventually")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
    let body = resp.text().await.expect("body");
    assert!(body.contains("X-Freshness must name a class"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_and_connection_rules_of_http_1_1() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir);
    let router = Router::start_in(dir, &cfg);
    let before = a.requests();
    let cases = [
        ("GET /kv/x HTTP/1.1\r\n\r\n", "without a Host header"),
        (
            "GET /kv/x HTTP/1.1\r\nHost: a\r\nConnection: x-fencing-token\r\n\r\n",
            "Connection names x-fencing-token",
        ),
        (
            "PUT /kv/x HTTP/1.1\r\nHost: a\r\nConnection: close, Idempotency-Key\r\nContent-Length: 1\r\n\r\nv",
            "Connection names idempotency-key",
        ),
    ];
    for (request, reason) in cases {
        let (code, text) = raw(router.http, request.as_bytes());
        assert_eq!(code, 400, "{request:?}: {text}");
        assert!(text.contains(reason), "{request:?}: {text}");
    }
    // Two Hosts: pingora's parser refuses it before any phase of ours (400
    // without a reason); either way it never reaches the region.
    let (code, text) = raw(
        router.http,
        b"GET /kv/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    );
    assert_eq!(code, 400, "{text}");
    assert_eq!(a.requests(), before, "none reached the region");
    // HTTP/1.0 needs no Host.
    assert_eq!(raw(router.http, b"GET /kv/x HTTP/1.0\r\n\r\n").0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_are_never_forwarded() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir);
    let router = Router::start_in(dir, &cfg);
    let (code, text) = raw(
        router.http,
        b"GET /_echo HTTP/1.1\r\nHost: a\r\nConnection: x-debug, close\r\nX-Debug: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: websocket\r\nTE: gzip\r\nX-Kept: yes\r\n\r\n",
    );
    assert_eq!(code, 200, "{text}");
    let body = text.to_lowercase();
    for gone in [
        "\"x-debug\"",
        "\"keep-alive\"",
        "\"proxy-connection\"",
        "\"upgrade\"",
        "\"te\"",
    ] {
        assert!(!body.contains(gone), "{gone} forwarded: {text}");
    }
    assert!(body.contains(r#"["x-kept","yes"]"#), "{text}");
}

/// A chunked `PUT` of `body` in 1 KiB chunks, with an idempotency key.
fn chunked_put(path: &str, key: &str, body: &str) -> String {
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nIdempotency-Key: {key}\r\nConnection: close\r\n\r\n"
    );
    for piece in body.as_bytes().chunks(1024) {
        req.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            String::from_utf8_lossy(piece)
        ));
    }
    req.push_str("0\r\n\r\n");
    req
}

/// Chunked writes are read ahead like any other: broken framing is a 400
/// that never reaches the region, a small body arrives and is logged whole,
/// and one past the read-ahead streams on intact.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_writes_are_read_ahead_and_broken_framing_never_leaves_the_edge() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir);
    let router = Router::start_in(dir, &cfg);
    let before = a.requests();
    for broken in [
        "PUT /kv/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        "PUT /kv/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
        "PUT /kv/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
    ] {
        let (code, text) = raw(router.http, broken.as_bytes());
        assert_eq!(code, 400, "{broken:?}: {text}");
        assert!(text.contains("chunked framing"), "{text}");
    }
    assert_eq!(a.requests(), before, "nothing reached the region");
    // A small chunked write: whole at the region, and whole in the op log.
    let (code, _) = raw(
        router.http,
        b"PUT /kv/small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nIdempotency-Key: c1\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(code, 201);
    let stored = |key: &'static str| {
        let url = router.url(&format!("/kv/{key}"));
        async move {
            let v: Value = reqwest::get(url)
                .await
                .expect("read")
                .json()
                .await
                .expect("json");
            v["value"].as_str().unwrap_or("").to_string()
        }
    };
    assert_eq!(stored("small").await, "hello world");
    // 100 KiB in 1 KiB chunks: past the read-ahead, streamed on, intact.
    let big: String = (0..100 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let req = chunked_put("/kv/big", "c2", &big);
    let (code, text) = raw(router.http, req.as_bytes());
    assert_eq!(code, 201, "{text}");
    assert_eq!(stored("big").await, big);
    // The op log kept the small body in the intent, ahead of forwarding.
    // (The log is written a moment after the record is queued: the test
    // polls for it.)
    let small_intent = Some(switchyard_oplog::Body::Inline(b"hello world".to_vec()));
    eventually(Duration::from_secs(5), || {
        let logged = logged_intent_body(&router, "/kv/small");
        async move { logged.is_some() }
    })
    .await;
    assert_eq!(logged_intent_body(&router, "/kv/small"), small_intent);
    // The streamed one is kept whole in its outcome, the read-ahead part
    // included. The outcome is recorded once the answer has gone out.
    let big_outcome_body = || {
        oplog_records(&router)
            .into_iter()
            .filter_map(|r| match r {
                switchyard_oplog::Record::Outcome(o) => o.body,
                _ => None,
            })
            .next_back()
    };
    eventually(Duration::from_secs(5), || {
        let logged = big_outcome_body();
        async move { logged.is_some() }
    })
    .await;
    assert_eq!(
        big_outcome_body(),
        Some(switchyard_oplog::Body::Inline(big.clone().into_bytes()))
    );

    // The same key again, the same length, other bytes in the first 64 KiB:
    // another payload (422), not taken for the same write.
    let other: String = big.chars().rev().collect();
    let again = chunked_put("/kv/big", "c2", &other);
    let before = a.requests();
    let (code, text) = raw(router.http, again.as_bytes());
    assert_eq!(code, 422, "{text}");
    assert!(
        text.contains("was used for a different request"),
        "the edge's own: {text}"
    );
    assert_eq!(a.requests(), before, "refused at the edge");
    assert_eq!(stored("big").await, big);
    // 100 KiB with a Content-Length: read ahead the same way, forwarded whole.
    let mut sized = format!(
        "PUT /kv/sized HTTP/1.1\r\nHost: a\r\nIdempotency-Key: c3\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        other.len()
    );
    sized.push_str(&other);
    let (code, text) = raw(router.http, sized.as_bytes());
    assert_eq!(code, 201, "{text}");
    assert_eq!(stored("sized").await, other);
}
