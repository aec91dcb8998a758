//! Slow-region drill: closed-loop load through the router to three
//! reference regions; one region turns slow (+500 ms on its API, health
//! checks still passing) and later recovers. Prints the p50/p99 before,
//! during and after, and how long the router took to eject the region —
//! then runs the same load through nginx (round robin with passive error
//! checks) for comparison. Bounded: three phases of fixed length.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use switchyard_region::{RegionOpts, Role};

/// The admin token the drill gives the router (16 bytes at least, as every token).
const DRILL_TOKEN: &str = "slow-region-drill-token";

#[derive(Parser)]
struct Args {
    /// The switchyard binary.
    #[arg(long, default_value = "target/release/switchyard")]
    router: PathBuf,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Length of each phase (before, slow, after), in seconds.
    #[arg(long, default_value_t = 8)]
    phase: u64,
    /// How slow the region turns, in milliseconds.
    #[arg(long, default_value_t = 500)]
    slow_ms: u64,
    /// Skip the nginx run.
    #[arg(long)]
    no_nginx: bool,
}

/// Asks the proxy whether it has taken the slow region out.
type EjectionWatch = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync,
>;

/// One answered request: when it started (since the drill began), its latency, its status.
#[derive(Clone, Copy)]
struct Sample {
    at: Duration,
    latency: Duration,
    ok: bool,
}

struct Child2(Child);

