//! The op log and the reconciler, end to end: writes through the real
//! router, a failover with writes lost in the replication lag, and
//! `switchyard-reconcile` replaying exactly the safe ones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_region::Role;

use crate::support::*;

/// The reconciler binary, built beside this test's `switchyard`.
pub fn reconcile_binary() -> PathBuf {
    let p = Path::new(binary())
        .parent()
        .expect("bin folder")
        .join("switchyard-reconcile");
    assert!(
        p.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        p.display()
    );
    p
}

/// Runs the reconciler; its exit code and the JSON report it wrote.
pub fn reconcile(router: &Router, extra: &[&str]) -> (i32, Value) {
    reconcile_with(router, &router.config, extra)
}

fn reconcile_with(router: &Router, config: &Path, extra: &[&str]) -> (i32, Value) {
    let report = router.dir.0.join(format!("report-{}.json", extra.len()));
    let out = Command::new(reconcile_binary())
        .arg("--oplog")
        .arg(router.dir.0.join("state"))
        .arg("--config")
        .arg(config)
        .arg("--report")
        .arg(&report)
        .args(extra)
        .output()
        .expect("reconciler runs");
    let code = out.status.code().unwrap_or(-1);
    eprintln!(
        "reconcile {extra:?} → {code}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("report written");
    (code, serde_json::from_str(&text).expect("report is JSON"))
}

async fn put(router: &Router, path: &str, body: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .put(router.url(path))
        .header("Idempotency-Key", key)
        .body(body.to_string())
        .send()
        .await
        .expect("write")
}

async fn value_on(region: &TestRegion, key: &str) -> Option<String> {
    let resp = reqwest::get(format!("{}/kv/{key}", region.url()))
        .await
        .expect("read");
    if resp.status() != 200 {
        return None;
    }
    let v: Value = resp.json().await.expect("JSON");
    v["value"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_writes_are_replayed_once_and_conflicts_reported() {
    // 100 keyed writes on the owner; the replica has the first 80 when the owner dies.
    let (_a, b, router) = failover(100, 80).await;
    // The new owner takes a write to a resource the old one lost.
    let r = put(&router, "/kv/k95", "newer", "key-newer").await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (201, "b".into()));

    // Dry run: the plan, and nothing sent.
    let (code, report) = reconcile(&router, &[]);
    assert_eq!(code, 1, "unresolved ops remain");
    let s = &report["summary"];
    assert_eq!(
        fields(
            s,
            &[
                "ops_scanned",
                "in_window",
                "already_present",
                "to_replay",
                "conflicts",
                "replayed"
            ]
        ),
        [
            json!(101),
            json!(100),
            json!(80),
            json!(19),
            json!(1),
            json!(0)
        ],
        "{s}"
    );
    assert_eq!(report["failovers"][0]["from"], "a");
    assert_eq!(report["failovers"][0]["to"], "b");
    assert_eq!(report["failovers"][0]["applied_position"], 80);
    assert_eq!(value_on(&b, "k90").await, None, "a dry run sends nothing");
    let conflict = report["ops"]
        .as_array()
        .and_then(|ops| ops.iter().find(|o| o["verdict"] == "conflict"))
        .expect("a conflict")
        .clone();
    assert_eq!(conflict["path"], "/kv/k95");
    assert_eq!(conflict["body"], "v95");
    assert_eq!(conflict["conflict_with"]["body"], "newer");
    // The same plan for a ticket and as a page.
    let (md, html) = (router.dir.0.join("r.md"), router.dir.0.join("r.html"));
    let out = Command::new(reconcile_binary())
        .arg("--oplog")
        .arg(router.dir.0.join("state"))
        .arg("--config")
        .arg(&router.config)
        .arg("--report")
        .arg(&md)
        .arg("--report")
        .arg(&html)
        .output()
        .expect("reconciler runs");
    assert_eq!(out.status.code(), Some(1));
    let md = std::fs::read_to_string(&md).expect("markdown");
    assert!(md.contains("| 101 | 100 | 80 | 0 | 0 | 19 | 1 |"), "{md}");
    assert!(
        md.contains("## Conflicts") && md.contains("`v95`") && md.contains("`newer`"),
        "{md}"
    );
    let html = std::fs::read_to_string(&html).expect("html");
    assert!(
        html.contains("<svg") && html.contains("promotion a → b (epoch 2)"),
        "timeline"
    );
    assert!(
        html.contains("<h2>Conflicts</h2>") && html.contains("newer"),
        "conflicts table"
    );
    // What needs a decision first; the 80 already present folded behind a count.
    let at = |needle: &str| {
        html.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing"))
    };
    assert!(at("<h2>Conflicts</h2>") < at("<h2>Left unresolved</h2>"));
    assert!(at("<h2>Left unresolved</h2>") < at("<h2>Failover"));
    assert!(at("<h2>Failover") < at("<details id=\"already-present\">"));
    assert!(
        html.contains("80 writes already present"),
        "collapsed count"
    );
    crate::console::check_report_renders(&router.dir.0.join("r.html"), "reconcile-report");

    // Apply: the 19 safe ones reach the new owner; the conflict does not.
    let (code, report) = reconcile(&router, &["--apply", "--rate", "200"]);
    assert_eq!(code, 1, "the conflict is left for a human");
    let s = &report["summary"];
    assert_eq!(
        fields(s, &["replayed", "conflicts", "failed", "to_replay"]),
        [json!(19), json!(1), json!(0), json!(0)],
        "{s}"
    );
    for i in (80..100).filter(|i| *i != 95) {
        assert_eq!(value_on(&b, &format!("k{i}")).await, Some(format!("v{i}")));
    }
    assert_eq!(
        value_on(&b, "k95").await,
        Some("newer".into()),
        "never overwritten"
    );

    // Again: the owner already has them all; nothing is replayed.
    let (code, report) = reconcile(
        &router,
        &[
            "--apply",
            "--rate",
            "200",
            "--checkpoint",
            "/tmp/sy-it-second.ckpt",
        ],
    );
    let _ = std::fs::remove_file("/tmp/sy-it-second.ckpt");
    assert_eq!(code, 1);
    let s = &report["summary"];
    assert_eq!(
        fields(s, &["replayed", "already_present", "conflicts"]),
        [json!(0), json!(99), json!(1)],
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_survives_a_sigkill_with_fsync_always() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}routing:\n  policy: weighted\nconsistency: {{ owners: {{ default: a }} }}\noplog: {{ fsync: always }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
    );
    let mut router = Router::start_in(dir, &cfg);
    let url = router.url("");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (url, stop) = (url.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("client");
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("crash-{w}-{n}");
                n += 1;
                let sent = client
                    .put(format!("{url}/kv/{key}"))
                    .header("Idempotency-Key", &key)
                    .body("x")
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status() == 201) {
                    acked.push(key);
                }
            }
            acked
        }));
    }
    served_more(&[&a], 300).await;
    tokio::task::block_in_place(|| router.restart());
    served_more(&[&a], 100).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(
        acked.len() > 50,
        "the load ran: {} acknowledged",
        acked.len()
    );
    // With `fsync: always` every acknowledged write's intent was on disk
    // before it was forwarded: no settling needed.
    let mut logged = std::collections::HashSet::new();
    let problems = switchyard_oplog::read_dir(&router.dir.0.join("state/oplog"), 0, |_, r| {
        if let switchyard_oplog::Record::Intent(i) = r {
            logged.insert(i.idempotency_key.unwrap_or_default());
        }
    })
    .expect("read the log");
    assert!(
        problems.is_empty(),
        "the tail is clean after recovery: {problems:?}"
    );
    let missing: Vec<&String> = acked.iter().filter(|k| !logged.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not logged: {missing:?}"
    );
    eprintln!("{} acknowledged writes, all in the log", acked.len());
}

