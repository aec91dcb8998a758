//! Idle client connections. A kept-alive connection gives its buffers back
//! while it waits for the client and takes them again when the client
//! speaks: the next request must be served whole however its bytes arrive,
//! and an idle connection must cost a few kilobytes, not a hundred.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

/// One HTTP/1.1 response off a kept-alive connection: status and body.
fn response(conn: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut line = String::new();
    conn.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        let mut header = String::new();
        conn.read_line(&mut header).expect("header line");
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("content-length");
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn connect(addr: std::net::SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    BufReader::new(s)
}

const GET: &[u8] = b"GET /_echo/idle HTTP/1.1\r\nHost: api.example\r\n\r\n";

/// After a first request, each connection waits idle; its next request then
/// arrives whole, split (with a pause after the first bytes, so the router
/// is waiting with its buffers given back mid-header), or pipelined two at
/// once: every one is answered, in order, by the region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_serves_its_next_request_however_it_arrives() {
    let a = region("a").await;
    let dir = TempDir::new();
    let config = one_region(&dir, "", &a);
    let router = Router::start_in(dir, &config);
    let mut conns: Vec<_> = (0..12).map(|_| connect(router.http)).collect();
    for conn in &mut conns {
        conn.get_mut().write_all(GET).expect("write");
        assert_eq!(response(conn).0, 200);
    }
    eventually(Duration::from_secs(5), || async {
        router.status().await["connections"]["open"].as_u64() >= Some(12)
    })
    .await;
    for (i, conn) in conns.iter_mut().enumerate() {
        match i % 3 {
            0 => conn.get_mut().write_all(GET).expect("write"),
            1 => {
                conn.get_mut().write_all(&GET[..9]).expect("write");
                std::thread::sleep(Duration::from_millis(30));
                conn.get_mut().write_all(&GET[9..]).expect("write");
            }
            _ => {
                conn.get_mut()
                    .write_all(&[GET, GET].concat())
                    .expect("write");
                let (status, body) = response(conn);
                assert_eq!(status, 200, "{body}");
            }
        }
        let (status, body) = response(conn);
        assert_eq!(status, 200, "connection {i}: {body}");
        assert!(body.contains("\"region\":\"a\""), "{body}");
    }
    // A connection that waited before its very first byte is served too.
    let mut late = connect(router.http);
    eventually(Duration::from_secs(5), || async {
        router.status().await["connections"]["open"].as_u64() >= Some(13)
    })
    .await;
    late.get_mut().write_all(GET).expect("write");
    assert_eq!(response(&mut late).0, 200);
}

/// Resident memory of the router, in KiB (a gone router fails the test).
fn rss_kib(router: &Router) -> u64 {
    let pid = u32::try_from(router.pid()).expect("a pid");
    let kib = switchyard_hostile::floods::rss_kib(pid);
    assert!(kib > 0, "the router (pid {pid}) is gone");
    kib
}

/// 2,000 idle connections, half of them after a request, cost the router
/// less than 16 KiB each (loadtests/peers/idle.sh measures ~6.5 KiB; before
/// the buffers and request state were given back while idle, ~39 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cost_a_few_kilobytes_each() {
    switchyard_hostile::raise_open_files();
    let a = region("a").await;
    let dir = TempDir::new();
    let config = one_region(&dir, "", &a);
    let router = Router::start_in(dir, &config);
    // Warm: the pools, the first requests' allocations.
    for _ in 0..50 {
        let mut conn = connect(router.http);
        conn.get_mut().write_all(GET).expect("write");
        assert_eq!(response(&mut conn).0, 200);
    }
    let before = rss_kib(&router);
    const N: usize = 2000;
    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        let mut conn = connect(router.http);
        if i % 2 == 0 {
            conn.get_mut().write_all(GET).expect("write");
            assert_eq!(response(&mut conn).0, 200);
        }
        conns.push(conn);
    }
    eventually(Duration::from_secs(10), || async {
        router.status().await["connections"]["open"].as_u64() >= Some(N as u64)
    })
    .await;
    let per_connection = (rss_kib(&router).saturating_sub(before)) as f64 / N as f64;
    assert!(
        per_connection < 16.0,
        "{per_connection:.1} KiB per idle connection"
    );
    // Still open and still served.
    let conn = conns.last_mut().expect("a connection");
    conn.get_mut().write_all(GET).expect("write");
    assert_eq!(response(conn).0, 200);
}
