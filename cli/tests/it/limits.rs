//! Client limits: idle keep-alive connections, stalled bodies, requests per
//! connection and per-client rates, each cut off as configured.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

fn one_region(a: &TestRegion, dir: &TempDir, limits: &str) -> String {
    format!(
        "{}regions:\n{}routing:\n  policy: weighted\nlimits: {limits}\n",
        header(dir),
        region_yaml("a", a.addr, "")
    )
}

/// Reads one HTTP/1.1 answer with a Content-Length body; its status.
fn read_answer(s: &mut TcpStream) -> Option<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).to_lowercase();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(status)
}

/// Waits for the server to close `s`; how long that took.
fn closed_after(s: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => started.elapsed(),
        Ok(n) => panic!("unexpected {n} bytes: {:?}", &buf[..n]),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => started.elapsed(),
        Err(e) => panic!("still open after {limit:?}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keepalive_connection_is_closed_after_its_timeout() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir, "{ keepalive_timeout: 1s }");
    let router = Router::start_in(dir, &cfg);
    let mut s = TcpStream::connect(router.http).expect("connect");
    s.write_all(b"GET /kv/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    assert_eq!(read_answer(&mut s), Some(404));
    let idle = closed_after(&mut s, Duration::from_secs(5));
    assert!(idle < Duration::from_millis(2500), "closed after {idle:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_is_answered_408_and_never_forwarded() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir, "{ body_timeout: 1s }");
    let router = Router::start_in(dir, &cfg);
    let before = a.requests();
    let mut s = TcpStream::connect(router.http).expect("connect");
    s.write_all(b"PUT /kv/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten..")
        .expect("write");
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(read_answer(&mut s), Some(408));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.requests(), before, "the region saw nothing");
    let metrics = router.metrics_text().await;
    assert!(
        metrics.contains("switchyard_client_cutoffs_total{reason=\"body_timeout\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_carries_at_most_max_requests_per_connection() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir, "{ max_requests_per_connection: 3 }");
    let router = Router::start_in(dir, &cfg);
    let mut s = TcpStream::connect(router.http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answered = 0;
    for _ in 0..5 {
        if s.write_all(b"GET /kv/x HTTP/1.1\r\nHost: a\r\n\r\n")
            .is_err()
        {
            break;
        }
        match read_answer(&mut s) {
            Some(404) => answered += 1,
            _ => break,
        }
    }
    assert_eq!(answered, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_over_its_rate_gets_429_and_others_are_served() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir, "{ per_client: { rps: 2, burst: 5 } }");
    let router = Router::start_in(dir, &cfg);
    let url = router.url("/kv/x");
    let greedy = client_from("127.0.0.7");
    let mut limited = 0;
    let mut retry_after = None;
    for _ in 0..20 {
        let resp = greedy.get(&url).send().await.expect("request");
        if resp.status().as_u16() == 429 {
            limited += 1;
            retry_after = resp.headers().get("retry-after").cloned();
        }
    }
    assert!((14..=15).contains(&limited), "{limited} of 20 refused");
    assert_eq!(retry_after.expect("Retry-After"), "1");
    let other = client_from("127.0.0.8");
    for _ in 0..5 {
        let status = other.get(&url).send().await.expect("request").status();
        assert_eq!(status.as_u16(), 404, "another client keeps its own budget");
    }
}

#[test]
fn check_refuses_a_bad_per_client_key() {
    let dir = TempDir::new();
    let path = dir.write(
        "switchyard.yaml",
        "listen: { http: 127.0.0.1:0 }\nregions:\n  a: { type: full, endpoints: [\"127.0.0.1:1\"], services: [api] }\nrouting: { policy: weighted }\nlimits: { per_client: { rps: 5, key: cookie } }\n",
    );
    let (code, err) = run_switchyard(&["check"], &path, &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("switchyard.yaml:5:38: `limits.per_client.key` must be `ip` or `header:NAME`, found \"cookie\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_trickled_a_byte_at_a_time_is_cut_at_header_timeout() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir, "{ header_timeout: 1s }");
    let router = Router::start_in(dir, &cfg);
    let mut s = TcpStream::connect(router.http).expect("connect");
    s.write_all(b"GET /kv/x HTTP/1.1\r\nHost: a\r\n")
        .expect("write");
    let started = Instant::now();
    // One byte every 200 ms: each read is quick, the whole is never done.
    let mut trickle = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        for b in b"X-Slow: ".iter().cycle().take(100) {
            if trickle.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let closed = closed_after(&mut s, Duration::from_secs(10));
    let total = started.elapsed();
    assert!(
        total < Duration::from_millis(2500),
        "cut after {total:?} ({closed:?})"
    );
    drop(s);
    writer.join().expect("writer");
    eventually(Duration::from_secs(3), || async {
        router
            .metrics_text()
            .await
            .contains("switchyard_client_cutoffs_total{reason=\"header_timeout\"} 1")
    })
    .await;
}

/// A client that hangs up partway through its header (a port scanner, a
/// flood of half requests) is counted, not logged as an error per connection;
/// the router goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_header_abandoned_partway_is_counted_and_the_router_serves_on() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir, "{}");
    let router = Router::start_in(dir, &cfg);
    for half in [&b"G"[..], b"GET /kv/x HTTP/1.1\r\nHost: a\r\nX-Half: "] {
        let mut s = TcpStream::connect(router.http).expect("connect");
        s.write_all(half).expect("write");
        drop(s);
    }
    eventually(Duration::from_secs(3), || async {
        router
            .metrics_text()
            .await
            .contains("switchyard_client_abandoned_headers_total 2")
    })
    .await;
    let r = reqwest::get(router.url("/kv/x")).await.expect("read");
    assert_eq!(r.status(), 404, "a answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_of_any_size_over_the_limit_is_answered_431() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir, "{ max_header_bytes: 4096 }");
    let router = Router::start_in(dir, &cfg);
    for size in [5_000usize, 100_000, 2_000_000] {
        let filler = "a".repeat(1000);
        let mut req = String::from("GET /kv/x HTTP/1.1\r\nHost: a\r\n");
        while req.len() < size {
            req.push_str(&format!("X-Fill-{}: {filler}\r\n", req.len()));
        }
        req.push_str("\r\n");
        let mut s = TcpStream::connect(router.http).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // The router may answer and close before taking the whole header.
        let _ = s.write_all(req.as_bytes());
        assert_eq!(read_answer(&mut s), Some(431), "{size} bytes");
    }
    assert_eq!(a.requests(), 0);
}

/// Sends `GET /kv/x` on `s` and reads the answer's status (5 s at most).
fn get(s: &mut TcpStream) -> Option<u16> {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /kv/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    read_answer(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_max_connections_are_refused_and_open_ones_keep_working() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir, "{ max_connections: 5 }");
    let router = Router::start_in(dir, &cfg);
    // The start-up probes' connections (the router's own and this test's)
    // hold places from when the router accepts them until it sees them
    // closed, and may still wait to be accepted: a request answered on a
    // new connection was accepted after them, from the same queue.
    let mut first = TcpStream::connect(router.http).expect("connect");
    assert_eq!(get(&mut first), Some(404));
    drop(first);
    eventually(Duration::from_secs(5), || async {
        router.status().await["connections"]["open"] == 0
    })
    .await;
    let mut open: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(router.http).expect("connect"))
        .collect();
    eventually(Duration::from_secs(5), || async {
        router.status().await["connections"]["open"] == 5
    })
    .await;
    let mut sixth = TcpStream::connect(router.http).expect("the kernel accepts it");
    closed_after(&mut sixth, Duration::from_secs(5));
    assert_eq!(
        get(&mut open[0]),
        Some(404),
        "an open connection still works"
    );
    let status = router.status().await;
    assert_eq!(status["connections"]["refused"], 1, "{status}");
    drop(open);
    eventually(Duration::from_secs(5), || async {
        router.status().await["connections"]["open"] == 0
    })
    .await;
    let mut again = TcpStream::connect(router.http).expect("connect");
    assert_eq!(get(&mut again), Some(404), "room again once they closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_never_sends_a_request_is_closed_after_keepalive_timeout() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&a, &dir, "{ keepalive_timeout: 1s }");
    let router = Router::start_in(dir, &cfg);
    let mut s = TcpStream::connect(router.http).expect("connect");
    let idle = closed_after(&mut s, Duration::from_secs(5));
    assert!(idle < Duration::from_millis(2500), "closed after {idle:?}");
    eventually(Duration::from_secs(3), || async {
        router
            .metrics_text()
            .await
            .contains("switchyard_client_cutoffs_total{reason=\"keepalive_timeout\"} 1")
    })
    .await;
}

/// More connections than the open-files limit can hold: `check` says so,
/// with what would fit, and still accepts the config.
#[test]
fn check_warns_when_the_open_files_limit_cannot_hold_max_connections() {
    let dir = TempDir::new();
    let path = dir.write(
        "switchyard.yaml",
        "listen: { http: 127.0.0.1:0 }\nregions:\n  a: { type: full, endpoints: [\"127.0.0.1:1\"], services: [api] }\nrouting: { policy: weighted }\nlimits: { max_connections: 10000000 }\n",
    );
    let (code, err) = run_switchyard(&["check"], &path, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: the open-files limit is")
            && err.contains("limits.max_connections 10000000 needs about 12500256")
            && err.contains("LimitNOFILE="),
        "{err}"
    );
}

/// Without `limits.max_connections`, the router allows what its open-files
/// limit holds: under a hard limit of 1024, `check` says so and the running
/// router's status shows 614 (1024, less 256 kept, less a fifth for
/// connections to regions).
#[tokio::test]
async fn max_connections_unset_is_what_the_open_files_limit_holds() {
    let dir = TempDir::new();
    let config = format!(
        "{}regions:\n  a: {{ type: full, endpoints: [\"127.0.0.1:1\"], services: [api] }}\nrouting: {{ policy: weighted }}\n",
        header(&dir)
    );
    let path = dir.write("switchyard.yaml", &config);
    let out = std::process::Command::new("prlimit")
        .args(["--nofile=1024:1024", binary(), "check", "--config"])
        .arg(&path)
        .output()
        .expect("prlimit runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("limits.max_connections is not set, and the open-files limit 1024 holds 614 connections"),
        "{err}"
    );
    let router = Router::start_with_env(dir, &config, &[(WRAPPER, "prlimit --nofile=1024:1024")]);
    let status = router.status().await;
    assert_eq!(status["connections"]["max"], 614, "{status}");
}
