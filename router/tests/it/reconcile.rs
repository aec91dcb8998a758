//! The op log and the reconciler, end to end: writes through the real
//! router, a failover with writes lost in the replication lag, and
//! `switchyard-reconcile` replaying exactly the safe ones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
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
fn reconcile(router: &Router, extra: &[&str]) -> (i32, Value) {
    let report = router.dir.0.join(format!("report-{}.json", extra.len()));
    let out = Command::new(reconcile_binary())
        .arg("--oplog")
        .arg(router.dir.0.join("state"))
        .arg("--config")
        .arg(&router.config)
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

    // 100 keyed writes on the owner; the replica has the first 80 when its
    // replication stops.
    for i in 0..80 {
        let r = put(
            &router,
            &format!("/kv/k{i}"),
            &format!("v{i}"),
            &format!("key-{i}"),
        )
        .await;
        assert_eq!((r.status().as_u16(), served_by(&r)), (201, "a".into()));
    }
    eventually(Duration::from_secs(5), || async {
        router.status().await["regions"]["b"]["applied_position"] == 80
    })
    .await;
    b.set("replicate_from", Value::Null).await;
    for i in 80..100 {
        let r = put(
            &router,
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
    eventually(Duration::from_secs(5), || async {
        router.status().await["regions"]["a"]["healthy"] == false
    })
    .await;
    let (code, body) = router
        .admin(
            Method::POST,
            "/admin/v1/promote",
            Some(json!({"partition": "default", "to": "b"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // The new owner takes a write to a resource the old one lost.
    let r = put(&router, "/kv/k95", "newer", "key-newer").await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (201, "b".into()));

    // Dry run: the plan, and nothing sent.
    let (code, report) = reconcile(&router, &[]);
    assert_eq!(code, 1, "unresolved ops remain");
    let s = &report["summary"];
    assert_eq!(
        (
            s["ops_scanned"].clone(),
            s["in_window"].clone(),
            s["already_present"].clone(),
            s["to_replay"].clone(),
            s["conflicts"].clone(),
            s["replayed"].clone()
        ),
        (
            json!(101),
            json!(100),
            json!(80),
            json!(19),
            json!(1),
            json!(0)
        ),
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

    // Apply: the 19 safe ones reach the new owner; the conflict does not.
    let (code, report) = reconcile(&router, &["--apply", "--rate", "200"]);
    assert_eq!(code, 1, "the conflict is left for a human");
    let s = &report["summary"];
    assert_eq!(
        (
            s["replayed"].clone(),
            s["conflicts"].clone(),
            s["failed"].clone(),
            s["to_replay"].clone()
        ),
        (json!(19), json!(1), json!(0), json!(0)),
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
        (
            s["replayed"].clone(),
            s["already_present"].clone(),
            s["conflicts"].clone()
        ),
        (json!(0), json!(99), json!(1)),
        "{s}"
    );
}
