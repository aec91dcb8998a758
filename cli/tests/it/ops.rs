use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn weighted(a: &TestRegion, b: &TestRegion, dir: &TempDir, wa: u32, wb: u32) -> String {
    format!(
        "{}regions:\n{}{}routing:\n  policy: weighted\n  weights: {{ a: {wa}, b: {wb} }}\n",
        header(dir),
        region_yaml("a", a.addr, ""),
        region_yaml("b", b.addr, ""),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_status_needs_the_bearer_token() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = weighted(&a, &b, &dir, 1, 1);
    let router = Router::start_in(dir, &cfg);
    let admin = router.admin.expect("admin");
    let url = format!("http://{admin}/admin/v1/status");
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(&url)
            .send()
            .await
            .expect("req")
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        client
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .expect("req")
            .status()
            .as_u16(),
        401
    );
    let s = router.status().await;
    for field in ["healthy", "dial", "lag_ms", "ejected", "drift"] {
        assert!(
            s["regions"]["a"].get(field).is_some(),
            "missing {field}: {s}"
        );
    }
    assert_eq!(s["owners"]["default"], json!({"region": "a", "epoch": 1}));
    assert!(s["ramps"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_exported_in_prometheus_text() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = weighted(&a, &b, &dir, 1, 0);
    let router = Router::start_in(dir, &cfg);
    let client = reqwest::Client::new();
    for _ in 0..5 {
        client.get(router.url("/kv/x")).send().await.expect("req");
    }
    client
        .put(router.url("/kv/x"))
        .body("v")
        .send()
        .await
        .expect("req");
    eventually(Duration::from_secs(5), || async {
        let m = router.metrics_text().await;
        m.contains("switchyard_requests_total{region=\"a\",class=\"read\",status=\"404\"} 5")
            && m.contains(
                "switchyard_requests_total{region=\"a\",class=\"write\",status=\"201\"} 1",
            )
            && m.contains("switchyard_request_duration_seconds_bucket")
            && m.contains("switchyard_region_healthy{region=\"b\"} 1")
            && m.contains("switchyard_region_replica_lag_seconds{region=\"a\"}")
            && m.contains("switchyard_region_dial_percent{region=\"a\"} 100")
            // The write's intent and outcome, counted by the op log's writer.
            && m.contains("switchyard_oplog_records_total{kind=\"intent\"} 1")
            && m.contains("switchyard_oplog_records_total{kind=\"outcome\"} 1")
            && m.contains("switchyard_oplog_next_seq 2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_drops_nothing_and_bad_configs_are_kept_out() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = weighted(&a, &b, &dir, 100, 0);
    let router = Router::start_in(dir, &cfg);
    let url = router.url("/kv/x");
    // A steady load on kept-alive connections while the config changes under it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut failures = 0;
        let mut regions = std::collections::HashMap::<String, u32>::new();
        // Bounded: stops when told, or after 20000 requests.
        for i in 0..20_000 {
            if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            match client
                .get(&url)
                .header("X-Partition", format!("k{i}"))
                .send()
                .await
            {
                Ok(r) if r.status().as_u16() == 404 => {
                    let region = r.headers()["x-switchyard-region"]
                        .to_str()
                        .unwrap_or("")
                        .to_string();
                    *regions.entry(region).or_default() += 1;
                }
                _ => failures += 1,
            }
        }
        (failures, regions)
    });
    let serving = |want: &'static str| {
        let url = router.url("/kv/x");
        async move {
            reqwest::get(url)
                .await
                .map(|r| r.headers()["x-switchyard-region"] == want)
                .unwrap_or(false)
        }
    };
    served_more(&[&a, &b], 50).await;
    // Valid change via the admin API: all traffic to b.
    let resp = router
        .reload_with(&weighted(&a, &b, &router.dir, 0, 100))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    eventually(Duration::from_secs(5), || serving("b")).await;
    served_more(&[&a, &b], 50).await;
    // Invalid change: refused with its reason, old config kept.
    let resp = router.reload_with("regions: [oops\n").await;
    assert_eq!(resp.status().as_u16(), 400);
    let body = resp.text().await.expect("body");
    assert!(body.contains("switchyard.yaml:"), "{body}");
    assert!(
        serving("b").await,
        "the old config stays after a failed reload"
    );
    // SIGHUP reloads too: back to a.
    std::fs::write(&router.config, weighted(&a, &b, &router.dir, 100, 0)).expect("write");
    router.signal(Signal::HUP);
    eventually(Duration::from_secs(5), || serving("a")).await;
    served_more(&[&a, &b], 50).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (failures, regions) = load.await.expect("load task");
    assert_eq!(failures, 0, "requests failed during reloads: {regions:?}");
    assert!(
        regions.get("a").copied().unwrap_or(0) > 0 && regions.get("b").copied().unwrap_or(0) > 0,
        "{regions:?}"
    );
    let m = router.metrics_text().await;
    assert!(
        m.contains("switchyard_config_reloads_total{result=\"error\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("switchyard_config_reloads_total{result=\"ok\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_requests_in_flight_and_exits_0() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = slow_health(&weighted(&a, &b, &dir, 1, 0));
    let mut router = Router::start_in(dir, &cfg);
    // Slow only once its first probe has answered: a read is not sent to a
    // region whose lag is not known yet, and would be answered at once by
    // the other.
    eventually(Duration::from_secs(5), || async {
        router.status().await["regions"]["a"]["lag_known"] == true
    })
    .await;
    a.set("delay", json!(1000)).await;
    let url = router.url("/kv/x");
    let slow = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    router.wait_inflight(1).await;
    router.signal(Signal::TERM);
    let status = slow
        .await
        .expect("task")
        .expect("the slow request completes");
    assert_eq!(status, 404);
    let code = tokio::task::block_in_place(|| router.wait_exit(Duration::from_secs(10)));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn ctl_reads_status_and_reloads_with_the_token() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = weighted(&a, &b, &dir, 1, 1);
    let router = Router::start_in(dir, &cfg);
    let admin = router.admin.expect("admin").to_string();
    let ctl = |args: &[&str], token: &str| {
        std::process::Command::new(binary())
            .arg("ctl")
            .args(["--admin", &admin])
            .args(args)
            .env("SWITCHYARD_ADMIN_TOKEN", token)
            .output()
            .expect("ctl runs")
    };
    let run = |args: &[&str], token: &str| tokio::task::block_in_place(|| ctl(args, token));
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let out = run(&["status", "--json"], TOKEN);
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["regions"]["b"]["dial"], 100);
    let out = run(&["dial", "b", "12.5"], TOKEN);
    assert!(out.status.success(), "{}", text(&out));
    // The table: a header row, one row per region, owners and ramps.
    let out = run(&["status"], TOKEN);
    let table = text(&out);
    assert!(out.status.success(), "{table}");
    let b_row = table
        .lines()
        .find(|l| l.starts_with("b "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(b_row.contains("12.5%"), "{table}");
    assert!(
        table.starts_with("REGION") && table.contains("OWNERS") && table.contains("default"),
        "{table}"
    );
    let out = run(&["drain", "b"], TOKEN);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(router.status().await["regions"]["b"]["draining"], true);
    let out = run(&["drain", "b", "--undo"], TOKEN);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        &["explain", "--path", "/kv/x", "-H", "X-Partition: p1"],
        TOKEN,
    );
    assert!(out.status.success(), "{}", text(&out));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(e["request"]["partition"], "p1");
    let out = run(&["ramp", "nope", "start"], TOKEN);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no ramp \"nope\""), "{}", text(&out));
    let out = run(&["explain", "--path", "/", "-H", "no-colon"], TOKEN);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = run(&["reload"], TOKEN);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["status"], "wrong");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("401"), "{}", text(&out));
    // An admin address nobody listens on.
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(binary())
            .args(["ctl", "--admin", "127.0.0.1:9", "status"])
            .output()
            .expect("ctl runs")
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("cannot reach the admin API at 127.0.0.1:9"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_in_flight_finishes_across_a_reload_that_removes_its_region() {
    let (a, b) = (region("a").await, region("b").await);
    a.set("delay", json!(800)).await;
    let dir = TempDir::new();
    let cfg = slow_health(&weighted(&a, &b, &dir, 1, 0));
    let router = Router::start_in(dir, &cfg);
    let url = router.url("/kv/x");
    let slow = tokio::spawn(async move {
        let r = reqwest::get(url).await.expect("slow request");
        (
            r.status().as_u16(),
            r.headers()["x-switchyard-region"]
                .to_str()
                .unwrap_or("")
                .to_string(),
        )
    });
    router.wait_inflight(1).await;
    // The new config no longer has region a at all.
    let only_b = format!(
        "{}regions:\n{}routing:\n  policy: weighted\n",
        header(&router.dir),
        region_yaml("b", b.addr, "")
    );
    let resp = router.reload_with(&only_b).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        get_region(&reqwest::Client::new(), &router.url("/kv/x"), None)
            .await
            .1,
        "b"
    );
    assert_eq!(slow.await.expect("task"), (404, "a".to_string()));
    assert!(router.status().await["regions"].get("a").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_throttles_failed_logins_and_metrics_can_want_a_token() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}routing:\n  policy: weighted\n",
        header(&dir).replace(
            "metrics: { addr: 127.0.0.1:0 }",
            "metrics: { addr: 127.0.0.1:0, token_env: SY_TEST_TOKEN }"
        ),
        region_yaml("a", a.addr, "")
    );
    let router = Router::start_in(dir, &cfg);
    let admin = router.admin.expect("admin");
    let guess = |token: &'static str| async move {
        let resp = reqwest::Client::new()
            .get(format!("http://{admin}/admin/v1/status"))
            .bearer_auth(token)
            .send()
            .await
            .expect("status");
        (
            resp.status().as_u16(),
            resp.headers().get("retry-after").cloned(),
        )
    };
    for _ in 0..10 {
        assert_eq!(guess("wrong-token-guess").await.0, 401);
    }
    let (status, retry) = guess("wrong-token-guess").await;
    assert_eq!(status, 429);
    assert!(retry.is_some());
    // Throttled, even with the right token, until the minute is over.
    assert_eq!(guess(TOKEN).await.0, 429);
    // /metrics wants the token too. (Throttled requests are not counted as
    // failed logins: ten refused guesses, and one tokenless scrape below.)
    let url = format!("http://{}/metrics", router.metrics.expect("metrics"));
    let plain = reqwest::get(&url).await.expect("metrics");
    assert_eq!(plain.status().as_u16(), 401);
    let text = reqwest::Client::new()
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("switchyard_admin_login_failures_total 11"),
        "{text}"
    );
}

