//! The drills. Each returns its table; `passed()` says whether every goal-0
//! figure was 0.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustix::process::Signal;
use switchyard_oplog::Record;
use switchyard_region::Role;

use super::load::{self, MakeRequest, Sample};
use super::procs::{self, region, region_yaml, until, Router, Work};
use super::{Report, Scale};

/// Every drill, by name, in the order `all` runs them.
pub const ALL: &[&str] = &[
    "sigkill",
    "upgrade",
    "reload",
    "nats",
    "disk-full",
    "partition",
    "owner-killed",
    "split-brain",
    "writes-at-risk",
    "overload",
];

pub async fn run(name: &str, bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    match name {
        "sigkill" => sigkill(bin, scale).await,
        "upgrade" => upgrade(bin, scale).await,
        "reload" => reload(bin, scale).await,
        "nats" => nats(bin, scale).await,
        "disk-full" => disk_full(bin, scale).await,
        "partition" => partition(bin, scale).await,
        "owner-killed" => owner_killed(bin, scale).await,
        "split-brain" => split_brain(bin, scale).await,
        "writes-at-risk" => writes_at_risk(bin, scale).await,
        "overload" => super::overload::run(bin, scale).await,
        other => anyhow::bail!("no drill named {other:?}; drills: {}", ALL.join(", ")),
    }
}

/// Reads of `/kv/r{i}` and, every `write_every`-th request, a write of
/// `/kv/w{i}` (each its own key, so each acknowledged write can be found).
fn mixed(base: String, write_every: u64) -> MakeRequest {
    Arc::new(move |client, i| {
        if write_every > 0 && i % write_every == 0 {
            let path = format!("/kv/w{i}");
            (
                client.put(format!("{base}{path}")).body(format!("v{i}")),
                true,
                path,
            )
        } else {
            let path = format!("/kv/r{}", i % 64);
            (client.get(format!("{base}{path}")), false, path)
        }
    })
}

/// The mix the peers get too: a write in four requests.
pub fn reads_and_writes(base: String) -> MakeRequest {
    mixed(base, 4)
}

/// One full region owning every partition, with `extra` appended.
async fn one_region(work: &Work, extra: &str) -> anyhow::Result<String> {
    let a = region("a", Role::Primary, None).await?;
    Ok(format!(
        "{}regions:\n{}routing:\n  policy: weighted\nconsistency:\n  owners: {{ default: a }}\n{extra}",
        procs::header(&work.0.join("state"), procs::free_port(), procs::free_port()),
        region_yaml("a", a, ""),
    ))
}

/// Paths of the writes answered 2xx.
fn acknowledged(samples: &[Sample]) -> Vec<&str> {
    samples
        .iter()
        .filter(|s| s.write && (200..300).contains(&s.status))
        .map(|s| s.path.as_str())
        .collect()
}

/// The paths with an intent in the op log under `state`, and the problems
/// reading it met (a torn tail excluded: recovery cuts it, by design).
fn logged(state: &Path) -> anyhow::Result<(std::collections::HashSet<String>, u64)> {
    let mut paths = std::collections::HashSet::new();
    let problems = switchyard_oplog::read_dir(&state.join("oplog"), 0, |_, r| {
        if let Record::Intent(i) = r {
            paths.insert(i.path);
        }
    })?;
    let damage = problems
        .iter()
        .filter(|p| !matches!(p, switchyard_oplog::Problem::TornTail { .. }))
        .count() as u64;
    Ok((paths, damage))
}

/// Drill 4: The router is SIGKILLed mid-write with `fsync: always`, then restarted.
async fn sigkill(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let work = Work::new("sigkill")?;
    let cfg = one_region(&work, "oplog: { fsync: always }\n").await?;
    let mut router = Router::start(bin, &work.0, &cfg)?;
    // Writes only: every request is one the log must keep if acknowledged.
    let load = load::start(scale.rate, mixed(router.url(""), 1));
    tokio::time::sleep(scale.phase).await;
    let killed_at = load.now();
    router.kill();
    router.restart()?;
    let restarted = load.now() - killed_at;
    tokio::time::sleep(scale.phase).await;
    let samples = load.finish().await;
    router.signal(Signal::TERM);
    let _ = router
        .child
        .as_mut()
        .map(|c| procs::wait_exit(c, Duration::from_secs(10)));
    let acked = acknowledged(&samples);
    let (paths, damage) = logged(&router.state)?;
    let missing = acked.iter().filter(|p| !paths.contains(**p)).count() as u64;
    let mut r = Report::new("4. router SIGKILLed mid-write (fsync: always)");
    r.figure(
        "load",
        format!(
            "{} writes/s, {:?} before and after the kill",
            scale.rate, scale.phase
        ),
    );
    r.figure("writes acknowledged", acked.len());
    r.figure("restart took", format!("{} ms", restarted.as_millis()));
    r.figure(
        "writes failed around the kill",
        samples.iter().filter(|s| s.failed()).count(),
    );
    r.zero("acknowledged writes missing from the log", missing);
    r.zero("records damaged (torn tail excluded)", damage);
    r.zero("router panics", router.panics());
    Ok(r)
}

