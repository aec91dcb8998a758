//! Idle connections against one proxy: opens N client connections (plain
//! HTTP/1.1, TLS with HTTP/1.1, or TLS with HTTP/2), sends one request on a
//! share of them, leaves them all idle, and reports what they cost the
//! proxy (resident memory of the given processes, per connection) and how a
//! fresh client fares beside them (a new connection per request, p50/p99),
//! with and without a steady closed-loop load.
//!
//! It prints one `key=value` line, read by `loadtests/peers/idle.sh`, which
//! starts the proxies and makes the table.
//!
//! ```text
//! idle-conns --addr 127.0.0.1:8080 --mode plain|tls|h2 --count 10000 --pid 1234 [--pid ...]
//!            [--ca ca.pem] [--used 0.5] [--probes 300] [--load-secs 5]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Mode {
    Plain,
    Tls,
    H2,
}

#[derive(Parser, Debug)]
#[command(
    name = "idle-conns",
    about = "What idle client connections cost a proxy"
)]
struct Args {
    /// The proxy's listener.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_enum)]
    mode: Mode,
    /// How many idle connections to open.
    #[arg(long)]
    count: usize,
    /// The proxy's processes, whose resident memory is summed.
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
    /// The CA that signed the proxy's certificate (tls, h2).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The share of the idle connections that carry one request first.
    #[arg(long, default_value_t = 0.5)]
    used: f64,
    /// Fresh-client requests (each on a new connection) per measurement.
    #[arg(long, default_value_t = 300)]
    probes: usize,
    /// Seconds of steady load, run once before the idle connections open
    /// and once while they are open (0: no load).
    #[arg(long, default_value_t = 0)]
    load_secs: u64,
    /// The path requested.
    #[arg(long, default_value = "/kv/x")]
    path: String,
}

/// One client connection, ready to send requests.
enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

struct Client {
    addr: SocketAddr,
    mode: Mode,
    tls: Option<tokio_rustls::TlsConnector>,
    path: String,
}

impl Client {
    async fn connect(&self) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        match (&self.tls, self.mode) {
            (None, _) => {
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                Ok(Conn::H1(send))
            }
            (Some(tls), mode) => {
                let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                let stream = tls.connect(name, tcp).await?;
                if mode == Mode::H2 {
                    let (send, conn) = hyper::client::conn::http2::handshake(
                        hyper_util::rt::TokioExecutor::new(),
                        TokioIo::new(stream),
                    )
                    .await?;
                    tokio::spawn(conn);
                    Ok(Conn::H2(send))
                } else {
                    let (send, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(conn);
                    Ok(Conn::H1(send))
                }
            }
        }
    }

    /// Sends one request and reads the whole answer. `Ok(false)` when the
    /// server said it closes the connection after this answer (`Connection:
    /// close`, as a proxy does once a connection has carried its limit of
    /// requests): the caller must connect again to go on.
    async fn request(&self, conn: &mut Conn) -> anyhow::Result<bool> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = format!("{scheme}://{}{}", self.addr, self.path);
        let mut req = hyper::Request::get(&uri).body(Empty::<Bytes>::new())?;
        let response = match conn {
            Conn::H1(send) => {
                req.headers_mut()
                    .insert(hyper::header::HOST, self.addr.to_string().parse()?);
                *req.uri_mut() = self.path.parse()?;
                send.ready().await?;
                send.send_request(req).await?
            }
            Conn::H2(send) => {
                send.ready().await?;
                send.send_request(req).await?
            }
        };
        let status = response.status();
        let closes = response
            .headers()
            .get_all(hyper::header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        response.into_body().collect().await?;
        if !status.is_success() {
            bail!("the proxy answered {status}");
        }
        Ok(!closes)
    }
}

/// Resident memory of the processes, in KiB.
fn rss_kib(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        match switchyard_hostile::floods::rss_kib(*pid) {
            0 => bail!("process {pid} is gone"),
            kib => total += kib,
        }
    }
    Ok(total)
}

/// The resident memory once it has stopped moving (three equal readings
/// 200 ms apart, or 5 s).
async fn settled_rss(pids: &[u32]) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = rss_kib(pids)?;
    let mut same = 0;
    while same < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss_kib(pids)?;
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    Ok(last)
}

