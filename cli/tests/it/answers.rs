//! How a region's answer travels back through the router when the request
//! is already whole (the common case: no body, or a body read ahead): a
//! client that leaves early, interim answers, answers that arrive in pieces
//! or are cut short.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// What the scripted region has seen.
#[derive(Default)]
struct Seen {
    /// `/hold` requests received.
    held: AtomicUsize,
    /// `/hold` connections the router closed while the region held them.
    released: AtomicUsize,
    /// `/then-close` connections the region has closed after answering.
    closed_after_answering: AtomicUsize,
}

/// A region whose answer depends on the path: `/hold` never answers and
/// notes when the router closes the connection; `/interim` sends a `103`
/// before its `200`; `/pieces` sends its body in two writes 100 ms apart;
/// `/cut` promises 10 bytes, sends 3 and closes; `/then-close` answers
/// `200 ok` as if to keep the connection, then closes it. Anything else
/// (health checks included) is `200 ok`.
async fn scripted_region() -> (std::net::SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        let head = String::from_utf8_lossy(&head).into_owned();
                        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                        let written = match path.as_str() {
                            "/hold" => {
                                counts.held.fetch_add(1, Ordering::SeqCst);
                                // Wait for the router to close this connection.
                                loop {
                                    match conn.read(&mut chunk).await {
                                        Ok(0) | Err(_) => {
                                            counts.released.fetch_add(1, Ordering::SeqCst);
                                            return;
                                        }
                                        Ok(_) => {}
                                    }
                                }
                            }
                            "/interim" => conn.write_all(
                                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                            )
                            .await,
                            "/pieces" => {
                                let first = conn
                                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
                                    .await;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                match first {
                                    Ok(()) => conn.write_all(b"56789").await,
                                    e => e,
                                }
                            }
                            "/then-close" => {
                                let _ = conn
                                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                    .await;
                                drop(conn);
                                counts.closed_after_answering.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            "/cut" => {
                                let _ = conn
                                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                                    .await;
                                return;
                            }
                            _ => conn
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .await,
                        };
                        if written.is_err() {
                            return;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn router_before(addr: std::net::SocketAddr) -> Router {
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}routing:\n  policy: weighted\n",
        header(&dir),
        region_yaml("scripted", addr, "")
    );
    let router = Router::start_in(dir, &cfg);
    router.wait_healthy("scripted", true).await;
    router
}

/// Sends one request and reads until the router closes the connection.
async fn exchange(router: &Router, path: &str) -> Vec<u8> {
    let mut conn = tokio::net::TcpStream::connect(router.http)
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    answer
}

/// A client that hangs up while the region is still working is noticed at
/// once: the region's connection is closed, not left to the upstream
/// timeout, and the router goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_before_the_answer_frees_the_region_connection() {
    let (addr, seen) = scripted_region().await;
    let router = router_before(addr).await;
    let mut conn = tokio::net::TcpStream::connect(router.http)
        .await
        .expect("connect");
    conn.write_all(b"GET /hold HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    eventually(Duration::from_secs(5), || {
        let held = seen.held.load(Ordering::SeqCst);
        async move { held == 1 }
    })
    .await;
    assert_eq!(seen.released.load(Ordering::SeqCst), 0);
    drop(conn);
    eventually(Duration::from_secs(5), || {
        let released = seen.released.load(Ordering::SeqCst);
        async move { released == 1 }
    })
    .await;
    let answer = String::from_utf8_lossy(&exchange(&router, "/fine").await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
}

/// An interim `103` and a body that arrives in two pieces both reach the
/// client whole, in order.
#[tokio::test(flavor = "multi_thread")]
async fn interim_answers_and_bodies_in_pieces_arrive_whole() {
    let (addr, _seen) = scripted_region().await;
    let router = router_before(addr).await;
    let answer = String::from_utf8_lossy(&exchange(&router, "/interim").await).into_owned();
    let final_at = answer.find("HTTP/1.1 200").expect("a final answer");
    if let Some(interim_at) = answer.find("HTTP/1.1 103") {
        assert!(interim_at < final_at, "{answer}");
    }
    assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");
    let answer = String::from_utf8_lossy(&exchange(&router, "/pieces").await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n0123456789"), "{answer}");
}

/// An answer the region cuts short is not passed off as whole: the client
/// gets the bytes that came and a closed connection, never a complete
/// message, and the router goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_cut_short_is_never_passed_off_as_whole() {
    let (addr, _seen) = scripted_region().await;
    let router = router_before(addr).await;
    let answer = String::from_utf8_lossy(&exchange(&router, "/cut").await).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a header block");
    if head.starts_with("HTTP/1.1 200") {
        assert!(
            head.to_ascii_lowercase().contains("content-length: 10"),
            "{answer}"
        );
        assert!(body.len() < 10, "a cut answer came out whole: {answer}");
    } else {
        assert!(head.starts_with("HTTP/1.1 502"), "{answer}");
    }
    let answer = String::from_utf8_lossy(&exchange(&router, "/fine").await).into_owned();
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
}

/// A region that closes each connection right after an answer that did
/// not say so (no `Connection: close`): the pooled connection is found
/// closed when the next request would take it, and a new one is made. No
/// request is sent on a closed connection (none is retried) and every one
/// is answered.
#[tokio::test(flavor = "multi_thread")]
async fn connections_a_region_closes_after_answering_are_not_handed_out_again() {
    let (addr, seen) = scripted_region().await;
    let router = router_before(addr).await;
    for i in 0..20 {
        let answer = String::from_utf8_lossy(&exchange(&router, "/then-close").await).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "request {i}: {answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "request {i}: {answer}");
        // The region's close reaches the router once it is made; made late
        // (its task descheduled between answering and closing, on a busy
        // machine), it could reach the router after the next request took
        // the connection, which no proxy can know to be closing.
        let closed = || async { seen.closed_after_answering.load(Ordering::SeqCst) == i + 1 };
        eventually(Duration::from_secs(5), closed).await;
    }
    let m = router.metrics_text().await;
    let reused = metric(
        &m,
        "switchyard_upstream_connections_total{region=\"scripted\",reused=\"true\"}",
    );
    let new = metric(
        &m,
        "switchyard_upstream_connections_total{region=\"scripted\",reused=\"false\"}",
    );
    assert_eq!(reused, 0.0, "a closed connection was handed out\n{m}");
    assert_eq!(new, 20.0, "{m}");
}
