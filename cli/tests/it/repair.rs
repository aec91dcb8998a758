//! Repair on read: after a failover, a client whose read-your-writes token
//! proves its own write is missing on the new owner gets it back (`replay`)
//! or is told (`flag`); the reconciler then reports it `replayed_on_read`
//! and does not send it again.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_oplog::Record;
use switchyard_region::Role;

use crate::reconcile::reconcile;
use crate::support::*;

const RYW: &str = "x-switchyard-ryw";

/// Owner `a` takes 20 keyed writes, of which replica `b` applies the first
/// 10; `a` dies and `b` is promoted. Returns each write's token by key.
async fn failover(mode: &str) -> (TestRegion, TestRegion, Router, HashMap<usize, String>) {
    let a = region("a").await;
    let b = region_with("b", Role::Replica, Some(a.url())).await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}{}routing:\n  policy: weighted\nconsistency: {{ owners: {{ default: a }}, idempotency: require, repair_on_read: {mode} }}\noplog: {{ fsync: always }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
        region_yaml("b", b.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    let mut tokens = HashMap::new();
    for i in 0..20 {
        if i == 10 {
            eventually(Duration::from_secs(5), || async {
                router.status().await["regions"]["b"]["applied_position"] == 10
            })
            .await;
            b.set("replicate_from", Value::Null).await;
        }
        let r = put_nth(&router, i).await;
        let token = r.headers()[RYW].to_str().expect("token").to_string();
        tokens.insert(i, token);
    }
    a.set("health", json!(503)).await;
    a.set("fail", json!(503)).await;
    b.set("role", json!("primary")).await;
    let (code, body) = promote(&router, json!({"partition": "default", "to": "b"})).await;
    assert_eq!(code, 200, "{body}");
    (a, b, router, tokens)
}

/// The op id the router logged for the write to `path` under epoch 1.
fn op_of(router: &Router, path: &str) -> String {
    oplog_records(router)
        .into_iter()
        .find_map(|r| match r {
            Record::Intent(i) if i.path == path && i.epoch == 1 => Some(i.op_id.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no intent for {path}"))
}

/// Replays the router logged on reads: replayed op id → how many times.
fn replays_logged(router: &Router) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in oplog_records(router) {
        if let Record::Intent(i) = r {
            if let Some(of) = i.replay_of() {
                *out.entry(of.to_string()).or_default() += 1;
            }
        }
    }
    out
}

async fn read(router: &Router, key: usize, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(router.url(&format!("/kv/k{key}")))
        .header(RYW, token)
        .send()
        .await
        .expect("read")
}

async fn value(resp: reqwest::Response) -> Option<String> {
    if resp.status() != 200 {
        return None;
    }
    let v: Value = resp.json().await.expect("JSON");
    v["value"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_gets_its_own_lost_write_back_and_the_reconciler_does_not_send_it_again() {
    let (_a, b, router, tokens) = failover("replay").await;
    let op15 = op_of(&router, "/kv/k15");

    // k15 (position 16) is past b's applied position 10: replayed, then read.
    let r = read(&router, 15, &tokens[&15]).await;
    assert_eq!(
        r.headers()
            .get("x-switchyard-replayed-on-read")
            .and_then(|v| v.to_str().ok()),
        Some(op15.as_str()),
        "{:?}",
        r.headers()
    );
    assert!(r.headers().get("x-switchyard-write-pending").is_none());
    let fresh = r.headers()[RYW].to_str().expect("new token").to_string();
    assert_ne!(fresh, tokens[&15]);
    assert_eq!(value(r).await.as_deref(), Some("v15"));

    // Again with the old token, and with the new one: served, not replayed twice.
    assert_eq!(
        value(read(&router, 15, &tokens[&15]).await)
            .await
            .as_deref(),
        Some("v15")
    );
    let r = read(&router, 15, &fresh).await;
    assert!(r.headers().get("x-switchyard-replayed-on-read").is_none());
    assert_eq!(value(r).await.as_deref(), Some("v15"));
    assert_eq!(replays_logged(&router).get(&op15), Some(&1));

    // k5 was replicated before the failover: nothing to repair.
    let r = read(&router, 5, &tokens[&5]).await;
    assert!(r.headers().get("x-switchyard-replayed-on-read").is_none());
    assert!(r.headers().get("x-switchyard-write-pending").is_none());
    assert_eq!(value(r).await.as_deref(), Some("v5"));

    // b took a newer write to k16 since: the old one is not replayed over it.
    let w = reqwest::Client::new()
        .put(router.url("/kv/k16"))
        .header("Idempotency-Key", "newer-16")
        .body("new16")
        .send()
        .await
        .expect("write");
    assert_eq!(w.status(), 201);
    let op16 = op_of(&router, "/kv/k16");
    let r = read(&router, 16, &tokens[&16]).await;
    assert_eq!(
        r.headers()
            .get("x-switchyard-write-pending")
            .and_then(|v| v.to_str().ok()),
        Some(op16.as_str())
    );
    assert_eq!(value(r).await.as_deref(), Some("new16"));

    let s = router.status().await;
    assert_eq!(s["repair_on_read"]["mode"], "replay", "{s}");
    assert_eq!(s["repair_on_read"]["failed"], 1, "{s}");
    let metrics = router.metrics_text().await;
    assert!(
        metrics.contains("switchyard_repair_on_read_total{result=\"replayed\"}"),
        "{metrics}"
    );

    // The reconciler: k15 replayed on read (not sent again), k16 a
    // conflict, the other eight lost writes (k10 to k19) replayed.
    let before = b.requests();
    let (code, report) = reconcile(&router, &["--apply", "--rate", "200"]);
    assert_eq!(code, 1, "the conflict stays unresolved: {report}");
    let summary = &report["summary"];
    assert_eq!(
        (
            summary["replayed_on_read"].clone(),
            summary["replayed"].clone(),
            summary["conflicts"].clone()
        ),
        (json!(1), json!(8), json!(1)),
        "{summary}"
    );
    let on_read: Vec<&Value> = report["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .filter(|o| o["verdict"] == "replayed_on_read")
        .collect();
    assert_eq!(on_read.len(), 1);
    assert_eq!(on_read[0]["op_id"], json!(op15), "{}", on_read[0]);
    assert_eq!(b.requests() - before, 8, "only the eight are sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_flag_the_read_is_served_marked_and_nothing_is_replayed() {
    let (_a, _b, router, tokens) = failover("flag").await;
    let op12 = op_of(&router, "/kv/k12");
    let r = read(&router, 12, &tokens[&12]).await;
    assert_eq!(
        r.headers()
            .get("x-switchyard-write-pending")
            .and_then(|v| v.to_str().ok()),
        Some(op12.as_str())
    );
    assert_eq!(value(r).await, None, "b lacks it");
    // A token issued under the current epoch is not judged; a forged one is ignored.
    let r = read(&router, 3, &tokens[&3]).await;
    assert!(r.headers().get("x-switchyard-write-pending").is_none());
    let forged = tokens[&12].replacen("v2.1.", "v2.0.", 1);
    let r = read(&router, 12, &forged).await;
    assert!(r.headers().get("x-switchyard-write-pending").is_none());
    assert!(replays_logged(&router).is_empty());
    let s = router.status().await;
    assert_eq!(s["repair_on_read"]["flagged"], 1, "{s}");
}
