//! Writes at risk: a promotion's dry run names the acknowledged writes the
//! target lacks, `max_writes_at_risk` refuses one that strands too many, and
//! automatic promotion takes the candidate that strands fewest.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use switchyard_oplog::{OutcomeKind, Record};
use switchyard_region::Role;

use crate::support::*;

/// Owner `a` and replicas `b` and `c`; `extra` appended to `consistency`.
async fn three(extra: &str) -> (TestRegion, TestRegion, TestRegion, Router) {
    let a = region("a").await;
    let b = region_with("b", Role::Replica, Some(a.url())).await;
    let c = region_with("c", Role::Replica, Some(a.url())).await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}{}{}routing:\n  policy: weighted\n  weights: {{ a: 1, b: 0, c: 0 }}\nconsistency:\n  owners: {{ default: a }}\n  idempotency: require\n{extra}oplog: {{ fsync: always }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
        region_yaml("b", b.addr, ""),
        region_yaml("c", c.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    (a, b, c, router)
}

/// `n` keyed writes through the router; each replica in `stops` stops
/// replicating once it has applied its number of them.
async fn writes_with_replicas_stopping(
    router: &Router,
    n: usize,
    stops: &[(&TestRegion, &str, u64)],
) {
    for i in 0..n {
        for (region, name, at) in stops {
            if i as u64 == *at {
                eventually(Duration::from_secs(5), || async {
                    router.status().await["regions"][*name]["applied_position"] == *at
                })
                .await;
                region.set("replicate_from", Value::Null).await;
            }
        }
        put_nth(router, i).await;
    }
}

/// The acknowledged writes in the router's op log: commit position → op id.
fn acked_by_position(router: &Router) -> HashMap<u64, String> {
    let records = oplog_records(router);
    records
        .iter()
        .filter_map(|r| match r {
            Record::Outcome(o) if o.outcome == OutcomeKind::Acked => {
                Some((o.commit_position?, o.op_id.to_string()))
            }
            _ => None,
        })
        .collect()
}

fn candidate<'a>(preview: &'a Value, to: &str) -> &'a Value {
    preview["partitions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["to"] == to))
        .unwrap_or_else(|| panic!("no candidate {to} in {preview}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_names_the_writes_above_the_targets_position_and_the_gate_holds() {
    let (_a, b, c, router) = three("  promotion: { max_writes_at_risk: 10 }\n").await;
    writes_with_replicas_stopping(&router, 100, &[(&b, "b", 80), (&c, "c", 95)]).await;
    // An outcome is logged after its answer is sent: the last may trail.
    eventually(Duration::from_secs(5), || async {
        acked_by_position(&router).len() == 100
    })
    .await;
    let acked = acked_by_position(&router);

    // One target: exactly the 20 writes above b's position 80, oldest first.
    let (code, preview) = router
        .admin(
            Method::POST,
            "/admin/v1/promote",
            Some(json!({"partition": "default", "to": "b", "dry_run": true})),
        )
        .await;
    assert_eq!(code, 200, "{preview}");
    let b_view = candidate(&preview, "b");
    assert_eq!(b_view["target_applied_position"], 80);
    assert_eq!(b_view["writes_at_risk"], 20, "{b_view}");
    assert_eq!(
        (
            b_view["replayable"].clone(),
            b_view["not_replayable"].clone()
        ),
        (json!(20), json!(0))
    );
    let expected: Vec<Value> = (81..=85).map(|p| json!(acked[&p])).collect();
    assert_eq!(
        b_view["ops"],
        json!(expected),
        "the oldest stranded ones, by id"
    );
    assert_eq!(
        (b_view["allowed"].clone(), b_view["rule"].clone()),
        (json!(false), json!("writes_at_risk"))
    );
    assert!(b_view["oldest_ms"].as_u64() <= b_view["newest_ms"].as_u64());
    eprintln!("dry run took {} ms", preview["took_ms"]);

    // Every candidate: b strands 20, c 5 (and c is allowed).
    let (code, all) = router
        .admin(
            Method::POST,
            "/admin/v1/promote",
            Some(json!({"partition": "*", "dry_run": true})),
        )
        .await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["partitions"].as_array().map(Vec::len), Some(2), "{all}");
    let c_view = candidate(&all, "c");
    assert_eq!(
        (c_view["writes_at_risk"].clone(), c_view["allowed"].clone()),
        (json!(5), json!(true))
    );
    let expected: Vec<Value> = (96..=100).map(|p| json!(acked[&p])).collect();
    assert_eq!(c_view["ops"], json!(expected));

    // The same from the command line; nothing changed.
    let run = ctl(&router, &["promote", "--partition", "default", "--dry-run"]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        out.contains("\"writes_at_risk\": 20") && out.contains("\"writes_at_risk\": 5"),
        "{out}"
    );
    let s = router.status().await;
    assert_eq!(s["owners"]["default"], json!({"region": "a", "epoch": 1}));

    // The gate: b strands more than 10 → 409; forced, it goes through and
    // the record keeps the count.
    let (code, body) = promote(&router, json!({"partition": "default", "to": "b"})).await;
    assert_eq!(
        (code, &body["rule"]),
        (409, &json!("writes_at_risk")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap_or("").contains("strand 20"),
        "{body}"
    );
    let (code, body) = promote(
        &router,
        json!({"partition": "default", "to": "b", "force": true}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["promoted"][0]["writes_at_risk"], 20, "{body}");
    let s = router.status().await;
    assert_eq!(s["promotions"][0]["writes_at_risk"], 20, "{s}");
    assert_eq!(s["owners"]["default"], json!({"region": "b", "epoch": 2}));
}

#[tokio::test(flavor = "multi_thread")]
async fn automatic_promotion_takes_the_candidate_that_strands_fewest_writes() {
    let (a, b, c, router) = three("  auto_promote: { after: 500ms, max_lag: 5s }\n").await;
    writes_with_replicas_stopping(&router, 60, &[(&b, "b", 40), (&c, "c", 55)]).await;
    // b follows an owner with nothing new (it reports no lag, at position
    // 40); c's owner cannot be reached (its lag grows past a second, at 55).
    // By lag alone b would win.
    let idle = region("idle").await;
    b.set("replicate_from", json!(idle.url())).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    c.set("replicate_from", json!(format!("http://{closed}")))
        .await;
    eventually(Duration::from_secs(5), || async {
        let s = router.status().await;
        s["regions"]["b"]["lag_ms"] == 0 && s["regions"]["c"]["lag_ms"].as_u64() > Some(1000)
    })
    .await;
    a.set("health", json!(503)).await;
    eventually(Duration::from_secs(10), || async {
        router.status().await["owners"]["default"]["region"] == "c"
    })
    .await;
    let s = router.status().await;
    assert_eq!(s["promotions"][0]["writes_at_risk"], 5, "{s}");
    assert!(
        s["promotions"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("auto"),
        "{s}"
    );
}