/// Drill 8: `run --upgrade` under load.
async fn upgrade(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let work = Work::new("upgrade")?;
    let cfg = one_region(&work, "").await?;
    let mut router = Router::start(bin, &work.0, &cfg)?;
    let load = load::start(scale.rate, mixed(router.url(""), 4));
    tokio::time::sleep(scale.phase).await;
    let began = load.now();
    let mut old = router.upgrade()?;
    let code = tokio::task::block_in_place(|| procs::wait_exit(&mut old, Duration::from_secs(30)));
    let took = load.now() - began;
    tokio::time::sleep(scale.phase).await;
    let samples = load.finish().await;
    let (before, during, after) = phases(&samples, began, began + took);
    let acked = acknowledged(&samples);
    let (paths, damage) = logged(&router.state)?;
    let missing = acked.iter().filter(|p| !paths.contains(**p)).count() as u64;
    let mut r = Report::new("8. upgrade under load (switchyard run --upgrade)");
    r.figure("load", format!("{} req/s (1 in 4 a write)", scale.rate));
    r.figure(
        "old process exited",
        format!(
            "{code:?}, {} ms after the new one started",
            took.as_millis()
        ),
    );
    r.figure("before", before);
    r.figure("during", during);
    r.figure("after", after);
    r.zero(
        "failed requests",
        samples.iter().filter(|s| s.failed()).count() as u64,
    );
    first_failures(&mut r, &samples);
    r.zero("acknowledged writes missing from the log", missing);
    r.zero("records damaged", damage);
    r.zero("router panics", router.panics());
    if !scale.quick {
        let backend = region("peer", Role::Primary, None).await?;
        let (n, h) = (work.0.join("nginx"), work.0.join("haproxy"));
        std::fs::create_dir_all(&n)?;
        std::fs::create_dir_all(&h)?;
        let nginx = super::peers::nginx_upgrade(&n, backend, scale.rate, scale.phase).await?;
        r.figure("nginx binary upgrade (USR2, WINCH, QUIT)", nginx);
        let haproxy = super::peers::haproxy_reload(&h, backend, scale.rate, scale.phase).await?;
        r.figure("HAProxy reload (-sf)", haproxy);
    }
    Ok(r)
}

