//! A constant request rate over kept-alive HTTP/1.1 connections, fast enough
//! for tens of thousands of requests a second from one core: `--rate` is
//! split evenly over `--connections`, each connection sends its requests on
//! its own schedule (request `i` is due at `start + i / share`), and a
//! request held back by the one before it (still unanswered when it was
//! due) counts its latency from when it was due, not from when it was sent.
//! A stall therefore shows in every request it delayed (coordinated omission
//! corrected, as wrk2 does). A request sent late only by the client's own
//! timer (tokio's has millisecond ticks) counts from when it was sent: that
//! lateness is the client's, not the server's. Latencies are kept whole and sorted
//! for exact percentiles: a run holds at most a few hundred thousand, less
//! than a histogram crate's configuration would cost to get right.
//!
//! ```text
//! rate-load --addr 127.0.0.1:8080 --rate 20000 [--connections 32] [--secs 5] [--path /kv/x]
//!           [--write-every 4]
//! ```
//!
//! With `--write-every N`, every Nth request of a connection is a write
//! (`POST` to the same path with a small JSON body), the mix the peers
//! drills send to Switchyard with its routing features on.
//!
//! Prints one `key=value` line: the rate asked and achieved, latency
//! percentiles in ms, and the requests that failed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(
    name = "rate-load",
    about = "A constant request rate, latency from when each request was due"
)]
struct Args {
    #[arg(long)]
    addr: SocketAddr,
    /// Requests per second, in all.
    #[arg(long)]
    rate: f64,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 5)]
    secs: u64,
    #[arg(long, default_value = "/kv/x")]
    path: String,
    /// Every Nth request is a write (`POST`); 0, none.
    #[arg(long, default_value_t = 0)]
    write_every: u64,
}

/// The body every write carries.
const WRITE_BODY: &[u8] = br#"{"v":1}"#;

/// One connection's share: latencies in µs, and failures.
async fn run_connection(
    addr: SocketAddr,
    path: String,
    write_every: u64,
    interval: Duration,
    start: Instant,
    until: Instant,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut due = start;
    let mut previous_answered = start;
    let mut sent_count: u64 = 0;
    while due < until {
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        let counted_from = if previous_answered > due { due } else { sent };
        sent_count += 1;
        let write = write_every > 0 && sent_count.is_multiple_of(write_every);
        let (builder, body) = if write {
            let post = hyper::Request::post(path.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json");
            (post, Bytes::from_static(WRITE_BODY))
        } else {
            (hyper::Request::get(path.as_str()), Bytes::new())
        };
        let request = builder
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(body))?;
        let ok = match send.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                response.into_body().collect().await.is_ok() && status.is_success()
            }
            Err(_) => false,
        };
        previous_answered = Instant::now();
        if ok {
            let micros = previous_answered.duration_since(counted_from).as_micros();
            latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
        } else {
            failed += 1;
            if send.is_closed() {
                break;
            }
        }
        due += interval;
    }
    Ok((latencies, failed))
}

fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    f64::from(sorted[((sorted.len() - 1) as f64 * q).round() as usize]) / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rate.is_nan() || args.rate <= 0.0 || args.connections == 0 {
        eprintln!("rate-load: --rate and --connections must be above 0");
        std::process::exit(2);
    }
    // One thread: the client's own cost stays on the CPU it is pinned to.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
        let start = Instant::now() + Duration::from_millis(100);
        let until = start + Duration::from_secs(args.secs);
        let mut tasks = Vec::new();
        for i in 0..args.connections {
            // Spread the connections' schedules over one interval.
            let offset = interval.mul_f64(i as f64 / args.connections as f64);
            tasks.push(tokio::spawn(run_connection(
                args.addr,
                args.path.clone(),
                args.write_every,
                interval,
                start + offset,
                until,
            )));
        }
        let mut all = Vec::new();
        let mut failed = 0;
        for t in tasks {
            let (latencies, f) = t.await??;
            all.extend(latencies);
            failed += f;
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_unstable();
        println!(
            "rate={:.0} achieved={:.0} sent={} failed={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
            args.rate,
            all.len() as f64 / elapsed.max(args.secs as f64),
            all.len() as u64 + failed,
            failed,
            quantile(&all, 0.5),
            quantile(&all, 0.9),
            quantile(&all, 0.99),
            quantile(&all, 0.999),
            all.last().map_or(f64::NAN, |m| f64::from(*m) / 1000.0),
        );
        anyhow::Ok(())
    })
}