/// Owner `a` takes `writes` keyed writes through the router (op log with
/// `fsync: always`), replica `b` has the first `replicated` when `a` dies,
/// and `b` is promoted.
/// Sends `writes` keyed writes through `router` to the owner `a`, of which
/// the replica `b` applies the first `replicated`; then `a` dies and `b` is
/// promoted through `router`.
pub async fn fail_over_after(
    router: &Router,
    a: &TestRegion,
    b: &TestRegion,
    writes: usize,
    replicated: usize,
) {
    for i in 0..writes {
        if i == replicated {
            eventually(Duration::from_secs(5), || async {
                router.status().await["regions"]["b"]["applied_position"] == replicated
            })
            .await;
            b.set("replicate_from", Value::Null).await;
        }
        let r = put(
            router,
            &format!("/kv/k{i}"),
            &format!("v{i}"),
            &format!("key-{i}"),
        )
        .await;
        assert_eq!(r.status().as_u16(), 201);
    }
    // The owner dies; the replica becomes the owner.
    a.set("health", json!(503)).await;
    a.set("fail", json!(503)).await;
    b.set("role", json!("primary")).await;
    let (code, body) = promote(router, json!({"partition": "default", "to": "b"})).await;
    assert_eq!(code, 200, "{body}");
}

async fn failover(writes: usize, replicated: usize) -> (TestRegion, TestRegion, Router) {
    let a = region("a").await;
    let b = region_with("b", Role::Replica, Some(a.url())).await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}{}routing:\n  policy: weighted\nconsistency: {{ owners: {{ default: a }}, idempotency: require }}\noplog: {{ fsync: always }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
        region_yaml("b", b.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    fail_over_after(&router, &a, &b, writes, replicated).await;
    (a, b, router)
}

fn reasons(report: &Value, verdict: &str) -> Vec<String> {
    report["ops"]
        .as_array()
        .map(|ops| {
            ops.iter()
                .filter(|o| o["verdict"] == verdict)
                .map(|o| o["reason"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_replays_interruptions_and_damage_are_named() {
    let (_a, b, router) = failover(10, 6).await;

    // The new owner cannot be reached: each op fails, with the address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let text = std::fs::read_to_string(&router.config)
        .expect("config")
        .replace(&b.addr.to_string(), &closed.to_string());
    let unreachable = router.dir.write("unreachable.yaml", &text);
    let (code, report) = reconcile_with(&router, &unreachable, &["--apply", "--rate", "100"]);
    assert_eq!(code, 1);
    assert_eq!(report["summary"]["failed"], 4, "{}", report["summary"]);
    assert!(reasons(&report, "failed")
        .iter()
        .all(|r| r.contains("could not be reached")));

    // It answers 503: failed again, with its answer.
    b.set("fail", json!(503)).await;
    let (code, report) = reconcile(&router, &["--apply", "--rate", "100"]);
    assert_eq!(code, 1);
    assert_eq!(report["summary"]["failed"], 4);
    assert!(
        reasons(&report, "failed")
            .iter()
            .all(|r| r.contains("answered 503")),
        "{:?}",
        reasons(&report, "failed")
    );
    b.set("fail", json!(0)).await;

    // Interrupted after two replays (2 per second); the next run sends only the rest.
    let mut child = Command::new(reconcile_binary())
        .arg("--oplog")
        .arg(router.dir.0.join("state"))
        .arg("--config")
        .arg(&router.config)
        .args(["--apply", "--rate", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("reconciler runs");
    // Killed once its checkpoint holds a settled op of this run.
    let checkpoint = router.dir.0.join("state/oplog/reconcile.checkpoint");
    eventually(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&checkpoint).unwrap_or_default();
        let this_run = text.rsplit("\"complete\"").next().unwrap_or("");
        this_run.contains("\"op\"")
    })
    .await;
    child.kill().expect("kill");
    let _ = child.wait();
    let (code, report) = reconcile(&router, &["--apply", "--rate", "100"]);
    assert_eq!(code, 0, "all settled: {}", report["summary"]);
    assert_eq!(report["summary"]["replayed"], 4);
    let resumed = reasons(&report, "replayed")
        .iter()
        .filter(|r| r.contains("interrupted earlier run"))
        .count();
    assert!(
        (1..=3).contains(&resumed),
        "{resumed} taken from the checkpoint"
    );

    // A damaged record: named with its segment and offset; the rest is read.
    let seg = std::fs::read_dir(router.dir.0.join("state/oplog"))
        .expect("oplog dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("segment");
    bytes[40] ^= 0xff;
    std::fs::write(&seg, bytes).expect("damage");
    let (code, report) = reconcile(&router, &[]);
    assert_eq!(code, 1, "a record that cannot be read is unresolved");
    assert_eq!(report["summary"]["unreadable_records"], 1);
    assert_eq!(report["summary"]["ops_scanned"], 9);
    let problem = report["problems"][0].as_str().unwrap_or("");
    assert!(
        problem.contains(".seg: offset 28:") && problem.contains("damaged"),
        "{problem}"
    );
    assert_eq!(
        report["outcomes_without_intent"].as_array().map(Vec::len),
        Some(1)
    );
}

/// The logs given end with b at epoch 2, but another edge has since
/// promoted c (epoch 3): replaying to b with token 2 would write to a
/// demoted region. Every replay is held back and named; nothing is sent.
/// Owners that cannot be read hold every replay back too.
#[tokio::test(flavor = "multi_thread")]
async fn replays_wait_for_the_current_owner_to_be_the_one_the_logs_end_with() {
    let (_a, b, router) = failover(10, 6).await;
    let later = router.dir.write(
        "later-ownership.json",
        r#"{"version": 1, "partitions": {"default": {"region": "c", "epoch": 3}}}"#,
    );
    let later = later.display().to_string();
    let sent_before = b.requests();
    let (code, report) = reconcile(&router, &["--apply", "--ownership", &later]);
    assert_eq!(code, 1, "held-back replays are unresolved");
    assert_eq!(report["summary"]["replayed"], 0);
    assert_eq!(report["summary"]["stale_target"], 4);
    let why = reasons(&report, "stale_target");
    assert!(
        why.iter()
            .all(|r| r.contains("owned by c at epoch 3")
                && r.contains("a later promotion is missing")),
        "{why:?}"
    );
    assert_eq!(b.requests(), sent_before, "nothing was sent to b");

    let missing = router.dir.0.join("no-such-ownership.json");
    let missing = missing.display().to_string();
    let (code, report) = reconcile(&router, &["--apply", "--ownership", &missing]);
    assert_eq!(code, 1);
    assert_eq!(report["summary"]["stale_target"], 4);
    assert!(reasons(&report, "stale_target")[0].contains("could not be read"));
    assert_eq!(b.requests(), sent_before, "nothing was sent to b");

    // With the router's own ownership file (b at epoch 2), the same run
    // replays them.
    let (code, report) = reconcile(&router, &["--apply"]);
    assert_eq!(code, 0, "{}", report["summary"]);
    assert_eq!(report["summary"]["replayed"], 4);
}