/// Fresh clients one after another: each opens a connection, sends one
/// request and closes. Latencies in ms, sorted.
async fn fresh_clients(client: &Client, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let mut conn = client.connect().await?;
        client.request(&mut conn).await?;
        took.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    Ok(took)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A closed loop of 16 kept-alive connections, each sending its next request
/// when the last is answered, while the fresh clients run. Returns requests
/// per second and the fresh clients' latencies.
async fn load_with_probes(
    client: Arc<Client>,
    secs: u64,
    probes: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let mut conn = client.connect().await?;
        let (client, done, stop) = (client.clone(), done.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let open = client.request(&mut conn).await?;
                done.fetch_add(1, Ordering::Relaxed);
                if !open {
                    conn = client.connect().await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    let start = Instant::now();
    let from = done.load(Ordering::Relaxed);
    let mut took = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        if took.len() < probes {
            took.extend(fresh_clients(&client, 1).await?);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let served = done.load(Ordering::Relaxed) - from;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await??;
    }
    took.sort_by(f64::total_cmp);
    Ok((served as f64 / elapsed, took))
}

fn tls_connector(ca: &PathBuf, mode: Mode) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("{}: cannot read", ca.display()))?
    {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = match mode {
        Mode::H2 => vec![b"h2".to_vec()],
        _ => vec![b"http/1.1".to_vec()],
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    switchyard_hostile::raise_open_files();
    let tls = match (args.mode, &args.ca) {
        (Mode::Plain, _) => None,
        (mode, Some(ca)) => Some(tls_connector(ca, mode)?),
        (_, None) => bail!("--mode tls and h2 need --ca"),
    };
    let client = Arc::new(Client {
        addr: args.addr,
        mode: args.mode,
        tls,
        path: args.path.clone(),
    });
    // Warm the proxy (its pools, its first TLS session) before measuring.
    fresh_clients(&client, 20).await?;
    let quiet = fresh_clients(&client, args.probes).await?;
    let (rps_before, _) = if args.load_secs > 0 {
        load_with_probes(client.clone(), args.load_secs, 0).await?
    } else {
        (0.0, Vec::new())
    };

    let before = settled_rss(&args.pids).await?;
    let used = (args.count as f64 * args.used).round() as usize;
    // Opened 256 at a time (below the listen backlog); the requests go 32
    // at a time, as many clients as a closed-loop load would have.
    let opening = Arc::new(Semaphore::new(256));
    let requesting = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let permit = opening.clone().acquire_owned().await?;
        let (client, requesting) = (client.clone(), requesting.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await?;
            drop(permit);
            if i < used {
                let _turn = requesting.acquire().await?;
                client.request(&mut conn).await?;
            }
            anyhow::Ok(conn)
        }));
    }
    let mut held = Vec::with_capacity(args.count);
    for t in tasks {
        held.push(t.await?.context("opening an idle connection")?);
    }
    let after = settled_rss(&args.pids).await?;
    let idle = fresh_clients(&client, args.probes).await?;
    let (rps_idle, loaded) = if args.load_secs > 0 {
        load_with_probes(client.clone(), args.load_secs, args.probes).await?
    } else {
        (0.0, Vec::new())
    };
    // Still open at the end: a proxy that dropped them would show here.
    let mut alive = 0;
    for conn in &held {
        alive += usize::from(match conn {
            Conn::H1(s) => !s.is_closed(),
            Conn::H2(s) => !s.is_closed(),
        });
    }
    println!(
        "mode={:?} count={} used={} alive={} rss_before_kib={} rss_after_kib={} per_conn_kib={:.2} \
         fresh_p50_ms={:.3} fresh_p99_ms={:.3} idle_fresh_p50_ms={:.3} idle_fresh_p99_ms={:.3} \
         load_rps={:.0} idle_load_rps={:.0} idle_load_fresh_p99_ms={:.3}",
        args.mode,
        args.count,
        used,
        alive,
        before,
        after,
        (after as f64 - before as f64) / args.count as f64,
        quantile(&quiet, 0.5),
        quantile(&quiet, 0.99),
        quantile(&idle, 0.5),
        quantile(&idle, 0.99),
        rps_before,
        rps_idle,
        quantile(&loaded, 0.99),
    );
    Ok(())
}
