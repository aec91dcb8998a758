//! A constant request rate over kept-alive HTTP/1.1 connections, fast enough
//! for tens of thousands of requests a second from one core: `--rate` is
//! split evenly over `--connections`, each connection sends its requests on
//! its own schedule (request `i` is due at `start + i / share`), and a
//! request held back by the one before it (still unanswered when it was
//! due) counts its latency from when it was due, not from when it was sent.
//! A stall therefore shows in every request it delayed (coordinated omission
//! corrected, as wrk2 does). Requests are released by one pacer, on a
//! `timerfd` ticking every `--tick-us` (100 µs): the runtime's own timer
//! rounds every wait up to its next millisecond tick, which would send a
//! millisecond's requests of all the connections at once, a burst the server
//! has to queue (at 36,000 requests a second, 36 at a time), so the latency
//! measured would be mostly that queue, growing with the server's CPU cost
//! per request, rather than what the server adds to one request. A timer per
//! request would spread them exactly but costs the client more than the
//! server it measures (each a hardware timer programmed, ~12 µs here). A
//! request sent late by the client itself counts from when it was sent: that
//! lateness is the client's, not the server's. Latencies are kept whole and sorted
//! for exact percentiles: a run holds at most a few hundred thousand, less
//! than a histogram crate's configuration would cost to get right.
//!
//! ```text
//! rate-load --addr 127.0.0.1:8080 --rate 20000 [--connections 32] [--secs 5] [--path /kv/x]
//!           [--tick-us 100]
//!           [--write-every 4]
//! ```
//!
//! With `--write-every N`, every Nth request of a connection is a write
//! (`POST` to the same path with a small JSON body), the mix the peers
//! drills send to Switchyard with its routing features on.
//!
//! Prints one `key=value` line: the rate asked and achieved, latency
//! percentiles in ms, and the requests that failed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;

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
    /// How often the pacer releases the requests that are due, in µs.
    #[arg(long, default_value_t = 100)]
    tick_us: u64,
}

/// The body every write carries.
const WRITE_BODY: &[u8] = br#"{"v":1}"#;

/// When one connection sends: request `i` at `start + i * interval`, before
/// `until`, each released by `pacer` as connection number `index`.
struct Schedule {
    interval: Duration,
    start: Instant,
    until: Instant,
    pacer: Arc<Pacer>,
    index: usize,
}

/// One connection's share: latencies in µs, and failures.
async fn run_connection(
    addr: SocketAddr,
    path: String,
    write_every: u64,
    schedule: Schedule,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let Schedule {
        interval,
        start,
        until,
        pacer,
        index,
    } = schedule;
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
        pacer.wait_until(index, due).await;
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

/// Releases each connection's next request once it is due, checked on
/// every tick of a periodic `timerfd` (the kernel's high-resolution timer,
/// read through the runtime's reactor like a socket). `tokio-timerfd` wraps
/// the same call through two more crates (`timerfd`, `slab`); on `rustix`,
/// already a dependency, it is these lines.
struct Pacer {
    /// The periodic timer.
    ticks: AsyncFd<OwnedFd>,
    /// (when, connection): the requests waiting for their time, soonest first.
    waiting: Mutex<BinaryHeap<Reverse<(Instant, usize)>>>,
    /// One per connection: its request may go.
    release: Vec<Notify>,
}

impl Pacer {
    /// A pacer for `connections`, its timer ticking every `tick` from now.
    fn new(connections: usize, tick: Duration) -> io::Result<Arc<Self>> {
        use rustix::time::{
            timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
            TimerfdTimerFlags, Timespec,
        };
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        let every = Timespec {
            tv_sec: tick.as_secs() as i64,
            tv_nsec: i64::from(tick.subsec_nanos()),
        };
        timerfd_settime(
            &fd,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: every,
                it_value: every,
            },
        )?;
        // SAFETY: the descriptor is an `OwnedFd` the `AsyncFd` owns: it stays
        // open, and the same, until the `AsyncFd` is dropped.
        #[allow(unsafe_code)]
        let ticks = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Arc::new(Pacer {
            ticks,
            waiting: Mutex::new(BinaryHeap::with_capacity(connections)),
            release: (0..connections).map(|_| Notify::new()).collect(),
        }))
    }

    /// Returns once `due` has passed (at once if it has), to within a tick.
    async fn wait_until(&self, connection: usize, due: Instant) {
        if due <= Instant::now() {
            return;
        }
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Reverse((due, connection)));
        // A release made before this waits is kept as a permit: none is lost.
        self.release[connection].notified().await;
    }

    /// Releases what is due at each tick, until aborted.
    async fn run(self: Arc<Self>) -> io::Result<()> {
        loop {
            let mut ready = self.ticks.readable().await?;
            // The count of ticks since the last read: "would block" until one.
            if let Ok(read) = ready
                .try_io(|fd| rustix::io::read(fd.get_ref(), &mut [0u8; 8]).map_err(io::Error::from))
            {
                read?;
            } else {
                continue;
            }
            let now = Instant::now();
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            while let Some(Reverse((due, connection))) = waiting.peek().copied() {
                if due > now {
                    break;
                }
                waiting.pop();
                self.release[connection].notify_one();
            }
        }
    }
}

fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    f64::from(sorted[((sorted.len() - 1) as f64 * q).round() as usize]) / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rate.is_nan() || args.rate <= 0.0 || args.connections == 0 || args.tick_us == 0 {
        eprintln!("rate-load: --rate, --connections and --tick-us must be above 0");
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
        let pacer = Pacer::new(args.connections, Duration::from_micros(args.tick_us))?;
        let mut ticking = tokio::spawn(pacer.clone().run());
        let mut tasks = Vec::new();
        for i in 0..args.connections {
            // Spread the connections' schedules over one interval.
            let offset = interval.mul_f64(i as f64 / args.connections as f64);
            tasks.push(tokio::spawn(run_connection(
                args.addr,
                args.path.clone(),
                args.write_every,
                Schedule {
                    interval,
                    start: start + offset,
                    until,
                    pacer: pacer.clone(),
                    index: i,
                },
            )));
        }
        let collected = async {
            let mut all = Vec::new();
            let mut failed = 0;
            for t in tasks {
                let (latencies, f) = t.await??;
                all.extend(latencies);
                failed += f;
            }
            anyhow::Ok((all, failed))
        };
        // The pacer ends only on an error, and then no connection would be
        // released again: the run ends with that error rather than waiting.
        let (mut all, failed) = tokio::select! {
            collected = collected => collected?,
            stopped = &mut ticking => {
                stopped??;
                anyhow::bail!("rate-load: the pacer stopped");
            }
        };
        ticking.abort();
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