/// Drill 7: A reload and a dial change every second, under load.
async fn reload(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let work = Work::new("reload")?;
    let b = region("b", Role::Primary, None).await?;
    let cfg = one_region(&work, "").await?;
    // Two regions: the dial moves reads between them.
    let cfg = cfg.replace(
        "routing:\n",
        &format!("{}routing:\n", region_yaml("b", b, "")),
    );
    let router = Router::start(bin, &work.0, &cfg)?;
    let load = load::start(scale.rate, mixed(router.url(""), 4));
    let rounds = (scale.phase.as_secs() * 2).max(2);
    let mut refused = 0;
    for i in 0..rounds {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (code, _) = router
            .admin(
                reqwest::Method::POST,
                "/admin/v1/reload",
                serde_json::Value::Null,
            )
            .await;
        refused += u64::from(code != 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let percent = if i % 2 == 0 { 25.0 } else { 100.0 };
        let (code, _) = router
            .admin(
                reqwest::Method::PUT,
                "/admin/v1/regions/b/dial",
                serde_json::json!({"percent": percent}),
            )
            .await;
        refused += u64::from(code != 200);
    }
    let samples = load.finish().await;
    let mut r = Report::new("7. reload and dial change every second under load");
    r.figure(
        "load",
        format!(
            "{} req/s, {rounds} reloads and {rounds} dial changes",
            scale.rate
        ),
    );
    r.figure("latency", load::stats(&samples));
    r.zero("reloads or dial changes refused", refused);
    r.zero(
        "failed requests",
        samples.iter().filter(|s| s.failed()).count() as u64,
    );
    first_failures(&mut r, &samples);
    r.zero("router panics", router.panics());
    if !scale.quick {
        let backend = region("peer", Role::Primary, None).await?;
        let n = work.0.join("nginx");
        std::fs::create_dir_all(&n)?;
        let nginx = super::peers::nginx_reloads(&n, backend, scale.rate, rounds).await?;
        r.figure(format!("nginx, {rounds} reloads (-s reload)"), nginx);
    }
    Ok(r)
}

/// Waits until the router has both regions `a` and `b` healthy.
async fn both_healthy(router: &Router) -> anyhow::Result<()> {
    until(Duration::from_secs(10), "both regions healthy", || async {
        let s = router.status().await;
        s["regions"]["a"]["healthy"] == true && s["regions"]["b"]["healthy"] == true
    })
    .await
    .map(|_| ())
}

/// The first few failed requests, for a table that shows any.
fn first_failures(r: &mut Report, samples: &[Sample]) {
    let failed: Vec<String> = samples
        .iter()
        .filter(|s| s.failed())
        .take(3)
        .map(|s| {
            format!(
                "{} {} at {} ms: {}",
                if s.write { "PUT" } else { "GET" },
                s.path,
                s.due.as_millis(),
                if s.status == 0 {
                    "no answer".to_string()
                } else {
                    s.status.to_string()
                }
            )
        })
        .collect();
    if !failed.is_empty() {
        r.figure("first failures", failed.join("; "));
    }
}

/// Stats before `from`, between `from` and `to`, and after `to`.
fn phases(
    samples: &[Sample],
    from: Duration,
    to: Duration,
) -> (load::Stats, load::Stats, load::Stats) {
    (
        load::stats(samples.iter().filter(|s| s.due < from)),
        load::stats(samples.iter().filter(|s| s.due >= from && s.due < to)),
        load::stats(samples.iter().filter(|s| s.due >= to)),
    )
}

/// A server process a drill starts and stops (NATS, etcd), killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_server(port: u16, store: &Path) -> anyhow::Result<Server> {
    let child = std::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("nats-server (apt-get install nats-server)")?;
    Ok(Server(child))
}

async fn stream_messages(url: &str, stream: &str) -> Option<u64> {
    let client = async_nats::connect(url).await.ok()?;
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.ok()?;
    s.info().await.ok().map(|i| i.state.messages)
}

/// Drill 6: NATS goes away under writes, and comes back.
async fn nats(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let work = Work::new("nats")?;
    let port = procs::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let store = work.0.join("js");
    let mut server = Some(nats_server(port, &store)?);
    let cfg = one_region(
        &work,
        &format!("oplog: {{ nats: {{ url: \"{url}\", stream: SY_DRILL }} }}\n"),
    )
    .await?;
    let router = Router::start(bin, &work.0, &cfg)?;
    until(Duration::from_secs(10), "NATS takes the stream", || async {
        stream_messages(&url, "SY_DRILL").await.is_some()
    })
    .await?;
    let load = load::start(scale.rate, mixed(router.url(""), 2));
    tokio::time::sleep(scale.phase).await;
    drop(server.take());
    let down = if scale.quick {
        scale.phase * 2
    } else {
        Duration::from_secs(60)
    };
    tokio::time::sleep(down).await;
    let backlog = router.status().await["oplog"]["nats"]["backlog_records"]
        .as_u64()
        .unwrap_or(0);
    let _server = nats_server(port, &store)?;
    let back = load.now();
    tokio::time::sleep(scale.phase).await;
    let samples = load.finish().await;
    let drained = until(
        Duration::from_secs(60),
        "the backlog reaches NATS",
        || async { router.status().await["oplog"]["nats"]["backlog_records"] == 0 },
    )
    .await?;
    let mut local = 0u64;
    switchyard_oplog::read_dir(&router.state.join("oplog"), 0, |_, _| local += 1)?;
    let in_stream = stream_messages(&url, "SY_DRILL").await.unwrap_or(0);
    let mut r = Report::new("6. NATS down, then back");
    r.figure(
        "load",
        format!("{} req/s (1 in 2 a write); NATS down {down:?}", scale.rate),
    );
    r.figure("backlog when NATS came back", format!("{backlog} records"));
    r.figure(
        "backlog forwarded within",
        format!(
            "{} ms of load end ({} ms after NATS returned)",
            drained.as_millis(),
            (load_end(&samples).saturating_sub(back) + drained).as_millis()
        ),
    );
    r.figure(
        "records in the log / in the stream",
        format!("{local} / {in_stream}"),
    );
    r.zero(
        "failed requests",
        samples.iter().filter(|s| s.failed()).count() as u64,
    );
    first_failures(&mut r, &samples);
    r.zero(
        "records lost (in the log, not the stream)",
        local.saturating_sub(in_stream),
    );
    r.zero("duplicates in the stream", in_stream.saturating_sub(local));
    r.zero("router panics", router.panics());
    Ok(r)
}

