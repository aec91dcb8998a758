//! Drill 10, tail latency and overload: hedged reads against a region that
//! turns slow with its health passing (beside the same load without
//! hedging); a `max_inflight` region under more concurrent reads than its
//! limit; an adaptive limit while a region's latency climbs with its load
//! (the limit printed over time); every health check failing while the APIs
//! answer (panic mode). Constant-rate load, latencies from when each request
//! was due.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_region::{Region, RegionOpts, Role};

use super::load::{self, MakeRequest};
use super::procs::{self, region_yaml, until, Router, Work};
use super::{Report, Scale};

async fn spawn(
    name: &str,
    role: Role,
    from: Option<String>,
) -> anyhow::Result<(String, Arc<Region>)> {
    let opts = RegionOpts {
        name: name.into(),
        role,
        services: vec!["api".into()],
        replicate_from: from,
        lag: Duration::ZERO,
        delay: Duration::ZERO,
        partition_header: "X-Partition".into(),
    };
    let (addr, region) = switchyard_region::spawn("127.0.0.1:0".parse()?, opts).await?;
    Ok((addr.to_string(), region))
}

async fn knob(addr: &str, name: &str, value: serde_json::Value) -> anyhow::Result<()> {
    reqwest::Client::new()
        .put(format!("http://{addr}/_control/{name}"))
        .json(&serde_json::json!({ "value": value }))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Reads of 64 keys, each its own partition (so weighted picks spread them).
fn reads(base: String) -> MakeRequest {
    Arc::new(move |client, i| {
        let path = format!("/kv/r{}", i % 64);
        let req = client
            .get(format!("{base}{path}"))
            .header("X-Partition", format!("p{}", i % 64));
        (req, false, path)
    })
}

/// Owner `a` and replica `b`, with `routing` and `a_extra` as given.
fn config(work: &Work, metrics: u16, a: &str, b: &str, routing: &str, a_extra: &str) -> String {
    format!(
        "{}metrics: {{ addr: 127.0.0.1:{metrics} }}\nregions:\n{}{}routing:\n  policy: weighted\n  outlier: {{ enabled: false }}\n{routing}consistency: {{ owners: {{ default: a }} }}\n",
        procs::header(&work.0.join("state"), procs::free_port(), procs::free_port()),
        region_yaml("a", a, a_extra),
        region_yaml("b", b, ""),
    )
}

async fn healthy(router: &Router) -> anyhow::Result<()> {
    until(Duration::from_secs(10), "both regions healthy", || async {
        let s = router.status().await;
        s["regions"]["a"]["healthy"] == true && s["regions"]["b"]["healthy"] == true
    })
    .await
    .map(|_| ())
}

/// The value of the metric line starting with `series` (0 when absent).
async fn metric(port: u16, series: &str) -> f64 {
    let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

pub async fn run(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let mut r = Report::new("10. tail latency and overload");
    let rate = scale.rate.min(500);
    let mut panics = 0;

    // A. Hedging: a answers 300 ms late with its health passing; half the
    // reads go to a first.
    let (a, _) = spawn("a", Role::Primary, None).await?;
    let (b, _) = spawn("b", Role::Replica, Some(format!("http://{a}"))).await?;
    knob(&a, "slow", serde_json::json!(300)).await?;
    let direct = load::start(rate, reads(format!("http://{b}")));
    tokio::time::sleep(scale.phase).await;
    let fast = load::stats(&direct.finish().await);
    r.figure(
        "load",
        format!("{rate} reads/s, constant rate; region a answers 300 ms late"),
    );
    r.figure("b alone (the fast region)", fast);
    for (label, hedge) in [
        ("without hedging", ""),
        ("hedge after 50ms", "  hedge: { after: 50ms, max: 1 }\n"),
    ] {
        let work = Work::new("overload-hedge")?;
        let metrics = procs::free_port();
        let routing = format!("  weights: {{ a: 1, b: 1 }}\n  retry_budget: 1.0\n{hedge}");
        let router = Router::start(bin, &work.0, &config(&work, metrics, &a, &b, &routing, ""))?;
        healthy(&router).await?;
        let running = load::start(rate, reads(router.url("")));
        tokio::time::sleep(scale.phase).await;
        let samples = running.finish().await;
        let s = load::stats(&samples);
        r.figure(format!("reads, {label}"), s);
        if !hedge.is_empty() {
            let sent = metric(metrics, "switchyard_hedges_total{outcome=\"sent\"}").await;
            let won = metric(metrics, "switchyard_hedges_total{outcome=\"hedge_won\"}").await;
            r.figure(
                "hedges",
                format!(
                    "{sent} sent for {} reads ({:.0}%, budget 100%), {won} won",
                    samples.len(),
                    100.0 * sent / samples.len().max(1) as f64
                ),
            );
            let bound = Duration::from_millis(60) + fast.p99;
            r.figure(
                "hedged p99 against after + fast p99 + 10 ms",
                format!(
                    "{:.1} ms against {:.1} ms",
                    s.p99.as_secs_f64() * 1e3,
                    bound.as_secs_f64() * 1e3
                ),
            );
        }
        panics += router.panics();
    }

    // B. max_inflight 4 on a region 100 ms slow, more reads in flight than that.
    let (a, a_region) = spawn("a", Role::Primary, None).await?;
    let (b, _) = spawn("b", Role::Replica, Some(format!("http://{a}"))).await?;
    knob(&a, "slow", serde_json::json!(100)).await?;
    let work = Work::new("overload-limit")?;
    let metrics = procs::free_port();
    let router = Router::start(
        bin,
        &work.0,
        &config(
            &work,
            metrics,
            &a,
            &b,
            "  weights: { a: 1, b: 0 }\n",
            "    max_inflight: 4\n",
        ),
    )?;
    healthy(&router).await?;
    let running = load::start(rate, reads(router.url("")));
    tokio::time::sleep(scale.phase).await;
    let samples = running.finish().await;
    let held = a_region.concurrent_max.load(Ordering::Relaxed);
    let c = router.status().await["regions"]["a"]["concurrency"].clone();
    r.figure(
        "max_inflight 4, a 100 ms slow",
        format!(
            "a held at most {held} at once; {} reads spilled to b; {}",
            c["spilled"],
            load::stats(&samples)
        ),
    );
    r.zero(
        "requests a held beyond max_inflight",
        held.saturating_sub(4),
    );
    panics += router.panics();
    drop(router);

    // C. Adaptive: a's answers take 20 ms, and 5 ms more per other request
    // it is answering.
    let (a, _) = spawn("a", Role::Primary, None).await?;
    let (b, _) = spawn("b", Role::Replica, Some(format!("http://{a}"))).await?;
    knob(&a, "slow", serde_json::json!(20)).await?;
    knob(&a, "load", serde_json::json!(5)).await?;
    let work = Work::new("overload-adaptive")?;
    let metrics = procs::free_port();
    let router = Router::start(
        bin,
        &work.0,
        &config(
            &work,
            metrics,
            &a,
            &b,
            "  weights: { a: 1, b: 0 }\n",
            "    adaptive_concurrency: { min: 2, max: 200, initial: 50 }\n",
        ),
    )?;
    healthy(&router).await?;
    let mut plot = Vec::new();
    let started = Instant::now();
    for (phase, phase_rate) in [
        ("light", rate / 10),
        ("heavy", rate * 2),
        ("light", rate / 10),
    ] {
        let running = load::start(phase_rate.max(10), reads(router.url("")));
        let end = Instant::now() + scale.phase;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let c = router.status().await["regions"]["a"]["concurrency"].clone();
            plot.push(format!(
                "{:>5.1}s {phase:<5} limit {:>3} {} latency now {:>6.1} ms, best {:>5.1} ms",
                started.elapsed().as_secs_f64(),
                c["limit"].as_u64().unwrap_or(0),
                "#".repeat(c["limit"].as_u64().unwrap_or(0).min(60) as usize),
                c["sample_ms"].as_f64().unwrap_or(0.0),
                c["min_rtt_ms"].as_f64().unwrap_or(0.0),
            ));
        }
        let s = load::stats(&running.finish().await);
        r.figure(format!("adaptive, {phase} load ({phase_rate} reads/s)"), s);
    }
    r.figure(
        "adaptive limit over time",
        format!("\n    {}", plot.join("\n    ")),
    );
    panics += router.panics();
    drop(router);

    // D. Every health check failing while the APIs answer: panic mode.
    let (a, _) = spawn("a", Role::Primary, None).await?;
    let (b, _) = spawn("b", Role::Replica, Some(format!("http://{a}"))).await?;
    let work = Work::new("overload-panic")?;
    let metrics = procs::free_port();
    let router = Router::start(bin, &work.0, &config(&work, metrics, &a, &b, "", ""))?;
    healthy(&router).await?;
    knob(&a, "health", serde_json::json!(503)).await?;
    knob(&b, "health", serde_json::json!(503)).await?;
    let detected = until(Duration::from_secs(10), "panic mode", || async {
        router.status().await["panic"]["api"] == true
    })
    .await?;
    let running = load::start(rate, reads(router.url("")));
    tokio::time::sleep(scale.phase).await;
    let samples = running.finish().await;
    r.figure(
        "panic mode entered after",
        format!("{} ms", detected.as_millis()),
    );
    r.figure("reads, every health check failing", load::stats(&samples));
    r.zero(
        "failed reads in panic mode",
        samples.iter().filter(|s| s.failed()).count() as u64,
    );
    panics += router.panics();
    r.zero("router panics", panics);
    Ok(r)
}
