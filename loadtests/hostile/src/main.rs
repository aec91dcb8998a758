//! `hostile`: hostile clients against Switchyard, with nginx and HAProxy
//! beside it where the attack applies, all in front of strict upstreams on
//! loopback. Prints one table per attack and exits 1 when Switchyard misses
//! a goal:
//!
//! - slowloris and idle keep-alive connections: each cut within its timeout
//!   + 1 s, a fresh client's p99 under 50 ms meanwhile, RSS growth < 100 MiB;
//! - distinct idempotency keys past the cap: RSS growth < 64 MiB, evictions
//!   counted, the newest keys still answered from the table;
//! - every request smuggling vector (HTTP/1.1 and HTTP/2): nothing reaches the
//!   upstream but exactly what was meant, every required refusal;
//! - HTTP/2 floods: a fresh client answered in < 100 ms (p99), RSS bounded;
//! - a spoofed geo header and `X-Forwarded-For` from an untrusted peer:
//!   nothing served outside the client's residency zone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use switchyard_hostile::floods::{self, FloodReport};
use switchyard_hostile::peers::{self, Proxy, HEADER_TIMEOUT, KEEPALIVE_TIMEOUT};
use switchyard_hostile::slow::{self, CutReport};
use switchyard_hostile::strict::StrictUpstream;
use switchyard_hostile::{desync, h2raw};

#[derive(Parser)]
#[command(about = "Hostile clients against Switchyard, nginx and HAProxy")]
struct Args {
    /// The switchyard binary.
    #[arg(long, default_value = "target/release/switchyard")]
    switchyard: PathBuf,
    /// Connections in the slowloris and idle attacks.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Distinct idempotency keys sent (the cap is a fifth of it).
    #[arg(long, default_value_t = 500_000)]
    keys: usize,
    /// Seconds each HTTP/2 flood runs.
    #[arg(long, default_value_t = 5)]
    flood_secs: u64,
    /// Run Switchyard only.
    #[arg(long)]
    no_peers: bool,
    /// Run one attack only, on a fresh router (its RSS figures then owe
    /// nothing to memory the allocator kept from an earlier attack).
    #[arg(long, value_parser = ["smuggling", "slowloris", "idle", "floods", "geo", "keys"])]
    only: Option<String>,
}

/// One goal, met or missed.
struct Goals(Vec<(String, bool)>);

impl Goals {
    fn check(&mut self, what: String, met: bool) {
        self.0.push((what, met));
    }
}

fn switchyard_config(
    dir: &std::path::Path,
    us: SocketAddr,
    eu: SocketAddr,
    key_cap: usize,
) -> String {
    format!(
        r#"listen: {{ http: 127.0.0.1:0, https: {{ addr: 127.0.0.1:0, cert: edge.crt, key: edge.key }} }}
metrics: {{ addr: 127.0.0.1:0 }}
state_dir: {state}
shutdown_grace: 1s
limits: {{ header_timeout: {HEADER_TIMEOUT}s, keepalive_timeout: {KEEPALIVE_TIMEOUT}s, max_connections: 8000 }}
regions:
  us:
    type: full
    endpoints: ["{us}"]
    services: [api]
    compliance: {{ data_residency: US }}
    health: {{ path: /health, interval: 500ms }}
  eu:
    type: full
    endpoints: ["{eu}"]
    services: [api]
    compliance: {{ data_residency: EU }}
    health: {{ path: /health, interval: 500ms }}
routing:
  policy: geo
  geo:
    header: CF-IPCountry
    networks: {{ "127.0.0.0/8": US, "10.0.0.0/8": DE }}
    prefer: {{ EU: [eu, us], default: [us, eu] }}
  residency: {{ DE: EU, FR: EU, US: US }}
consistency:
  owners: {{ default: us }}
  idempotency: generate
  idempotency_max_keys: {key_cap}
oplog: {{ fsync: batch }}
"#,
        state = dir.join("state").display()
    )
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.1}")
    }
}

fn print_cut_table(title: &str, timeout: u64, rows: &[(&str, CutReport)]) {
    println!(
        "\n## {title} (timeout {timeout} s; goal: every cut ≤ {} s)",
        timeout + 1
    );
    println!(
        "{:<11} {:>7} {:>8} {:>5} {:>6} {:>10} {:>14} {:>12} {:>12}",
        "proxy",
        "opened",
        "in time",
        "late",
        "never",
        "slowest s",
        "fresh p99 ms",
        "fresh fails",
        "RSS +MiB"
    );
    for (name, r) in rows {
        println!(
            "{:<11} {:>7} {:>8} {:>5} {:>6} {:>10.2} {:>14} {:>12} {:>12.1}",
            name,
            r.opened,
            r.in_time,
            r.late,
            r.never,
            r.slowest_s,
            ms(r.fresh.p99_ms),
            r.fresh.failures,
            r.rss_growth_kib as f64 / 1024.0
        );
    }
}