fn load_end(samples: &[Sample]) -> Duration {
    samples.last().map_or(Duration::ZERO, |s| s.due)
}

/// Drill 5: The disk under the op log fills (a small tmpfs), then gets room again.
async fn disk_full(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let work = Work::new("disk-full")?;
    let state = work.0.join("state");
    std::fs::create_dir_all(&state)?;
    let mount = |opts: &str| -> anyhow::Result<()> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&state)
            .status()
            .context("mount")?
            .success();
        anyhow::ensure!(
            ok,
            "cannot mount a tmpfs on {} (the drill needs root)",
            state.display()
        );
        Ok(())
    };
    mount("size=2m")?;
    let _unmount = Unmount(state.clone());
    let cfg = one_region(&work, "oplog: { fsync: always, segment_bytes: 65536 }\n").await?;
    let router = Router::start(bin, &work.0, &cfg)?;
    // Writes of 8 KiB: the 2 MiB fill within a few seconds.
    let base = router.url("");
    let body = "x".repeat(8192);
    let load = load::start(
        scale.rate,
        Arc::new(move |client, i| {
            let path = format!("/kv/w{i}");
            (
                client.put(format!("{base}{path}")).body(body.clone()),
                true,
                path,
            )
        }),
    );
    let filled = until(
        Duration::from_secs(30),
        "the disk fills and the router says so",
        || async { router.status().await["oplog"]["writable"] == false },
    )
    .await?;
    tokio::time::sleep(scale.phase).await;
    let freed_at = load.now();
    mount("remount,size=256m")?;
    let healed = until(
        Duration::from_secs(15),
        "writes are taken again",
        || async { router.status().await["oplog"]["writable"] == true },
    )
    .await?;
    tokio::time::sleep(scale.phase).await;
    let samples = load.finish().await;
    let acked = acknowledged(&samples);
    let (paths, damage) = logged(&state)?;
    let missing = acked.iter().filter(|p| !paths.contains(**p)).count() as u64;
    let refused = samples
        .iter()
        .filter(|s| s.status == 503 && s.retry_after)
        .count();
    let other = samples
        .iter()
        .filter(|s| s.failed() && !(s.status == 503 && s.retry_after))
        .count();
    let accepted_after = samples
        .iter()
        .filter(|s| s.due > freed_at + healed && (200..300).contains(&s.status))
        .count();
    let mut r = Report::new("5. disk full under writes (a 2 MiB tmpfs)");
    r.figure(
        "load",
        format!("{} writes/s of 8 KiB, fsync: always", scale.rate),
    );
    r.figure("disk full after", format!("{} ms", filled.as_millis()));
    r.figure("writes refused with 503 + Retry-After", refused);
    r.figure(
        "writes taken again after room returned",
        format!(
            "{} ms ({accepted_after} acknowledged since)",
            healed.as_millis()
        ),
    );
    r.zero(
        "writes failed otherwise (no answer, other 5xx)",
        other as u64,
    );
    let others: Vec<Sample> = samples
        .iter()
        .filter(|s| s.failed() && !(s.status == 503 && s.retry_after))
        .cloned()
        .collect();
    first_failures(&mut r, &others);
    r.zero("acknowledged writes missing from the log", missing);
    r.zero("records damaged in the log", damage);
    r.zero(
        "writes acknowledged after room returned, missing",
        if accepted_after == 0 { 1 } else { 0 },
    );
    r.zero("router panics", router.panics());
    drop(router);
    Ok(r)
}