impl Drop for Child2 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn set(region: SocketAddr, knob: &str, value: u64) -> anyhow::Result<()> {
    reqwest::Client::new()
        .put(format!("http://{region}/_control/{knob}"))
        .json(&serde_json::json!({ "value": value }))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs the three phases against `url`, turning `slow` slow in the middle.
/// `watch` is polled during the slow phase; it returns true once the
/// proxy has taken the region out.
async fn drive(
    url: String,
    args: &Args,
    slow: SocketAddr,
    watch: Option<EjectionWatch>,
) -> anyhow::Result<(Vec<Sample>, Option<Duration>)> {
    let phase = Duration::from_secs(args.phase);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (url, samples, stop) = (url.clone(), samples.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = client
                    .get(&url)
                    .header("X-Partition", format!("c{c}-{i}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() < 500);
                let s = Sample {
                    at: t.duration_since(started),
                    latency: t.elapsed(),
                    ok,
                };
                samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(phase).await;
    set(slow, "slow", args.slow_ms).await?;
    let slow_at = Instant::now();
    let mut ejected_after = None;
    while slow_at.elapsed() < phase {
        if ejected_after.is_none() {
            if let Some(w) = &watch {
                if w().await {
                    ejected_after = Some(slow_at.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set(slow, "slow", 0).await?;
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let s = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((s, ejected_after))
}

fn report(name: &str, samples: &[Sample], phase: Duration) -> [f64; 3] {
    let mut p99s = [f64::NAN; 3];
    for (i, label) in ["before", "slow", "after"].iter().enumerate() {
        let (from, to) = (phase * i as u32, phase * (i as u32 + 1));
        let mut lat: Vec<Duration> = samples
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .map(|s| s.latency)
            .collect();
        let errors = samples
            .iter()
            .filter(|s| s.at >= from && s.at < to && !s.ok)
            .count();
        lat.sort();
        p99s[i] = percentile(&lat, 0.99);
        println!(
            "{name:<11} {label:<7} {:>7} req {:>8.1} req/s  p50 {:>6.1} ms  p99 {:>6.1} ms  p99.9 {:>6.1} ms  max {:>6.1} ms  errors {errors}",
            lat.len(),
            lat.len() as f64 / phase.as_secs_f64(),
            percentile(&lat, 0.5),
            p99s[i],
            percentile(&lat, 0.999),
            percentile(&lat, 1.0),
        );
    }
    p99s
}

fn router_config(regions: &[SocketAddr], dir: &std::path::Path) -> String {
    let mut text = format!(
        "listen: {{ http: 127.0.0.1:0 }}\nadmin: {{ addr: 127.0.0.1:0, token_env: DRILL_TOKEN }}\nstate_dir: {}\nregions:\n",
        dir.join("state").display()
    );
    for (i, r) in regions.iter().enumerate() {
        text.push_str(&format!(
            "  r{i}:\n    type: full\n    endpoints: [\"{r}\"]\n    services: [api]\n    health: {{ interval: 500ms, timeout: 1s }}\n"
        ));
    }
    text.push_str("routing:\n  policy: weighted\n");
    text
}

fn nginx_config(regions: &[SocketAddr], port: u16, dir: &std::path::Path) -> String {
    let servers: String = regions
        .iter()
        .map(|r| format!("    server {r} max_fails=3 fail_timeout=10s;\n"))
        .collect();
    format!(
        "worker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log stderr error;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n  upstream regions {{\n{servers}    keepalive 64;\n  }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{ proxy_pass http://regions; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_read_timeout 30s; }}\n  }}\n}}\n",
        dir = dir.display()
    )
}

async fn wait_port(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("switchyard-drill-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut regions = Vec::new();
    for name in ["r0", "r1", "r2"] {
        let (addr, _) = switchyard_region::spawn(
            "127.0.0.1:0".parse()?,
            RegionOpts {
                name: name.into(),
                role: Role::Primary,
                services: vec!["api".into()],
                replicate_from: None,
                lag: Duration::ZERO,
                delay: Duration::ZERO,
                partition_header: "X-Partition".into(),
            },
        )
        .await?;
        regions.push(addr);
    }
    let slow = regions[1];
    let phase = Duration::from_secs(args.phase);
    println!(
        "slow-region drill: 3 regions, {} closed-loop clients, phases of {}s; region r1 turns +{} ms slow (health still passing), then recovers\n",
        args.clients, args.phase, args.slow_ms
    );

    // Switchyard.
    let config = dir.join("switchyard.yaml");
    std::fs::write(&config, router_config(&regions, &dir))?;
    let mut child = Command::new(&args.router)
        .args(["run", "--config"])
        .arg(&config)
        .env("DRILL_TOKEN", DRILL_TOKEN)
        .env("SWITCHYARD_LOG", "error,pingora_core::connectors=off")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", args.router.display()))?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().context("stdout")?),
        &mut line,
    )?;
    let _router = Child2(child);
    let field = |name: &str| -> Option<SocketAddr> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|a| a.parse().ok())
    };
    let (Some(http), Some(admin)) = (field("http="), field("admin=")) else {
        bail!("the router did not start: {line:?}");
    };
    wait_port(http).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let watch: EjectionWatch = Box::new(move || {
        Box::pin(async move {
            let Ok(r) = reqwest::Client::new()
                .get(format!("http://{admin}/admin/v1/status"))
                .bearer_auth(DRILL_TOKEN)
                .send()
                .await
            else {
                return false;
            };
            r.json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["regions"]["r1"]["ejected"] == true)
        })
    });
    let (samples, ejected) = drive(format!("http://{http}/kv/x"), &args, slow, Some(watch)).await?;
    let sy = report("switchyard", &samples, phase);
    match ejected {
        Some(t) => println!(
            "switchyard  ejected r1 {:.2} s after it turned slow",
            t.as_secs_f64()
        ),
        None => println!("switchyard  did not eject r1 within the slow phase"),
    }
    drop(_router);

    // nginx, the same load and fault.
    if !args.no_nginx {
        let port = free_port()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_config(&regions, port, &dir))?;
        match Command::new("nginx")
            .args(["-e", "stderr", "-c"])
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
        {
            Err(e) => println!("\nnginx: not run ({e})"),
            Ok(c) => {
                let _nginx = Child2(c);
                let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
                wait_port(addr).await?;
                println!();
                let (samples, _) = drive(format!("http://{addr}/kv/x"), &args, slow, None).await?;
                let ng = report("nginx", &samples, phase);
                println!(
                    "\nratio switchyard/nginx p99: before {:.2}x, slow {:.2}x, after {:.2}x",
                    sy[0] / ng[0],
                    sy[1] / ng[1],
                    sy[2] / ng[2]
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
