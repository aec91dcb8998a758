//! How a request leaves the router for its region: a write whose body the
//! router already holds goes out with its header in one send, and a write
//! whose body it cannot hold yet still reaches the region whole.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A request to `/w` as the region received it.
#[derive(Clone, Debug)]
struct Arrival {
    /// How many reads it took to have the whole of it (header and
    /// `Content-Length` body).
    reads: usize,
    /// Its header block, lowercased.
    head: String,
    body: Vec<u8>,
}

type Arrivals = Arc<Mutex<Vec<Arrival>>>;

/// A region that answers `200 ok` to everything and notes, for each request
/// to `/w`, in how many reads it arrived.
async fn counting_region() -> (std::net::SocketAddr, Arrivals) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let arrivals = Arrivals::default();
    let seen = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 65536];
                loop {
                    let mut buf = Vec::new();
                    let mut reads = 0;
                    // Reads until one whole request is in `buf`.
                    let (head, body) = loop {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        reads += 1;
                        if let Some(message) = whole_message(&buf) {
                            break message;
                        }
                    };
                    if head.starts_with("post /w ") {
                        seen.lock()
                            .expect("arrivals")
                            .push(Arrival { reads, head, body });
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if conn.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, arrivals)
}

async fn router_before(addr: std::net::SocketAddr) -> Router {
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}routing:\n  policy: weighted\nconsistency:\n  owners: {{ default: r }}\noplog: {{ fsync: batch }}\n",
        header(&dir),
        region_yaml("r", addr, "")
    );
    let router = Router::start_in(dir, &cfg);
    router.wait_healthy("r", true).await;
    router
}

/// The first HTTP/1 message in `buf` (its header block, lowercased, and its
/// `Content-Length` body), once `buf` holds all of it.
fn whole_message(buf: &[u8]) -> Option<(String, Vec<u8>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let body = buf.get(end + 4..end + 4 + length)?.to_vec();
    Some((head, body))
}

/// Reads one answer (a header block and its `Content-Length` body).
async fn read_answer(conn: &mut tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if whole_message(&answer).is_some() {
                return;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A write whose body came with its header is forwarded in one send: the
/// region reads each of them whole in its first read. Sent as two (the
/// header flushed on its own, then the body), the region's first read would
/// end at the header for most of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_held_whole_leaves_with_its_header_in_one_send() {
    let (addr, arrivals) = counting_region().await;
    let router = router_before(addr).await;
    let mut conn = tokio::net::TcpStream::connect(router.http)
        .await
        .expect("connect");
    const WRITES: usize = 40;
    for i in 0..WRITES {
        let body = format!("{{\"v\":{i}}}");
        let req = format!(
            "POST /w HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(req.as_bytes()).await.expect("send");
        let answer = read_answer(&mut conn).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "write {i}: {answer}");
    }
    let arrivals = arrivals.lock().expect("arrivals").clone();
    assert_eq!(arrivals.len(), WRITES);
    for (i, arrival) in arrivals.iter().enumerate() {
        assert_eq!(
            arrival.body,
            format!("{{\"v\":{i}}}").as_bytes(),
            "write {i}"
        );
        assert_eq!(
            arrival.reads, 1,
            "write {i} reached the region in {} reads",
            arrival.reads
        );
    }
}

/// A client that sends its header, then waits for `100 Continue` before its
/// body, hears it from the router (which reads a write's body itself before
/// forwarding it), and its write reaches the region whole, without the
/// `Expect` the router has answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_whose_body_comes_later_reaches_the_region_whole() {
    let (addr, arrivals) = counting_region().await;
    let router = router_before(addr).await;
    let mut conn = tokio::net::TcpStream::connect(router.http)
        .await
        .expect("connect");
    conn.write_all(
        b"POST /w HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n",
    )
    .await
    .expect("send");
    let interim = read_answer(&mut conn).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    conn.write_all(b"{\"v\":1}").await.expect("send body");
    let answer = read_answer(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let arrivals = arrivals.lock().expect("arrivals").clone();
    assert_eq!(arrivals.len(), 1);
    assert_eq!(arrivals[0].body, b"{\"v\":1}");
    assert!(
        !arrivals[0].head.contains("\r\nexpect:"),
        "{}",
        arrivals[0].head
    );
}