#[test]
fn a_short_admin_token_or_a_public_plaintext_admin_refuses_to_start() {
    let dir = TempDir::new();
    let base = "listen: { http: 127.0.0.1:0 }\nregions:\n  a: { type: full, endpoints: [\"127.0.0.1:1\"], services: [api] }\nrouting: { policy: weighted }\n";
    let short = dir.write(
        "short.yaml",
        &format!(
            "admin: {{ addr: 127.0.0.1:0, token_env: SY_SHORT }}\nstate_dir: {}\n{base}",
            dir.0.join("s").display()
        ),
    );
    let (code, err) = run_switchyard(&["run"], &short, &[("SY_SHORT", "short")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(
            "admin.token_env: SY_SHORT holds a token of 5 bytes; a bearer token needs at least 16"
        ),
        "{err}"
    );
    let public = dir.write(
        "public.yaml",
        &format!("admin: {{ addr: \"0.0.0.0:9901\" }}\n{base}"),
    );
    let (code, err) = run_switchyard(&["check"], &public, &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("public.yaml:1:16: `admin.addr` 0.0.0.0:9901 is not a loopback address"),
        "{err}"
    );
    let allowed = dir.write(
        "allowed.yaml",
        &format!("admin: {{ addr: \"0.0.0.0:9901\", allow_plaintext: true }}\n{base}"),
    );
    let (code, err) = run_switchyard(&["check"], &allowed, &[]);
    assert_eq!(code, Some(0), "{err}");
}

/// Two routers on one state_dir would interleave their op log records: the
/// second waits for the first to let go of the folder, then is refused with
/// the holder named, and the first keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_router_on_the_same_state_dir_is_refused() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&dir, "", &a);
    let router = Router::start_in(dir, &cfg);
    let config = router.config.clone();
    let (code, stderr) = tokio::task::block_in_place(|| {
        run_switchyard(
            &["run"],
            &config,
            &[("SY_TEST_TOKEN", TOKEN), ("SWITCHYARD_RYW_KEY", RYW_KEY)],
        )
    });
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("is in use by another writer")
            && stderr.contains(&format!("pid {}", router.pid())),
        "{stderr}"
    );
    assert_eq!(router.status().await["oplog"]["writable"], true);
}

