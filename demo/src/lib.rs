//! `switchyard demo`: three reference regions at simulated distances (a full
//! owner in us-east-1, a full replica in eu-west-1 ~80 ms away, a read-only
//! replica in ap-northeast-1 ~160 ms away), the real router in front of them
//! with geo routing, and a client mix from three places. The read-only region
//! starts dark and is ramped in: synthetic traffic first, then growing shares
//! of real users; partway, the region starts failing and the ramp's error
//! gate halts it and steps its dial back down. It prints how traffic splits
//! by region and class while it runs, each ramp step as it happens, and a
//! summary at the end.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use switchyard_region::{RegionOpts, Role};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How long the client mix runs, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests per second the client mix sends.
    #[arg(long, default_value_t = 100)]
    pub rps: u32,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    switchyard_config::parse_duration(s)
        .ok_or_else(|| format!("expected a duration such as 15s, found {s:?}"))
}

/// Published typical round trips from US-East.
const EU_RTT: Duration = Duration::from_millis(80);
const TOKYO_RTT: Duration = Duration::from_millis(160);

struct Place {
    name: &'static str,
    source: IpAddr,
    share: u32,
}

const PLACES: [Place; 3] = [
    Place {
        name: "US",
        source: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
        share: 50,
    },
    Place {
        name: "DE",
        source: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)),
        share: 30,
    },
    Place {
        name: "JP",
        source: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3)),
        share: 20,
    },
];