/// A keep-alive HTTP/1.1 connection that sends requests one at a time, and
/// opens a new one when the server ends it (`Connection: close` after its
/// requests-per-connection limit).
struct KeepAlive {
    addr: SocketAddr,
    s: TcpStream,
    buf: Vec<u8>,
    closing: bool,
}

impl KeepAlive {
    async fn open(addr: SocketAddr) -> std::io::Result<KeepAlive> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(KeepAlive {
            addr,
            s,
            buf: Vec::new(),
            closing: false,
        })
    }

    /// Sends `req`; the answer's status and headers (lower-cased).
    async fn send(&mut self, req: &[u8]) -> std::io::Result<(u16, String)> {
        if self.closing {
            *self = KeepAlive::open(self.addr).await?;
        }
        self.s.write_all(req).await?;
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    self.buf.drain(..end + 4 + len);
                    self.closing = head.contains("\r\nconnection: close");
                    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                    return Ok((status, head));
                }
            }
            let n = self.s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn metric(metrics: SocketAddr, name: &str) -> f64 {
    let Ok(mut c) = KeepAlive::open(metrics).await else {
        return f64::NAN;
    };
    let req = b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n";
    if c.s.write_all(req).await.is_err() {
        return f64::NAN;
    }
    let mut text = String::new();
    let _ = c.s.read_to_string(&mut text).await;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Distinct idempotency keys on 32 keep-alive connections.
async fn key_flood(
    sy: &Proxy,
    upstream: &StrictUpstream,
    keys: usize,
    cap: usize,
    goals: &mut Goals,
) -> anyhow::Result<()> {
    let rss_before = sy.rss_kib() as i64;
    let start = Instant::now();
    let workers = 32;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let addr = sy.plain;
        tasks.push(tokio::spawn(async move {
            let mut c = KeepAlive::open(addr).await?;
            let mut refused = 0u64;
            for i in (w..keys).step_by(workers) {
                let req = format!(
                    "PUT /kv/k{i} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: flood-{i}\r\nContent-Length: 1\r\n\r\nv"
                );
                let (status, _) = c.send(req.as_bytes()).await?;
                if status != 200 {
                    refused += 1;
                }
            }
            Ok::<u64, std::io::Error>(refused)
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await?.context("key flood connection")?;
    }
    let secs = start.elapsed().as_secs_f64();
    let rss_growth = sy.rss_kib() as i64 - rss_before;
    let evicted = match sy.metrics {
        Some(m) => metric(m, "switchyard_idempotency_evictions_total").await,
        None => f64::NAN,
    };
    // The newest keys are still in the table: sent again with another
    // payload, each is refused (422) and none reaches the region.
    let before = upstream.requests().len();
    let mut c = KeepAlive::open(sy.plain).await?;
    let mut remembered = 0;
    for i in keys.saturating_sub(100)..keys {
        let req = format!(
            "PUT /kv/k{i} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: flood-{i}\r\nContent-Length: 1\r\n\r\nw"
        );
        if c.send(req.as_bytes()).await?.0 == 422 {
            remembered += 1;
        }
    }
    let again = upstream.requests().len() - before;
    println!("\n## Idempotency keys: {keys} distinct, cap {cap}");
    println!(
        "{:<11} {:>9} {:>9} {:>10} {:>10} {:>16} {:>18}",
        "proxy",
        "keys/s",
        "not 200",
        "evicted",
        "RSS +MiB",
        "newest 100: 422",
        "reached the region"
    );
    println!(
        "{:<11} {:>9.0} {:>9} {:>10} {:>10.1} {:>16} {:>18}",
        "switchyard",
        keys as f64 / secs,
        refused,
        evicted,
        rss_growth as f64 / 1024.0,
        remembered,
        again
    );
    goals.check(
        format!(
            "idempotency keys: RSS growth {:.1} MiB < 64 MiB",
            rss_growth as f64 / 1024.0
        ),
        rss_growth < 64 * 1024,
    );
    goals.check(
        format!(
            "idempotency keys: {evicted} evictions counted (≥ {})",
            keys - cap
        ),
        evicted >= (keys - cap) as f64,
    );
    goals.check(
        format!("idempotency keys: the newest 100 with another payload: {remembered} refused (100), {again} reached the region (0)"),
        remembered == 100 && again == 0,
    );
    goals.check(
        format!("idempotency keys: {refused} answers other than 200 (0)"),
        refused == 0,
    );
    Ok(())
}

/// Requests claiming to come from Germany, from an untrusted peer in the US.
async fn spoofed_geo(sy: &Proxy, eu: &StrictUpstream, goals: &mut Goals) -> anyhow::Result<()> {
    let before = eu.requests().len();
    let mut c = KeepAlive::open(sy.plain).await?;
    let mut served = 0;
    let spoofs = [
        "CF-IPCountry: DE\r\n",
        "X-Forwarded-For: 10.1.2.3\r\n",
        "X-Real-IP: 10.1.2.3\r\n",
        "Forwarded: for=10.1.2.3\r\n",
        "CF-IPCountry: DE\r\nX-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\n",
    ];
    let n = 1000;
    for i in 0..n {
        let req = format!(
            "GET /kv/geo{i} HTTP/1.1\r\nHost: x\r\n{}\r\n",
            spoofs[i % spoofs.len()]
        );
        let (status, head) = c.send(req.as_bytes()).await?;
        if status == 200 && head.contains("x-switchyard-region: eu") {
            served += 1;
        }
    }
    let reached = eu.requests().len() - before;
    println!("\n## Spoofed geo from an untrusted peer (US client claiming DE)");
    println!(
        "{:<11} {:>9} {:>22} {:>22}",
        "proxy", "requests", "served by the EU region", "reached the EU region"
    );
    println!(
        "{:<11} {:>9} {:>22} {:>22}",
        "switchyard", n, served, reached
    );
    goals.check(
        format!("spoofed geo: {served} served and {reached} reached outside the zone (0)"),
        served == 0 && reached == 0,
    );
    Ok(())
}

async fn desync_table(proxies: &[&Proxy], upstream: &StrictUpstream, goals: &mut Goals) {
    println!("\n## Request smuggling, HTTP/1.1 (answer statuses; ! = the expectation failed)");
    print!("{:<34}", "vector");
    for p in proxies {
        print!(" {:>12}", p.name);
    }
    println!();
    let mut failed = Vec::new();
    let mut violations = vec![0usize; proxies.len()];
    let vectors = desync::vectors();
    for v in &vectors {
        print!("{:<34}", v.name);
        for (i, p) in proxies.iter().enumerate() {
            let o = desync::run(p.plain, upstream, v).await;
            violations[i] += o.violations.len();
            let statuses = o
                .statuses
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mark = if o.failure.is_some() { "!" } else { "" };
            print!(
                " {:>12}",
                format!(
                    "{mark}{}",
                    if statuses.is_empty() {
                        "none"
                    } else {
                        &statuses
                    }
                )
            );
            if let (Some(why), "switchyard") = (&o.failure, p.name) {
                failed.push(format!("{}: {why}", v.name));
            }
        }
        println!();
    }
    print!("{:<34}", "bytes the upstream could not parse");
    for v in &violations {
        print!(" {v:>12}");
    }
    println!();
    for f in &failed {
        println!("  switchyard: {f}");
    }
    goals.check(
        format!(
            "HTTP/1.1 smuggling: {} of {} vectors as expected",
            vectors.len() - failed.len(),
            vectors.len()
        ),
        failed.is_empty(),
    );

    println!("\n## Request smuggling, HTTP/2 (the reply on the stream)");
    let mut h2_failed = 0;
    let h2_vectors = h2raw::vectors("localhost");
    let before = upstream.requests().len();
    for v in &h2_vectors {
        print!("{:<34}", v.name);
        for p in proxies {
            let reply = match p.tls {
                Some(tls) => match h2raw::run(tls, v).await {
                    Ok(r) => format!("{r:?}"),
                    Err(e) => format!("error: {e}"),
                },
                None => "-".into(),
            };
            let refused = !reply.starts_with("Status(Some(2");
            if !refused && p.name == "switchyard" {
                h2_failed += 1;
            }
            print!(" {:>24}", reply);
        }
        println!();
    }
    let forwarded = upstream.requests().len() - before;
    println!("  forwarded to the upstream (all proxies): {forwarded}");
    goals.check(
        format!("HTTP/2 smuggling: {h2_failed} vectors served (0)"),
        h2_failed == 0,
    );
    goals.check(
        format!(
            "HTTP/1.1 smuggling: {} forwards the upstream could not parse (0)",
            violations[0]
        ),
        violations[0] == 0,
    );
}

fn print_flood_table(rows: &[(&str, FloodReport)]) {
    println!("\n## HTTP/2 floods (4 connections each; fresh HTTP/1.1 client every 20 ms)");
    println!(
        "{:<11} {:<13} {:>10} {:>9} {:>14} {:>12} {:>11} {:>11}  reaction",
        "proxy",
        "flood",
        "frames",
        "MiB sent",
        "fresh p99 ms",
        "fresh fails",
        "RSS MiB",
        "peak MiB"
    );
    for (name, r) in rows {
        println!(
            "{:<11} {:<13} {:>10} {:>9.1} {:>14} {:>12} {:>11.1} {:>11.1}  {}",
            name,
            r.name,
            r.frames_sent,
            r.bytes_sent as f64 / 1048576.0,
            ms(r.fresh.p99_ms),
            r.fresh.failures,
            r.rss_before_kib as f64 / 1024.0,
            r.rss_peak_kib as f64 / 1024.0,
            r.reaction
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    switchyard_hostile::raise_open_files();
    let dir = std::env::temp_dir().join(format!("switchyard-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let goals = result?;
    println!("\n## Goals (Switchyard)");
    let mut missed = 0;
    for (what, met) in &goals.0 {
        println!("{} {what}", if *met { "met   " } else { "MISSED" });
        missed += usize::from(!met);
    }
    if missed > 0 {
        println!("{missed} goal(s) missed");
        std::process::exit(1);
    }
    Ok(())
}

async fn run(args: &Args, dir: &std::path::Path) -> anyhow::Result<Goals> {
    let mut goals = Goals(Vec::new());
    let us = StrictUpstream::start("/health").await?;
    let eu = StrictUpstream::start("/health").await?;
    let (crt, key, pem) = peers::certificate(dir)?;
    let cap = (args.keys / 5).max(1);
    let sy = peers::switchyard(
        &args.switchyard,
        dir,
        &switchyard_config(dir, us.addr, eu.addr, cap),
    )
    .with_context(|| format!("starting {}", args.switchyard.display()))?;
    let (nginx, haproxy) = if args.no_peers {
        (None, None)
    } else {
        (
            peers::nginx(dir, us.addr, &crt, &key)?,
            peers::haproxy(dir, us.addr, &pem)?,
        )
    };
    // Ready when the fresh client's path is served.
    let ready = Instant::now();
    while floods::fresh_get(sy.plain, "/ready").is_none() {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(15),
            "switchyard never served a request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let proxies: Vec<&Proxy> = std::iter::once(&sy)
        .chain(nginx.iter())
        .chain(haproxy.iter())
        .collect();
    println!(
        "# hostile: {} against {}",
        args.switchyard.display(),
        proxies
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    );

    let runs = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    if runs("smuggling") {
        desync_table(&proxies, &us, &mut goals).await;
    }

    for (title, timeout) in [
        ("Slowloris", HEADER_TIMEOUT),
        ("Idle keep-alive", KEEPALIVE_TIMEOUT),
    ] {
        if !runs(if title == "Slowloris" {
            "slowloris"
        } else {
            "idle"
        }) {
            continue;
        }
        let mut rows = Vec::new();
        for p in &proxies {
            let t = Duration::from_secs(timeout);
            let r = if title == "Slowloris" {
                slow::slowloris(p.plain, p.pid(), args.connections, t).await
            } else {
                slow::idle(p.plain, p.pid(), args.connections, t).await
            };
            rows.push((p.name, r));
        }
        print_cut_table(
            &format!("{title}: {} connections", args.connections),
            timeout,
            &rows,
        );
        let r = &rows[0].1;
        goals.check(
            format!("{title}: {} of {} cut in time", r.in_time, r.opened),
            r.all_in_time() && r.opened == args.connections,
        );
        goals.check(
            format!("{title}: fresh p99 {} ms < 50 ms", ms(r.fresh.p99_ms)),
            r.fresh.p99_ms < 50.0 && r.fresh.failures == 0,
        );
        goals.check(
            format!(
                "{title}: RSS growth {:.1} MiB < 100 MiB",
                r.rss_growth_kib as f64 / 1024.0
            ),
            r.rss_growth_kib < 100 * 1024,
        );
    }

    let mut rows = Vec::new();
    for p in proxies.iter().filter(|_| runs("floods")) {
        let Some(tls) = p.tls else { continue };
        for name in floods::FLOODS {
            let r = floods::measured(
                name,
                tls,
                p.plain,
                "/fresh",
                p.pid(),
                Duration::from_secs(args.flood_secs),
            )
            .await;
            if p.name == "switchyard" {
                goals.check(
                    format!(
                        "h2 {name}: fresh p99 {} ms < 100 ms, {} failures",
                        ms(r.fresh.p99_ms),
                        r.fresh.failures
                    ),
                    r.fresh.p99_ms < 100.0 && r.fresh.failures == 0,
                );
                let growth = r.rss_peak_kib.saturating_sub(r.rss_before_kib);
                goals.check(
                    format!(
                        "h2 {name}: RSS growth {:.1} MiB < 100 MiB",
                        growth as f64 / 1024.0
                    ),
                    growth < 100 * 1024,
                );
            }
            rows.push((p.name, r));
        }
    }
    if !rows.is_empty() {
        print_flood_table(&rows);
    }
    if runs("geo") {
        spoofed_geo(&sy, &eu, &mut goals).await?;
    }
    if runs("keys") {
        key_flood(&sy, &us, args.keys, cap, &mut goals).await?;
    }
    Ok(goals)
}