/// Builds a shim that holds every `fdatasync` for `SLOW_SYNC_MS`: a disk
/// slow to make writes durable, as cloud disks sometimes are for hundreds
/// of milliseconds. Preloaded into the router; `fsync` (directories, new
/// segments) is left alone.
fn slow_sync_shim(dir: &TempDir) -> std::path::PathBuf {
    let src = dir.write(
        "slow_sync.c",
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    const char *ms = getenv("SLOW_SYNC_MS");
    if (ms) usleep((useconds_t)atoi(ms) * 1000);
    return real(fd);
}
"#,
    );
    let lib = dir.0.join("libslow_sync.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("cc (a C compiler builds the slow-disk shim)");
    assert!(built.success(), "cc failed to build the slow-disk shim");
    lib
}

/// With `fsync: batch`, a sync runs beside the writer: while the disk takes
/// a second to sync, records are still written and the queue (16 records
/// here) never holds a write back for the sync's length.
#[tokio::test(flavor = "multi_thread")]
async fn a_disk_slow_to_sync_does_not_hold_batch_writes_back() {
    let (a, b) = (region("a").await, region("b").await);
    let shim_dir = TempDir::new();
    let shim = slow_sync_shim(&shim_dir);
    let dir = TempDir::new();
    let cfg = format!(
        "{}consistency: {{ owners: {{ default: a }} }}\noplog: {{ fsync: batch, queue: 16 }}\n",
        two_regions(&a, &b, "  policy: weighted\n", "", &dir)
    );
    let router = Router::start_with_env(
        dir,
        &cfg,
        &[
            ("LD_PRELOAD", shim.to_str().expect("utf-8 path")),
            ("SLOW_SYNC_MS", "1000"),
        ],
    );
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (mut writes, mut slowest) = (0, Duration::ZERO);
    while started.elapsed() < Duration::from_millis(2500) {
        let t = Instant::now();
        let w = client
            .put(router.url(&format!("/kv/k{writes}")))
            .body("v")
            .send()
            .await
            .expect("write");
        assert_eq!(w.status(), 201);
        slowest = slowest.max(t.elapsed());
        writes += 1;
    }
    // The shim was in effect: the syncs the router made took a second each.
    let metrics = router.metrics_text().await;
    let (syncs, took) = (
        metric(&metrics, "switchyard_oplog_sync_seconds_count "),
        metric(&metrics, "switchyard_oplog_sync_seconds_sum "),
    );
    eprintln!("{writes} writes, the slowest {slowest:?}; {syncs} syncs took {took:.1} s");
    assert!(syncs >= 1.0 && took >= 0.9 * syncs, "{metrics}");
    assert!(writes > 2 * 16, "enough writes to fill the queue: {writes}");
    assert!(
        slowest < Duration::from_millis(500),
        "a write waited {slowest:?} while the disk synced"
    );
}

