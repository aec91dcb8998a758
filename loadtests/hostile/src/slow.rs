//! Slow and idle clients: connections that trickle their headers one byte
//! a second (slowloris) and keep-alive connections left idle after one
//! request. Each must be cut within its timeout (+1 s); a fresh client is
//! timed meanwhile and the proxy's memory watched.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::floods::{tree_rss_kib, watch, Fresh};

/// How the proxy dealt with the connections of one attack.
#[derive(Debug, Clone, Default)]
pub struct CutReport {
    pub opened: usize,
    /// Cut within the timeout + 1 s.
    pub in_time: usize,
    /// Cut, but later than that.
    pub late: usize,
    /// Still open when the drill gave up on them (timeout + 10 s).
    pub never: usize,
    /// The slowest cut, seconds after the clock started.
    pub slowest_s: f64,
    pub fresh: Fresh,
    pub rss_growth_kib: i64,
}

impl CutReport {
    /// Every connection was cut in time.
    pub fn all_in_time(&self) -> bool {
        self.opened > 0 && self.in_time == self.opened
    }
}

enum Kind {
    Slowloris,
    Idle,
}

/// One connection: `Some(seconds from the clock's start to the cut)`,
/// `None` when it could not open or was never cut.
async fn one(addr: SocketAddr, kind: &Kind, give_up: Duration) -> Result<Option<f64>, ()> {
    let mut s = TcpStream::connect(addr).await.map_err(|_| ())?;
    let mut buf = [0u8; 4096];
    let start;
    match kind {
        Kind::Slowloris => {
            s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .map_err(|_| ())?;
            // The header timeout runs from the first byte of the request.
            start = Instant::now();
            loop {
                if start.elapsed() > give_up {
                    return Ok(None);
                }
                let wait = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
                match wait {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {
                        // An answer (a 408): wait for the close that follows.
                        continue;
                    }
                    Err(_) => {
                        if s.write_all(b"a").await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        Kind::Idle => {
            s.write_all(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .map_err(|_| ())?;
            let mut got = Vec::new();
            while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"ok")) {
                match s.read(&mut buf).await {
                    Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                    _ => return Err(()),
                }
            }
            // The keep-alive timeout runs from the end of the answer.
            start = Instant::now();
            match tokio::time::timeout(give_up, s.read(&mut buf)).await {
                Ok(_) => {}
                Err(_) => return Ok(None),
            }
        }
    }
    Ok(Some(start.elapsed().as_secs_f64()))
}

async fn attack(
    addr: SocketAddr,
    pid: u32,
    kind: Kind,
    connections: usize,
    timeout: Duration,
) -> CutReport {
    let rss_before = tree_rss_kib(pid) as i64;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(addr, "/fresh".into(), pid, stop.clone());
    let give_up = timeout + Duration::from_secs(10);
    let kind = Arc::new(kind);
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let kind = kind.clone();
        tasks.push(tokio::spawn(async move { one(addr, &kind, give_up).await }));
    }
    let mut report = CutReport::default();
    let limit = timeout.as_secs_f64() + 1.0;
    for t in tasks {
        match t.await {
            Ok(Ok(Some(s))) => {
                report.opened += 1;
                report.slowest_s = report.slowest_s.max(s);
                if s <= limit {
                    report.in_time += 1;
                } else {
                    report.late += 1;
                }
            }
            Ok(Ok(None)) => {
                report.opened += 1;
                report.never += 1;
            }
            _ => {}
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (fresh, peak) = watcher.join().unwrap_or_default();
    report.fresh = fresh;
    report.rss_growth_kib = peak as i64 - rss_before;
    report
}

/// `connections` clients trickle their headers; the proxy's header timeout
/// is `timeout`.
pub async fn slowloris(
    addr: SocketAddr,
    pid: u32,
    connections: usize,
    timeout: Duration,
) -> CutReport {
    attack(addr, pid, Kind::Slowloris, connections, timeout).await
}

/// `connections` clients send one request and go quiet; the proxy's
/// keep-alive timeout is `timeout`.
pub async fn idle(addr: SocketAddr, pid: u32, connections: usize, timeout: Duration) -> CutReport {
    attack(addr, pid, Kind::Idle, connections, timeout).await
}