/// Unmounts a drill's tmpfs when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Drill 2: A partition between the edge and one of two regions.
async fn partition(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let work = Work::new("partition")?;
    let b = region("b", Role::Primary, None).await?;
    let proxy = super::proxy::FaultProxy::start("127.0.0.1:0".parse()?, b).await?;
    let cfg = one_region(&work, "").await?;
    let cfg = cfg.replace(
        "routing:\n",
        &format!("{}routing:\n", region_yaml("b", proxy.addr, "")),
    );
    let router = Router::start(bin, &work.0, &cfg)?;
    both_healthy(&router).await?;
    let load = load::start(scale.rate, mixed(router.url(""), 0));
    tokio::time::sleep(scale.phase).await;
    let cut = load.now();
    proxy.set(super::proxy::Mode::Blackhole);
    let detected = until(
        Duration::from_secs(10),
        "the router marks b down",
        || async { router.status().await["regions"]["b"]["healthy"] == false },
    )
    .await?;
    tokio::time::sleep(scale.phase).await;
    let healed_at = load.now();
    proxy.set(super::proxy::Mode::Pass);
    let back = until(Duration::from_secs(10), "b healthy again", || async {
        router.status().await["regions"]["b"]["healthy"] == true
    })
    .await?;
    tokio::time::sleep(scale.phase).await;
    let samples = load.finish().await;
    let (before, during, after) = phases(&samples, cut, healed_at);
    let after_detection = samples
        .iter()
        .filter(|s| {
            s.due >= cut + detected + Duration::from_millis(100) && s.due < healed_at && s.failed()
        })
        .count();
    let mut r = Report::new("2. partition between the edge and one region");
    r.figure("load", format!("{} reads/s over two regions", scale.rate));
    r.figure("detection", format!("{} ms", detected.as_millis()));
    r.figure("back in after healing", format!("{} ms", back.as_millis()));
    r.figure("before", before);
    r.figure("partitioned", during);
    r.figure("healed", after);
    r.zero("failed reads once detected", after_detection as u64);
    r.zero("router panics", router.panics());
    Ok(r)
}