/// Sixteen writers at once, each PUTting `body` to `/kv/{prefix}{writer}`
/// `each` times in turn; every answer a success.
async fn concurrent_puts(
    client: &reqwest::Client,
    router: &Router,
    prefix: &str,
    body: &bytes::Bytes,
    each: usize,
) {
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (client, body, url) = (
                client.clone(),
                body.clone(),
                router.url(&format!("/kv/{prefix}{w}")),
            );
            tokio::spawn(async move {
                for _ in 0..each {
                    let put = client
                        .put(&url)
                        .body(body.clone())
                        .send()
                        .await
                        .expect("put");
                    assert!(put.status().is_success(), "{}", put.status());
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
}

/// The router turns transparent huge pages off for itself: a heap that grows
/// while serving must not stall a worker while the kernel zeroes 2 MiB at a
/// time. The process says so in `/proc`, and a heap grown by concurrent
/// large writes (16 at a time, 512 KiB each) adds no huge page, whatever the
/// system-wide setting. Before the switch, the same writes added 16 MiB of
/// huge pages here.
#[tokio::test(flavor = "multi_thread")]
async fn the_router_keeps_its_memory_off_huge_pages() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&dir, "", &a);
    let router = Router::start_in(dir, &cfg);
    let proc_file = |name: &str| {
        std::fs::read_to_string(format!("/proc/{}/{name}", router.pid())).expect("/proc readable")
    };
    let huge_kib = |rollup: String| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix("AnonHugePages:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("AnonHugePages in smaps_rollup")
    };
    let status = proc_file("status");
    assert!(
        status.lines().any(|l| l == "THP_enabled:\t0"),
        "huge pages still on: {}",
        status
            .lines()
            .find(|l| l.starts_with("THP_"))
            .unwrap_or("no THP_enabled line")
    );
    let before = huge_kib(proc_file("smaps_rollup"));
    let client = reqwest::Client::new();
    let body = bytes::Bytes::from(vec![b'x'; 512 * 1024]);
    concurrent_puts(&client, &router, "k", &body, 8).await;
    let after = huge_kib(proc_file("smaps_rollup"));
    assert_eq!(
        after, before,
        "huge pages grew while serving: {before} -> {after} KiB"
    );
}

/// Memory the router frees is kept for a second before it goes back to the
/// system: bursts of large writes (sixteen 1 MiB bodies at once, every
/// 0.3 s) under a steady stream of small requests reuse the pages the
/// bursts before them touched instead of faulting each in again.
#[tokio::test(flavor = "multi_thread")]
async fn bursts_of_large_writes_reuse_the_memory_of_the_bursts_before() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&dir, "", &a);
    let router = Router::start_in(dir, &cfg);
    let pid = router.pid();
    let faults = move || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        // minflt, the 10th field; the command name before it is in parentheses.
        let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
        after_name
            .split(' ')
            .nth(7)
            .and_then(|f| f.parse().ok())
            .expect("minflt")
    };
    let client = reqwest::Client::new();
    let steady = {
        let (client, url) = (client.clone(), router.url("/kv/small"));
        tokio::spawn(async move {
            loop {
                let get = client.get(&url).send().await.expect("get");
                assert!(get.status().as_u16() < 500, "{}", get.status());
            }
        })
    };
    let body = bytes::Bytes::from(vec![b'x'; 1 << 20]);
    let mut per_burst = Vec::new();
    for _ in 0..6 {
        let before = faults();
        concurrent_puts(&client, &router, "b", &body, 1).await;
        per_burst.push(faults() - before);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    steady.abort();
    eprintln!("page faults per burst: {per_burst:?}");
    let later: u64 = per_burst[1..].iter().sum();
    assert!(
        later < 10_000,
        "bursts after the first faulted pages in again: {per_burst:?}"
    );
}