#[derive(Default)]
struct Tally {
    /// (region, class) → latencies in ms.
    by_region: BTreeMap<(String, &'static str), Vec<f64>>,
    /// Status → count.
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

/// Kills the router child when the demo ends, however it ends.
struct RouterChild(Child);

impl Drop for RouterChild {
    fn drop(&mut self) {
        // SIGTERM: the router drains and exits on its own.
        let signalled = rustix::process::Pid::from_raw(self.0.id() as i32)
            .map(|pid| rustix::process::kill_process(pid, rustix::process::Signal::TERM));
        if !matches!(signalled, Some(Ok(()))) {
            // Already gone, or not signallable: make sure it is gone.
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn demo_config(us: SocketAddr, eu: SocketAddr, ap: SocketAddr, dir: &std::path::Path) -> String {
    format!(
        r#"# Written by `switchyard demo`.
listen: {{ http: 127.0.0.1:0 }}
admin: {{ addr: 127.0.0.1:0, token_env: SWITCHYARD_DEMO_TOKEN }}
metrics: {{ addr: 127.0.0.1:0 }}
state_dir: {state}
regions:
  us-east-1:
    type: full
    endpoints: ["{us}"]
    location: {{ continent: NA, country: US, lat: 38.9, lon: -77.0 }}
    services: [api]
    compliance: {{ data_residency: US }}
    health: {{ interval: 500ms, timeout: 1s }}
  eu-west-1:
    type: full
    endpoints: ["{eu}"]
    location: {{ continent: EU, country: IE, lat: 53.3, lon: -6.3 }}
    services: [api]
    compliance: {{ data_residency: EU }}
    health: {{ interval: 500ms, timeout: 1s }}
  ap-northeast-1:
    type: read-only
    endpoints: ["{ap}"]
    location: {{ continent: AS, country: JP, lat: 35.7, lon: 139.7 }}
    services: [api]
    compliance: {{ data_residency: JP }}
    health: {{ interval: 500ms, timeout: 1s }}
    dial: 0
routing:
  policy: geo
  geo:
    networks: {{ "127.0.0.2/32": DE, "127.0.0.3/32": JP }}
    prefer: {{ EU: [eu-west-1, us-east-1], AS: [ap-northeast-1, us-east-1], default: [us-east-1, eu-west-1] }}
consistency:
  freshness: {{ default: bounded, classes: {{ strong: 0s, bounded: 2s, relaxed: 30s }} }}
  partition: {{ header: X-Partition }}
  owners: {{ default: us-east-1 }}
  idempotency: generate
synthetic: {{ header: X-Switchyard-Synthetic, token_env: SWITCHYARD_DEMO_SYNTHETIC }}
ramps:
  ap-launch:
    region: ap-northeast-1
    steps: [synthetic, 10, 50, 100]
    hold: 3s
    step_down_every: 700ms
    gates: {{ max_error_rate: 0.05 }}
"#,
        state = dir.join("state").display(),
    )
}

/// The token synthetic demo requests carry.
const SYNTHETIC_TOKEN: &str = "demo-synthetic";
const ADMIN_TOKEN: &str = "switchyard-demo-admin";

/// The router's listeners, from its ready line.
struct Edge {
    http: SocketAddr,
    admin: SocketAddr,
}

fn start_router(config: &std::path::Path) -> anyhow::Result<(RouterChild, Edge)> {
    let exe = std::env::current_exe().context("cannot find the switchyard binary")?;
    let mut child = Command::new(exe)
        .args(["run", "--config"])
        .arg(config)
        .env("SWITCHYARD_DEMO_TOKEN", ADMIN_TOKEN)
        .env("SWITCHYARD_DEMO_SYNTHETIC", SYNTHETIC_TOKEN)
        .env(
            "SWITCHYARD_LOG",
            std::env::var("SWITCHYARD_LOG").unwrap_or_else(|_| {
                "warn,switchyard_router::control::ramp=off,switchyard_router::control::promote=off,pingora_proxy=error,pingora_core::connectors=off"
                    .into()
            }),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the router")?;
    let stdout = child.stdout.take().context("router stdout")?;
    let child = RouterChild(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|a| a.parse().ok())
    };
    match (field("http="), field("admin=")) {
        (Some(http), Some(admin)) => Ok((child, Edge { http, admin })),
        _ => bail!("the router did not start: {line:?}"),
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: DemoArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let region = |name: &str, role, delay, lag, from: Option<String>| RegionOpts {
        name: name.into(),
        role,
        services: vec!["api".into()],
        replicate_from: from,
        lag,
        delay,
        partition_header: "X-Partition".into(),
    };
    let (us, _) = switchyard_region::spawn(
        any,
        region(
            "us-east-1",
            Role::Primary,
            Duration::ZERO,
            Duration::ZERO,
            None,
        ),
    )
    .await?;
    let owner = Some(format!("http://{us}"));
    let (eu, _) = switchyard_region::spawn(
        any,
        region(
            "eu-west-1",
            Role::Replica,
            EU_RTT,
            Duration::from_millis(200),
            owner.clone(),
        ),
    )
    .await?;
    let (ap, _) = switchyard_region::spawn(
        any,
        region(
            "ap-northeast-1",
            Role::Replica,
            TOKYO_RTT,
            Duration::from_millis(400),
            owner,
        ),
    )
    .await?;
    let config = dir.join("switchyard.yaml");
    std::fs::write(&config, demo_config(us, eu, ap, &dir))?;
    println!("regions: us-east-1 {us} (owner), eu-west-1 {eu} (+80 ms, replica), ap-northeast-1 {ap} (+160 ms, read-only)");
    let (_router, edge_addrs) = tokio::task::block_in_place(|| start_router(&config))?;
    let edge = edge_addrs.http;
    println!(
        "router: http://{edge}  admin: http://{}  config: {}",
        edge_addrs.admin,
        config.display()
    );
    println!(
        "console: http://{}/console#token={ADMIN_TOKEN}",
        edge_addrs.admin
    );
    let mix: Vec<String> = PLACES
        .iter()
        .map(|p| format!("{} {}% from {}", p.name, p.share, p.source))
        .collect();
    println!(
        "client mix: {} req/s for {:?}; 80% reads, 20% writes; {}; a tenth of JP reads are synthetic",
        args.rps,
        args.duration,
        mix.join(", ")
    );
    println!(
        "ramp ap-launch: ap-northeast-1 from synthetic through 10%, 50%, 100% of its real traffic, 3 s a step, halting on more than 5% errors\n"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await; // first health probes

    let clients: Vec<reqwest::Client> = PLACES
        .iter()
        .map(|p| {
            reqwest::Client::builder()
                .local_address(p.source)
                .timeout(Duration::from_secs(5))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rps.max(1))));
    let mut next_report = Duration::from_secs(1);
    let mut n: u64 = 0;
    let admin = reqwest::Client::new();
    let ramp = RampWatch {
        admin: edge_addrs.admin,
        client: admin,
        seen: Default::default(),
    };
    ramp.post("/admin/v1/ramps/ap-launch/start").await?;
    let mut ap_failing = false;
    while start.elapsed() < args.duration {
        tick.tick().await;
        n += 1;
        let pick = (n * 37 % 100) as u32;
        let place = if pick < PLACES[0].share {
            0
        } else if pick < PLACES[0].share + PLACES[1].share {
            1
        } else {
            2
        };
        let client = clients[place].clone();
        let write = n.is_multiple_of(5);
        let synthetic = place == 2 && n % 10 == 3;
        // Reads follow the writes a little behind, so most find their key.
        let key = format!("k{}", (n - n % 5) % 200);
        let url = format!("http://{edge}/kv/{key}");
        let key = key.clone();
        let shared = tally.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let req = if write {
                client.put(&url).body(format!("v{n}"))
            } else if synthetic {
                client
                    .get(&url)
                    .header("X-Switchyard-Synthetic", SYNTHETIC_TOKEN)
            } else {
                client.get(&url)
            };
            let result = req.header("X-Partition", key).send().await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(resp) => {
                    let region = resp
                        .headers()
                        .get("x-switchyard-region")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("(router)")
                        .to_string();
                    *s.statuses.entry(resp.status().as_u16()).or_default() += 1;
                    s.by_region
                        .entry((region, if write { "write" } else { "read" }))
                        .or_default()
                        .push(ms);
                }
                Err(_) => s.errors += 1,
            }
        });
        if start.elapsed() >= next_report {
            print_progress(
                next_report,
                &tally.lock().unwrap_or_else(|e| e.into_inner()),
            );
            next_report += Duration::from_secs(1);
            let status = ramp.print_new_events().await;
            // Once real users reach half of ap-northeast-1's share, it breaks.
            if !ap_failing && status.as_deref() == Some("50") {
                ap_failing = true;
                println!("  >> ap-northeast-1 starts answering 500 to every request");
                reqwest::Client::new()
                    .put(format!("http://{ap}/_control/fail"))
                    .json(&serde_json::json!({"value": 500}))
                    .send()
                    .await?;
            }
        }
    }
    ramp.print_new_events().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let s = tally.lock().unwrap_or_else(|e| e.into_inner());
        print_summary(&s);
    }
    consistency_tour(edge, &clients[1]).await?;
    failover_finale(edge, &ramp, us, eu, &config).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A request from Germany, its serving region and one header of the answer.
async fn show(
    what: &str,
    req: reqwest::RequestBuilder,
    header: &str,
) -> anyhow::Result<reqwest::Response> {
    let resp = req.send().await?;
    let region = resp
        .headers()
        .get("x-switchyard-region")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(router)")
        .to_string();
    let extra = (!header.is_empty())
        .then(|| resp.headers().get(header))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("  {header}: {}", v.chars().take(40).collect::<String>()))
        .unwrap_or_default();
    println!(
        "  {what:<60} → {} from {region}{extra}",
        resp.status().as_u16()
    );
    Ok(resp)
}

/// Freshness classes and read-your-writes, from a client in Germany.
async fn consistency_tour(edge: SocketAddr, de: &reqwest::Client) -> anyhow::Result<()> {
    println!("\nconsistency, from a client in Germany (eu-west-1 replicates us-east-1 with ~200 ms lag):");
    let url = |k: &str| format!("http://{edge}/kv/{k}");
    show(
        "GET k0, X-Freshness: strong (owner only)",
        de.get(url("k0")).header("X-Freshness", "strong"),
        "",
    )
    .await?;
    show(
        "GET k0, X-Freshness: bounded (replica within 2s)",
        de.get(url("k0")).header("X-Freshness", "bounded"),
        "",
    )
    .await?;
    let resp = show(
        "PUT cart (a write goes to the owner)",
        de.put(url("cart")).body("3 items"),
        "x-fencing-token",
    )
    .await?;
    let token = resp
        .headers()
        .get("x-switchyard-ryw")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    show(
        "GET cart at once, relaxed, without the token",
        de.get(url("cart")).header("X-Freshness", "relaxed"),
        "x-commit-position",
    )
    .await?;
    show(
        "GET cart at once, relaxed, with the read-your-writes token",
        de.get(url("cart"))
            .header("X-Freshness", "relaxed")
            .header("X-Switchyard-Ryw", &token),
        "x-commit-position",
    )
    .await?;
    Ok(())
}

/// The owner dies under write load; eu-west-1 (about 200 ms behind) takes
/// over; the reconciler finds the writes the lag window lost and replays them.
async fn failover_finale(
    edge: SocketAddr,
    admin: &RampWatch,
    us: SocketAddr,
    eu: SocketAddr,
    config: &std::path::Path,
) -> anyhow::Result<()> {
    println!("\nfailover: us-east-1 dies under write load (100 writes/s); eu-west-1, ~200 ms behind, takes over");
    let knob = |addr: SocketAddr, knob: &'static str, value: serde_json::Value| async move {
        reqwest::Client::new()
            .put(format!("http://{addr}/_control/{knob}"))
            .json(&serde_json::json!({ "value": value }))
            .send()
            .await
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut writes = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..150u32 {
        tick.tick().await;
        if i == 100 {
            // The owner's process dies: it answers nothing useful, ships nothing more.
            knob(eu, "replicate_from", serde_json::Value::Null).await?;
            knob(us, "fail", 503.into()).await?;
            knob(us, "health", 503.into()).await?;
            println!("  >> us-east-1 is down (after 100 writes)");
        }
        let key = format!("order-{i}");
        let req = client
            .put(format!("http://{edge}/kv/{key}"))
            .header("X-Partition", &key)
            .body(format!("order {i}"));
        writes.push(tokio::spawn(async move {
            req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    let mut acked = 0;
    for w in writes {
        acked += u32::from(w.await? == 201);
    }
    println!(
        "  {acked} of 150 writes acknowledged by us-east-1 before it died; the other {} were refused with 503 (writes never go elsewhere)",
        150 - acked
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let status: serde_json::Value = admin
            .client
            .get(format!("http://{}/admin/v1/status", admin.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        if status["regions"]["us-east-1"]["healthy"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    knob(eu, "role", "primary".into()).await?;
    let resp = admin
        .client
        .post(format!("http://{}/admin/v1/promote", admin.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"partition": "*", "to": "eu-west-1"}))
        .send()
        .await?;
    let body: serde_json::Value = resp.json().await?;
    for p in body["promoted"].as_array().into_iter().flatten() {
        println!(
            "  promoted partition {} from {} (epoch {}) to {} (epoch {}), at its applied position {}",
            p["partition"].as_str().unwrap_or("?"),
            p["from"].as_str().unwrap_or("?"),
            p["from_epoch"],
            p["to"].as_str().unwrap_or("?"),
            p["to_epoch"],
            p["applied_position"]
        );
    }
    // A customer changes an order the old owner took but the new one never saw.
    let changed = client
        .put(format!("http://{edge}/kv/order-95"))
        .header("X-Partition", "order-95")
        .body("order 95, changed after the failover")
        .send()
        .await?;
    println!(
        "  PUT order-95 again after the failover → {} from {}",
        changed.status().as_u16(),
        changed
            .headers()
            .get("x-switchyard-region")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
    );

    println!("\nswitchyard-reconcile --apply (in process), reading the router's op log:");
    let cfg = switchyard_config::load(config)?;
    let logs = switchyard_reconciler::source::read_dirs(std::slice::from_ref(&cfg.state_dir))?;
    let mut plan = switchyard_reconciler::plan::plan(&logs);
    let checkpoint_path = cfg.state_dir.join("reconcile.checkpoint");
    let mut checkpoint = switchyard_reconciler::checkpoint::Checkpoint::open(&checkpoint_path)?;
    let opts = switchyard_reconciler::apply::Options {
        rate: 200.0,
        timeout: Duration::from_secs(5),
    };
    switchyard_reconciler::apply::apply(&mut plan, &cfg, &mut checkpoint, &opts).await?;
    checkpoint.complete()?;
    let summary = switchyard_reconciler::plan::summarize(&logs, &plan);
    let run = switchyard_reconciler::report::Run {
        mode: "apply",
        sources: vec![cfg.state_dir.display().to_string()],
        generated_at_ms: switchyard_oplog::unix_ms(),
    };
    let html = std::env::temp_dir().join("switchyard-demo-reconcile.html");
    let json = std::env::temp_dir().join("switchyard-demo-reconcile.json");
    std::fs::write(
        &html,
        switchyard_reconciler::report::html(&run, &logs, &plan, &summary),
    )?;
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&switchyard_reconciler::report::json(
            &run, &logs, &plan, &summary,
        ))?,
    )?;
    println!(
        "  {} writes scanned; {} in the failover window: {} already on eu-west-1, {} replayed, {} conflict(s), {} failed; {} unresolved",
        summary.ops_scanned,
        summary.in_window,
        summary.already_present,
        summary.replayed,
        summary.conflicts,
        summary.failed,
        summary.unresolved
    );
    for c in plan.with_verdict(switchyard_reconciler::plan::Verdict::Conflict) {
        println!(
            "  conflict: {} {}: {}",
            c.op.intent.method, c.op.intent.path, c.reason
        );
    }
    println!("  report: {}\n          {}", html.display(), json.display());
    Ok(())
}

fn print_progress(at: Duration, s: &Tally) {
    let mut line = format!("t={:>3}s ", at.as_secs());
    for ((region, class), v) in &s.by_region {
        line.push_str(&format!(" {region}/{class}={}", v.len()));
    }
    if s.errors > 0 {
        line.push_str(&format!("  errors={}", s.errors));
    }
    println!("{line}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn print_summary(s: &Tally) {
    let total: usize = s.by_region.values().map(Vec::len).sum();
    println!("\nsummary: {total} answered, {} transport errors", s.errors);
    println!(
        "{:<16} {:<6} {:>7} {:>7} {:>9} {:>9}",
        "region", "class", "count", "share", "p50 ms", "p99 ms"
    );
    for ((region, class), v) in &s.by_region {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        println!(
            "{region:<16} {class:<6} {:>7} {:>6.1}% {:>9.1} {:>9.1}",
            v.len(),
            100.0 * v.len() as f64 / total.max(1) as f64,
            percentile(&v, 0.5),
            percentile(&v, 0.99)
        );
    }
    let statuses: Vec<String> = s
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!("statuses: {}", statuses.join(", "));
}

/// Follows the demo ramp through the admin API and prints its steps as they happen.
struct RampWatch {
    admin: SocketAddr,
    client: reqwest::Client,
    seen: Mutex<std::collections::HashSet<(u64, String)>>,
}

impl RampWatch {
    async fn post(&self, path: &str) -> anyhow::Result<()> {
        let resp = self
            .client
            .post(format!("http://{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("{path}: {} {}", resp.status(), resp.text().await?);
        }
        Ok(())
    }

    /// Prints ramp events not printed yet; returns the current step.
    async fn print_new_events(&self) -> Option<String> {
        let status: serde_json::Value = self
            .client
            .get(format!("http://{}/admin/v1/status", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let r = &status["ramps"]["ap-launch"];
        let mut events: Vec<(u64, String)> = r["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|e| {
                        (
                            e["at_ms"].as_u64().unwrap_or(0),
                            e["what"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        events.sort();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            if seen.insert(e.clone()) {
                println!("  ramp ap-launch: {}", e.1);
            }
        }
        Some(match &r["step"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}