/// Drill 1: the owner region dies under mixed load: detection, automatic
/// promotion of the replica, and the reconciler afterwards.
async fn owner_killed(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let work = Work::new("owner-killed")?;
    let a = region("a", Role::Primary, None).await?;
    let a_proxy = super::proxy::FaultProxy::start("127.0.0.1:0".parse()?, a).await?;
    let b = region("b", Role::Replica, Some(format!("http://{}", a_proxy.addr))).await?;
    let cfg = format!(
        "{}regions:\n{}{}routing:\n  policy: weighted\n  weights: {{ a: 1, b: 1 }}\nconsistency:\n  owners: {{ default: a }}\n  auto_promote: {{ after: 1s }}\n",
        procs::header(&work.0.join("state"), procs::free_port(), procs::free_port()),
        region_yaml("a", a_proxy.addr, ""),
        region_yaml("b", b, ""),
    );
    let router = Router::start(bin, &work.0, &cfg)?;
    both_healthy(&router).await?;
    let load = load::start(scale.rate, mixed(router.url(""), 4));
    tokio::time::sleep(scale.phase).await;
    let killed = load.now();
    a_proxy.set(super::proxy::Mode::Reset);
    let detected = until(
        Duration::from_secs(10),
        "the router marks a down",
        || async { router.status().await["regions"]["a"]["healthy"] == false },
    )
    .await?;
    let promoted = until(Duration::from_secs(15), "b is promoted", || async {
        router.status().await["owners"]["default"]["region"] == "b"
    })
    .await?;
    // What an operator's runbook does next: the new owner takes writes as a primary.
    let _ = reqwest::Client::new()
        .put(format!("http://{b}/_control/role"))
        .json(&serde_json::json!({"value": "primary"}))
        .send()
        .await;
    tokio::time::sleep(scale.phase).await;
    let samples = load.finish().await;
    let first_write_after = samples
        .iter()
        .filter(|s| s.write && s.due > killed && (200..300).contains(&s.status))
        .map(|s| s.due + s.latency)
        .min();
    let window = first_write_after.map_or_else(
        || "no write taken again".to_string(),
        |t| format!("{} ms", (t - killed).as_millis()),
    );
    let reads_failed_after = samples
        .iter()
        .filter(|s| {
            !s.write && s.due >= killed + detected + Duration::from_millis(100) && s.failed()
        })
        .count();
    let acked: Vec<String> = acknowledged(&samples)
        .into_iter()
        .map(str::to_string)
        .collect();
    // The reconciler replays what b missed; then every acknowledged write must read back from b.
    let reconcile = bin.with_file_name("switchyard-reconcile");
    let out = std::process::Command::new(&reconcile)
        .arg("--oplog")
        .arg(&router.state)
        .arg("--config")
        .arg(&router.config)
        .arg("--apply")
        .output()
        .with_context(|| {
            format!(
                "{} (cargo build --release -p switchyard-reconciler)",
                reconcile.display()
            )
        })?;
    let client = reqwest::Client::new();
    let mut missing = 0u64;
    for path in &acked {
        let ok = client
            .get(format!("http://{b}{path}"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        missing += u64::from(!ok);
    }
    let mut r = Report::new("1. owner killed under mixed load");
    r.figure(
        "load",
        format!(
            "{} req/s (1 in 4 a write) over a (owner) and b (replica)",
            scale.rate
        ),
    );
    r.figure("detection", format!("{} ms", detected.as_millis()));
    r.figure(
        "automatic promotion",
        format!("{} ms after the kill", (detected + promoted).as_millis()),
    );
    r.figure("write unavailability", window);
    r.figure("writes acknowledged", acked.len());
    r.figure(
        "reconciler",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    );
    r.zero("failed reads after detection", reads_failed_after as u64);
    r.zero("acknowledged writes missing after the reconciler", missing);
    r.zero("router panics", router.panics());
    Ok(r)
}

/// Drill 3: One router is cut off from etcd while another promotes.
async fn split_brain(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let work = Work::new("split-brain")?;
    let (client_port, peer_port) = (procs::free_port(), procs::free_port());
    let etcd_url = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let _etcd = Server(
        std::process::Command::new("etcd")
            .args(["--name", "drill", "--data-dir"])
            .arg(work.0.join("etcd"))
            .args([
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("drill={peer}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("etcd (apt-get install etcd-server)")?,
    );
    let etcd_addr: std::net::SocketAddr = format!("127.0.0.1:{client_port}").parse()?;
    until(Duration::from_secs(15), "etcd listens", || async {
        tokio::net::TcpStream::connect(etcd_addr).await.is_ok()
    })
    .await?;
    // Router one reaches etcd through a proxy the drill cuts.
    let cut = super::proxy::FaultProxy::start("127.0.0.1:0".parse()?, etcd_addr).await?;
    let a = region("a", Role::Primary, None).await?;
    let b = region("b", Role::Primary, None).await?;
    let config = |dir: &Path, etcd: &str, edge: &str| {
        format!(
            "{}regions:\n{}{}routing:\n  policy: weighted\nconsistency: {{ owners: {{ default: a }} }}\ncoordination: {{ etcd: {{ endpoints: [\"{etcd}\"], prefix: /drill, lease_ttl: 2s, write_grace: 1s, edge_id: {edge} }} }}\n",
            procs::header(&dir.join("state"), procs::free_port(), procs::free_port()),
            region_yaml("a", a, ""),
            region_yaml("b", b, ""),
        )
    };
    let (d1, d2) = (work.0.join("one"), work.0.join("two"));
    std::fs::create_dir_all(&d1)?;
    std::fs::create_dir_all(&d2)?;
    let one = Router::start(
        bin,
        &d1,
        &config(&d1, &format!("http://{}", cut.addr), "one"),
    )?;
    let two = Router::start(bin, &d2, &config(&d2, &etcd_url, "two"))?;
    let load_one = load::start(scale.rate / 2, mixed(one.url(""), 1));
    let load_two = load::start(scale.rate / 2, mixed(two.url(""), 1));
    tokio::time::sleep(scale.phase).await;
    cut.set(super::proxy::Mode::Blackhole);
    let (code, body) = two
        .admin(
            reqwest::Method::POST,
            "/admin/v1/promote",
            serde_json::json!({"partition": "default", "to": "b"}),
        )
        .await;
    anyhow::ensure!(
        code == 200,
        "the promotion through router two failed: {code} {body}"
    );
    tokio::time::sleep(scale.phase * 2).await;
    let (s1, s2) = (load_one.finish().await, load_two.finish().await);
    // When each write was taken, from the op logs: router one's to a, the
    // fleet's first to b.
    let taken = |state: &Path, region: &str| -> anyhow::Result<Vec<u64>> {
        let mut intents = std::collections::HashMap::new();
        let mut at = Vec::new();
        switchyard_oplog::read_dir(&state.join("oplog"), 0, |_, r| match r {
            Record::Intent(i) => {
                intents.insert(i.op_id, i.owner.clone());
            }
            Record::Outcome(o) => {
                let ok = o.outcome == switchyard_oplog::OutcomeKind::Acked;
                if ok && intents.get(&o.op_id).map(String::as_str) == Some(region) {
                    at.push(o.at_ms);
                }
            }
            _ => {}
        })?;
        Ok(at)
    };
    let to_b: Vec<u64> = [taken(&one.state, "b")?, taken(&two.state, "b")?].concat();
    let first_b = to_b.iter().min().copied();
    let late_a = match first_b {
        Some(t) => taken(&one.state, "a")?
            .iter()
            .filter(|at| **at >= t)
            .count() as u64,
        None => 0,
    };
    let refused_one = s1.iter().filter(|s| s.status == 503).count();
    let mut r =
        Report::new("3. split brain: router one cut off from etcd while router two promotes");
    r.figure(
        "load",
        format!(
            "{} writes/s through each router; lease_ttl 2s, write_grace 1s",
            scale.rate / 2
        ),
    );
    r.figure("writes to b (new owner)", to_b.len());
    r.figure(
        "router one's writes refused (503) once cut off",
        refused_one,
    );
    r.figure("router two", load::stats(&s2));
    anyhow::ensure!(first_b.is_some(), "no write reached b after the promotion");
    r.zero("writes taken by a (old owner) after b's first", late_a);
    r.zero("router panics", one.panics() + two.panics());
    Ok(r)
}

/// Writes at risk against replication lag: the owner takes writes at a
/// constant rate while its replica lags by each of a series of delays; at
/// each, promotion dry runs say how many acknowledged writes the replica
/// lacks (about rate × lag) and how long counting them took.
async fn writes_at_risk(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let work = Work::new("writes-at-risk")?;
    let a = region("a", Role::Primary, None).await?;
    let b = region("b", Role::Replica, Some(format!("http://{a}"))).await?;
    let cfg = format!(
        "{}regions:\n{}{}routing:\n  policy: weighted\n  weights: {{ a: 1, b: 0 }}\nconsistency:\n  owners: {{ default: a }}\noplog: {{ fsync: batch }}\n",
        procs::header(&work.0.join("state"), procs::free_port(), procs::free_port()),
        region_yaml("a", a, ""),
        region_yaml("b", b, ""),
    );
    let router = Router::start(bin, &work.0, &cfg)?;
    both_healthy(&router).await?;
    // Every request a write: the rate is the write rate.
    let load = load::start(scale.rate, mixed(router.url(""), 1));
    let lags: &[u64] = if scale.quick {
        &[0, 250, 1000]
    } else {
        &[0, 100, 250, 500, 1000, 2000]
    };
    let client = reqwest::Client::new();
    let mut r = Report::new("9. writes at risk against replication lag");
    r.figure("load", format!("{} writes/s to owner a", scale.rate));
    let mut failed_dry_runs = 0;
    for &lag in lags {
        client
            .put(format!("http://{b}/_control/lag"))
            .json(&serde_json::json!({ "value": lag }))
            .send()
            .await?;
        // Settle: the replica's backlog reaches its new depth.
        tokio::time::sleep(Duration::from_millis(lag) + scale.phase / 2).await;
        let (mut counts, mut took, mut reported) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            let (code, v) = router
                .admin(
                    reqwest::Method::POST,
                    "/admin/v1/promote",
                    serde_json::json!({"partition": "default", "to": "b", "dry_run": true}),
                )
                .await;
            let p = &v["partitions"][0];
            match (code, p["writes_at_risk"].as_u64()) {
                (200, Some(n)) => {
                    counts.push(n as f64);
                    took.push(v["took_ms"].as_f64().unwrap_or(0.0));
                    reported.push(p["lag_ms"].as_f64().unwrap_or(0.0));
                }
                _ => failed_dry_runs += 1,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        r.figure(
            format!("replica lag {lag} ms"),
            format!(
                "{:.0} writes at risk (rate × lag = {:.0}); replica reports {:.0} ms; dry run {:.1} ms",
                mean(&counts),
                f64::from(scale.rate) * lag as f64 / 1000.0,
                mean(&reported),
                mean(&took)
            ),
        );
    }
    let samples = load.finish().await;
    r.figure("writes", load::stats(&samples));
    r.zero("dry runs that failed", failed_dry_runs);
    r.zero("router panics", router.panics());
    Ok(r)
}
