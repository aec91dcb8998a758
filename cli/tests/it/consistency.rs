//! Consistency at the edge: write pinning with fencing tokens, promotion
//! (persisted, refused by rule), fenced answers, split brain.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use switchyard_region::Role;

use crate::support::*;

/// PUTs `/_echo` through the router: (status, serving region, the fencing token the region saw).
async fn echo_write(
    router: &Router,
    partition: Option<&str>,
    client_token: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut req = reqwest::Client::new().put(router.url("/_echo")).body("x");
    if let Some(p) = partition {
        req = req.header("X-Partition", p);
    }
    if let Some(t) = client_token {
        req = req.header("X-Fencing-Token", t);
    }
    let resp = req.send().await.expect("write");
    let status = resp.status().as_u16();
    let region = served_by(&resp);
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let token = body["headers"].as_array().and_then(|hs| {
        hs.iter()
            .find(|h| h[0] == "x-fencing-token")
            .and_then(|h| h[1].as_str().map(str::to_string))
    });
    (status, region, token)
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_carry_the_owners_epoch_and_a_promotion_survives_a_restart() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = format!(
        "{}consistency: {{ owners: {{ default: a }} }}\n",
        two_regions(&a, &b, EVEN_SPLIT, "", &dir)
    );
    let mut router = Router::start_in(dir, &cfg);
    for i in 0..20 {
        let (status, region, token) = echo_write(&router, Some(&format!("p{i}")), Some("99")).await;
        assert_eq!(
            (status, region.as_str(), token.as_deref()),
            (200, "a", Some("1")),
            "client tokens are replaced"
        );
    }
    let s = router.status().await;
    assert_eq!(s["owners"]["default"], json!({"region": "a", "epoch": 1}));

    let (code, body) = promote(&router, json!({"partition": "default", "to": "b"})).await;
    assert_eq!(code, 200, "{body}");
    let rec = &body["promoted"][0];
    assert_eq!(
        (rec["from"].clone(), rec["to"].clone()),
        (json!("a"), json!("b"))
    );
    assert_eq!(
        (rec["from_epoch"].clone(), rec["to_epoch"].clone()),
        (json!(1), json!(2))
    );
    assert!(rec["applied_position"].is_number());
    let (status, region, token) = echo_write(&router, Some("p1"), None).await;
    assert_eq!(
        (status, region.as_str(), token.as_deref()),
        (200, "b", Some("2"))
    );

    // Durable: the restarted router has b at epoch 2, and says so.
    router.restart();
    let s = router.status().await;
    assert_eq!(
        s["owners"]["default"],
        json!({"region": "b", "epoch": 2}),
        "{s}"
    );
    let (status, region, token) = echo_write(&router, None, None).await;
    assert_eq!(
        (status, region.as_str(), token.as_deref()),
        (200, "b", Some("2"))
    );

    // A partition of its own, through `ctl promote`: promoted from the default's epoch.
    let out = ctl(
        &router,
        &["promote", "--partition", "tenant-7", "--to", "a"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(body["promoted"][0]["to_epoch"], 3);
    let (_, region, token) = echo_write(&router, Some("tenant-7"), None).await;
    assert_eq!((region.as_str(), token.as_deref()), ("a", Some("3")));
    let (_, region, _) = echo_write(&router, Some("tenant-8"), None).await;
    assert_eq!(region, "b");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_never_leave_a_down_owner() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = two_regions(&a, &b, "  policy: weighted\n", "", &dir);
    let router = Router::start_in(dir, &cfg);
    a.set("health", json!(503)).await;
    router.wait_healthy("a", false).await;
    let before = b.requests();
    let resp = reqwest::Client::new()
        .put(router.url("/kv/k"))
        .body("v")
        .send()
        .await
        .expect("write");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(b.requests(), before, "the write went to a non-owner");
}

#[tokio::test(flavor = "multi_thread")]
async fn promotions_are_refused_by_rule() {
    let a = region("a").await;
    let b = region("b").await;
    let c = region_with("c", Role::Replica, None).await;
    let d = region("d").await;
    let e = region_with("e", Role::Replica, Some(a.url())).await;
    e.set("lag", json!(60_000)).await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}    compliance: {{ data_residency: US }}\n{}    compliance: {{ data_residency: EU }}\n{}{}{}routing:\n  policy: weighted\nconsistency:\n  owners: {{ default: a }}\n  partition_residency: {{ eu-tenant: EU }}\n  promotion: {{ max_lag: 2s }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
        region_yaml("b", b.addr, ""),
        region_yaml("c", c.addr, "").replace("type: full", "type: read-only"),
        region_yaml("d", d.addr, ""),
        region_yaml("e", e.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    // e falls behind: writes reach a, e holds them back for a minute.
    let client = reqwest::Client::new();
    for i in 0..3 {
        client
            .put(format!("{}/kv/k{i}", a.url()))
            .body("v")
            .send()
            .await
            .expect("write");
    }
    eventually(Duration::from_secs(10), || async {
        router.status().await["regions"]["e"]["lag_ms"]
            .as_u64()
            .unwrap_or(0)
            > 2000
    })
    .await;
    d.set("health", json!(503)).await;
    router.wait_healthy("d", false).await;
    let (code, _) = router
        .admin(Method::POST, "/admin/v1/regions/b/drain", None)
        .await;
    assert_eq!(code, 200);

    for (body, rule) in [
        (json!({"partition": "default", "to": "c"}), "read_only"),
        (
            json!({"partition": "eu-tenant", "to": "d", "force": true}),
            "residency",
        ),
        (json!({"partition": "default", "to": "a"}), "already_owner"),
        (json!({"partition": "default", "to": "d"}), "unhealthy"),
        (json!({"partition": "default", "to": "b"}), "drained"),
        (json!({"partition": "*", "to": "e"}), "lag"),
    ] {
        let (code, answer) = promote(&router, body.clone()).await;
        assert_eq!(
            (code, answer["rule"].clone()),
            (409, json!(rule)),
            "{body}: {answer}"
        );
    }
    let (code, _) = promote(&router, json!({"partition": "default", "to": "nowhere"})).await;
    assert_eq!(code, 404);
    for bad in [
        json!({"to": "b"}),
        json!({"partition": "default", "to": "b", "fast": true}),
        json!([]),
    ] {
        let (code, answer) = promote(&router, bad.clone()).await;
        assert_eq!(code, 400, "{bad}: {answer}");
    }
    // Nothing moved.
    assert_eq!(
        router.status().await["owners"]["default"],
        json!({"region": "a", "epoch": 1})
    );
    // Asked for from a view that is not the current one: refused.
    let (code, answer) = promote(
        &router,
        json!({"partition": "default", "to": "e", "force": true, "if_epoch": 7}),
    )
    .await;
    assert_eq!(
        (code, answer["rule"].clone()),
        (409, json!("concurrent_promotion")),
        "{answer}"
    );
    // Forced past the lag rule, from the current view: allowed, and
    // recorded as forced.
    let (code, answer) = promote(
        &router,
        json!({"partition": "default", "to": "e", "force": true, "if_epoch": 1}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["promoted"][0]["forced"], true);
    assert_eq!(
        router.status().await["owners"]["default"],
        json!({"region": "e", "epoch": 2})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_router_is_fenced_and_nothing_is_applied_twice() {
    let (a, b) = (region("a").await, region("b").await);
    let routing = "  policy: weighted\n";
    let (fresh_dir, stale_dir) = (TempDir::new(), TempDir::new());
    let (fresh_cfg, stale_cfg) = (
        two_regions(&a, &b, routing, "", &fresh_dir),
        two_regions(&a, &b, routing, "", &stale_dir),
    );
    let fresh = Router::start_in(fresh_dir, &fresh_cfg);
    let stale = Router::start_in(stale_dir, &stale_cfg);
    // The fresh router moves ownership a → b → a: epoch 3 on a.
    assert_eq!(
        promote(&fresh, json!({"partition": "*", "to": "b"}))
            .await
            .0,
        200
    );
    assert_eq!(
        promote(&fresh, json!({"partition": "*", "to": "a"}))
            .await
            .0,
        200
    );
    let client = reqwest::Client::new();
    let write = |router: &Router, key: &str| {
        client
            .put(router.url("/kv/order-1"))
            .header("X-Partition", "p")
            .header("Idempotency-Key", key)
            .body("v1")
            .send()
    };
    let r = write(&fresh, "order-1-create").await.expect("write");
    assert_eq!((r.status().as_u16(), served_by(&r)), (201, "a".to_string()));
    // The client retries through the stale router: the region answers from
    // its idempotency store; nothing is applied again.
    let r = write(&stale, "order-1-create").await.expect("write");
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    // A new write through the stale router (a at epoch 1): a refuses the token.
    let r = write(&stale, "order-1-update").await.expect("write");
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("fenced"), "{text}");
    assert!(stale
        .metrics_text()
        .await
        .contains("switchyard_fenced_writes_total 1"));
    // Exactly one commit of the key on a.
    let log: Value = client
        .get(format!("{}/_replication/log?after=0", a.url()))
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    let commits = log
        .as_array()
        .map_or(0, |l| l.iter().filter(|c| c["key"] == "order-1").count());
    assert_eq!(commits, 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_down_long_enough_is_replaced_automatically() {
    let (a, b) = (region("a").await, region("b").await);
    let c = region_with("c", Role::Replica, None).await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}{}{}routing:\n  policy: weighted\nconsistency:\n  owners: {{ default: a }}\n  auto_promote: {{ after: 1s, max_lag: 5s }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
        region_yaml("c", c.addr, "").replace("type: full", "type: read-only"),
        region_yaml("b", b.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    // A healthy owner is never replaced: not while it is probed, for longer
    // than `auto_promote.after`.
    eventually(Duration::from_secs(5), || async {
        !router.status().await["regions"]["a"]["probe_rtt_ms"].is_null()
    })
    .await;
    consistently(Duration::from_millis(1500), || async {
        router.status().await["owners"]["default"]["region"] == "a"
    })
    .await;
    a.set("health", json!(503)).await;
    eventually(Duration::from_secs(6), || async {
        router.status().await["owners"]["default"] == json!({"region": "b", "epoch": 2})
    })
    .await;
    let table: Value = serde_json::from_slice(
        &std::fs::read(router.dir.0.join("state/ownership.json")).expect("ownership file"),
    )
    .expect("json");
    let rec = &table["promotions"][0];
    assert!(
        rec["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("auto: a unhealthy"),
        "{table}"
    );
    let (status, region, token) = echo_write(&router, None, None).await;
    assert_eq!(
        (status, region.as_str(), token.as_deref()),
        (200, "b", Some("2"))
    );
}

/// Owner `a` and replica `b` (replicating from a), reads preferring b; extra
/// consistency keys appended.
async fn owner_and_replica(consistency: &str) -> (TestRegion, TestRegion, Router) {
    let (a, b, dir, cfg) = owner_and_replica_config(consistency).await;
    let router = Router::start_in(dir, &cfg);
    (a, b, router)
}

/// Owner `a`, replica `b` taking every plain read, and the router's config.
async fn owner_and_replica_config(consistency: &str) -> (TestRegion, TestRegion, TempDir, String) {
    let a = region("a").await;
    let b = region_with("b", Role::Replica, Some(a.url())).await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}consistency:\n  owners: {{ default: a }}\n{consistency}",
        two_regions(
            &a,
            &b,
            "  policy: weighted\n  weights: { a: 0, b: 1 }\n",
            "",
            &dir
        )
    );
    (a, b, dir, cfg)
}

/// GETs `/kv/{key}` with `X-Freshness` (and extra headers); (status, region, headers).
async fn read(
    router: &Router,
    key: &str,
    freshness: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().get(router.url(&format!("/kv/{key}")));
    if let Some(f) = freshness {
        req = req.header("X-Freshness", f);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("read");
    (
        resp.status().as_u16(),
        served_by(&resp),
        resp.headers().clone(),
    )
}

/// Writes `body` to `/kv/{key}`: its status, read-your-writes token (header)
/// and `Set-Cookie`.
async fn write_for_token(router: &Router, key: &str, body: &str) -> (u16, String, String) {
    let resp = reqwest::Client::new()
        .put(router.url(&format!("/kv/{key}")))
        .body(body.to_string())
        .send()
        .await
        .expect("write");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    (
        resp.status().as_u16(),
        header("x-switchyard-ryw"),
        header("set-cookie"),
    )
}

/// Keeps writing to the owner directly so the replica has commits held back.
fn keep_writing(a: &TestRegion) -> tokio::task::JoinHandle<()> {
    let url = a.url();
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        for i in 0..400 {
            let _ = client.put(format!("{url}/kv/bg{i}")).body("v").send().await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn bounded_reads_leave_a_lagging_replica_and_come_back_strong_reads_stay_on_the_owner() {
    let (a, b, router) = owner_and_replica("").await;
    eventually(Duration::from_secs(5), || async {
        read(&router, "x", Some("bounded"), &[]).await.1 == "b"
    })
    .await;
    for _ in 0..5 {
        assert_eq!(read(&router, "x", Some("strong"), &[]).await.1, "a");
    }
    b.set("lag", json!(4000)).await;
    let writer = keep_writing(&a);
    eventually(Duration::from_secs(10), || async {
        router.status().await["regions"]["b"]["lag_ms"]
            .as_u64()
            .unwrap_or(0)
            > 2500
    })
    .await;
    for _ in 0..5 {
        assert_eq!(
            read(&router, "x", Some("bounded"), &[]).await.1,
            "a",
            "2s bound"
        );
        assert_eq!(
            read(&router, "x", Some("1500ms"), &[]).await.1,
            "a",
            "an explicit bound"
        );
        assert_eq!(
            read(&router, "x", Some("relaxed"), &[]).await.1,
            "b",
            "30s bound"
        );
    }
    let (status, _, _) = read(&router, "x", Some("soonish"), &[]).await;
    assert_eq!(status, 400);
    b.set("lag", json!(0)).await;
    eventually(Duration::from_secs(10), || async {
        read(&router, "x", Some("bounded"), &[]).await.1 == "b"
    })
    .await;
    writer.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fallback_when_no_replica_is_fresh_enough() {
    let (a, b, router) = owner_and_replica(
        "  freshness:\n    default: bounded\n    classes:\n      bounded: 1s\n      stale-ok: { bound: 1s, fallback: stale }\n      waiter: { bound: 1s, fallback: wait, wait: 1500ms }\n      picky: { bound: 1s, fallback: reject }\n",
    )
    .await;
    b.set("lag", json!(5000)).await;
    let writer = keep_writing(&a);
    eventually(Duration::from_secs(10), || async {
        router.status().await["regions"]["b"]["lag_ms"]
            .as_u64()
            .unwrap_or(0)
            > 2000
    })
    .await;
    // owner (the default fallback)
    assert_eq!(read(&router, "x", Some("bounded"), &[]).await.1, "a");
    // stale: the least-lagged replica, marked
    let (_, region, headers) = read(&router, "x", Some("stale-ok"), &[]).await;
    assert_eq!(region, "b");
    let stale = headers["x-switchyard-stale"].to_str().unwrap_or("");
    assert!(
        stale.ends_with("ms") && stale.trim_end_matches("ms").parse::<u64>().unwrap_or(0) > 1000,
        "{stale}"
    );
    // reject
    let (status, _, headers) = read(&router, "x", Some("picky"), &[]).await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    // wait: the lag does not fall in time, so the owner serves after the wait
    let t = std::time::Instant::now();
    let (_, region, _) = read(&router, "x", Some("waiter"), &[]).await;
    assert_eq!(region, "a");
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    // wait: the replica catches up during the wait and serves
    writer.abort();
    let catch_up = {
        let b_url = b.url();
        let admin = router.admin.expect("admin");
        tokio::spawn(async move {
            // Once the read is waiting in the router, the replica catches up.
            while status_at(admin).await["inflight"] != 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            reqwest::Client::new()
                .put(format!("{b_url}/_control/lag"))
                .json(&json!({"value": 0}))
                .send()
                .await
                .expect("lag 0");
        })
    };
    let t = std::time::Instant::now();
    let (_, region, _) = read(&router, "x", Some("waiter"), &[]).await;
    catch_up.await.expect("task");
    assert_eq!(region, "b", "after {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_after_a_write_sees_it_and_a_forged_token_is_ignored() {
    let (_a, b, router) = owner_and_replica("  freshness: { default: relaxed }\n").await;
    b.set("lag", json!(3000)).await;
    eventually(Duration::from_secs(5), || async {
        read(&router, "x", None, &[]).await.1 == "b"
    })
    .await;
    let (status, token, cookie) = write_for_token(&router, "cart", "3 items").await;
    assert_eq!(status, 201);
    assert!(
        cookie.starts_with("sy_ryw=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let cookie_pair = cookie.split(';').next().unwrap_or("").to_string();
    // Without the token the lagging replica answers, and lacks the write.
    assert_eq!(read(&router, "cart", None, &[]).await.0, 404);
    // With it (cookie or header), the replica is skipped.
    let (status, region, _) = read(&router, "cart", None, &[("Cookie", &cookie_pair)]).await;
    assert_eq!((status, region.as_str()), (200, "a"));
    let (status, region, _) = read(&router, "cart", None, &[("X-Switchyard-Ryw", &token)]).await;
    assert_eq!((status, region.as_str()), (200, "a"));
    // A forged token (a later position, the MAC kept) is ignored.
    let forged = token.replacen(".p", ".p9", 1);
    let (_, region, _) = read(&router, "cart", None, &[("X-Switchyard-Ryw", &forged)]).await;
    assert_eq!(region, "b");
    // Once the replica has applied the write, it serves the token's reads again.
    eventually(Duration::from_secs(10), || async {
        let (status, region, _) = read(&router, "cart", None, &[("Cookie", &cookie_pair)]).await;
        status == 200 && region == "b"
    })
    .await;
}

async fn put(
    router: &Router,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new()
        .put(router.url(path))
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.expect("write");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_at_the_edge() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = format!(
        "{}consistency: {{ owners: {{ default: a }}, idempotency: require }}\n",
        two_regions(&a, &b, "  policy: weighted\n", "", &dir)
    );
    let router = Router::start_in(dir, &cfg);
    let (status, _, text) = put(&router, "/kv/k", None, "v").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Idempotency-Key"), "{text}");
    let (status, _, _) = put(&router, "/kv/k", Some("key-1"), "v").await;
    assert_eq!(status, 201);
    // The same request again: forwarded, answered from the region's store.
    let (status, headers, _) = put(&router, "/kv/k", Some("key-1"), "v").await;
    assert_eq!(status, 201);
    assert_eq!(headers["idempotent-replayed"], "true");
    // The same key with another body: 422 at the edge; the region never sees it.
    let before = a.requests();
    let (status, _, text) = put(&router, "/kv/k", Some("key-1"), "w").await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(a.requests(), before);
    // A key still in flight: 409.
    a.set("slow", json!(800)).await;
    let received = a.requests();
    let slow = {
        let url = router.url("/kv/slow");
        tokio::spawn(async move {
            reqwest::Client::new()
                .put(url)
                .header("Idempotency-Key", "key-2")
                .body("s")
                .send()
                .await
                .expect("slow write")
                .status()
                .as_u16()
        })
    };
    // The region has it, so its key was admitted at the edge (being in
    // flight comes before that).
    eventually(Duration::from_secs(5), || async { a.requests() > received }).await;
    let (status, _, text) = put(&router, "/kv/slow", Some("key-2"), "s").await;
    assert_eq!(status, 409, "{text}");
    assert_eq!(slow.await.expect("task"), 201);
    a.set("slow", json!(0)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keyless_writes_get_a_generated_key() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = two_regions(&a, &b, "  policy: weighted\n", "", &dir);
    let router = Router::start_in(dir, &cfg);
    let echo: Value = reqwest::Client::new()
        .post(router.url("/_echo"))
        .body("hello")
        .send()
        .await
        .expect("write")
        .json()
        .await
        .expect("json");
    let key = echo["headers"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h[0] == "idempotency-key"))
        .and_then(|h| h[1].as_str())
        .unwrap_or("");
    assert_eq!(key.len(), 36, "{echo}");
    assert_eq!(
        echo["body"], "hello",
        "the body read at the edge still reaches the region: {echo}"
    );
    // Generated keys are new by construction: the edge's bounded table of
    // keys is left to the clients' own.
    for _ in 0..20 {
        let (status, _, _) = put(&router, "/kv/k", None, "v").await;
        assert_eq!(status, 201);
    }
    assert_eq!(router.status().await["idempotency_keys"], 0);
    let (status, _, _) = put(&router, "/kv/k", Some("client-key"), "v").await;
    assert_eq!(status, 201);
    assert_eq!(router.status().await["idempotency_keys"], 1);
}

/// Explain and a real request agree on the region, or on the refusal, for
/// every freshness fallback, with the replica fresh and lagging.
#[tokio::test(flavor = "multi_thread")]
async fn explain_and_a_real_request_agree_fallbacks_included() {
    let (a, b, router) = owner_and_replica(
        "  freshness:\n    default: bounded\n    classes:\n      bounded: 1s\n      stale-ok: { bound: 1s, fallback: stale }\n      picky: { bound: 1s, fallback: reject }\n",
    )
    .await;
    let agree = |class: &'static str| {
        let router = &router;
        async move {
            let (code, explained) = router
                .admin(
                    Method::POST,
                    "/admin/v1/explain",
                    Some(json!({"method": "GET", "path": "/kv/x", "headers": {"X-Freshness": class}})),
                )
                .await;
            assert_eq!(code, 200, "{explained}");
            let (status, region, headers) = read(router, "x", Some(class), &[]).await;
            (explained, status, region, headers)
        }
    };
    eventually(Duration::from_secs(5), || async {
        agree("bounded").await.2 == "b"
    })
    .await;
    for class in ["bounded", "stale-ok", "picky"] {
        let (explained, status, region, _) = agree(class).await;
        assert_eq!(status, 404, "{class}: a read of an absent key");
        assert_eq!(explained["pick"], region.as_str(), "{class}: {explained}");
        assert_eq!(explained["fallback"], Value::Null, "{class}");
    }
    b.set("lag", json!(5000)).await;
    let writer = keep_writing(&a);
    eventually(Duration::from_secs(10), || async {
        router.status().await["regions"]["b"]["lag_ms"]
            .as_u64()
            .unwrap_or(0)
            > 2000
    })
    .await;
    let (explained, _, region, _) = agree("bounded").await;
    assert_eq!(
        (explained["pick"].clone(), region.as_str()),
        (json!("a"), "a")
    );
    let (explained, _, region, headers) = agree("stale-ok").await;
    assert_eq!(explained["fallback"]["kind"], "stale", "{explained}");
    assert_eq!(explained["pick"], region.as_str());
    assert!(headers.contains_key("x-switchyard-stale"));
    let (explained, status, _, _) = agree("picky").await;
    assert_eq!(
        explained["fallback"],
        json!({"kind": "reject"}),
        "{explained}"
    );
    assert_eq!(explained["outcome"]["status"], status);
    assert_eq!(status, 503);
    writer.abort();
}

/// The edge remembers at most `idempotency_max_keys`: the oldest finished go
/// first, a table full of writes in flight answers 503, and keys are scoped
/// by the client's credentials.
#[tokio::test(flavor = "multi_thread")]
async fn the_idempotency_table_is_bounded_and_scoped_by_client() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = format!(
        "{}consistency: {{ owners: {{ default: a }}, idempotency_max_keys: 2 }}\n",
        two_regions(&a, &b, "  policy: weighted\n", "", &dir)
    );
    let router = Router::start_in(dir, &cfg);
    let write = |key: &'static str, auth: &'static str, body: &'static str| {
        let url = router.url("/kv/k");
        async move {
            let resp = reqwest::Client::new()
                .put(url)
                .header("Idempotency-Key", key)
                .header("Authorization", auth)
                .body(body)
                .send()
                .await
                .expect("write");
            (
                resp.status().as_u16(),
                resp.headers().get("retry-after").cloned(),
            )
        }
    };
    // Two keys remembered; a third evicts the oldest.
    assert_eq!(write("k1", "Bearer alice", "1").await.0, 201);
    assert_eq!(write("k2", "Bearer alice", "2").await.0, 201);
    assert_eq!(write("k3", "Bearer alice", "3").await.0, 201);
    // Where a reused key is refused tells whether the edge still knows it:
    // the edge answers 422 itself; a key it forgot reaches the region (which
    // keeps its own store and answers 422 too).
    let seen = a.requests();
    assert_eq!(write("k2", "Bearer alice", "other").await.0, 422);
    assert_eq!(a.requests(), seen, "k2 is remembered at the edge");
    assert_eq!(write("k1", "Bearer alice", "other").await.0, 422);
    assert_eq!(a.requests(), seen + 1, "k1 was evicted at the edge");
    // Bob's k3 is not Alice's k3: not refused at the edge.
    write("k3", "Bearer bob", "other").await;
    assert_eq!(
        a.requests(),
        seen + 2,
        "another client's key of the same name"
    );
    // Full of writes in flight: a new key waits its turn.
    a.set("slow", json!(1500)).await;
    let received = a.requests();
    let held: Vec<_> = ["s1", "s2"]
        .into_iter()
        .map(|k| tokio::spawn(write(k, "Bearer carol", "s")))
        .collect();
    // Both keys admitted: the region has both writes.
    eventually(Duration::from_secs(5), || async {
        a.requests() >= received + 2
    })
    .await;
    let (status, retry_after) = write("s3", "Bearer carol", "s").await;
    assert_eq!(status, 503);
    assert_eq!(retry_after.expect("Retry-After"), "1");
    for h in held {
        assert_eq!(h.await.expect("held write").0, 201);
    }
    a.set("slow", json!(0)).await;
    assert_eq!(write("s3", "Bearer carol", "s").await.0, 201);
    let metrics = router.metrics_text().await;
    assert!(
        metrics.contains("switchyard_idempotency_evictions_total{reason=\"capacity\"}"),
        "{metrics}"
    );
}

/// A replica whose health answer carries no lag is not trusted: bounded reads
/// leave it, and it is not promoted unless forced.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_reports_no_lag_is_neither_read_from_nor_promoted() {
    let (_a, b, router) = owner_and_replica("  promotion: { max_lag: 5s }\n").await;
    eventually(Duration::from_secs(5), || async {
        read(&router, "x", Some("bounded"), &[]).await.1 == "b"
    })
    .await;
    b.set("health_body", json!("plain")).await;
    // Healthy still, but its lag is no longer known once the last report ages out.
    eventually(Duration::from_secs(10), || async {
        let s = router.status().await;
        s["regions"]["b"]["healthy"] == true && s["regions"]["b"]["lag_known"] == false
    })
    .await;
    eventually(Duration::from_secs(5), || async {
        read(&router, "x", Some("bounded"), &[]).await.1 == "a"
    })
    .await;
    for _ in 0..5 {
        assert_eq!(read(&router, "x", Some("bounded"), &[]).await.1, "a");
    }
    let (code, body) = router
        .admin(
            Method::POST,
            "/admin/v1/promote",
            Some(json!({"partition": "default", "to": "b"})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["rule"], "lag_unknown", "{body}");
    b.set("health_body", json!("json")).await;
    eventually(Duration::from_secs(10), || async {
        read(&router, "x", Some("bounded"), &[]).await.1 == "b"
    })
    .await;
}

/// Without a configured key, a router makes one and keeps it in `state_dir`:
/// a read-your-writes token outlives a reload and a restart.
#[tokio::test(flavor = "multi_thread")]
async fn read_your_writes_tokens_outlive_reloads_and_restarts_without_a_configured_key() {
    let (_a, b, dir, cfg) = owner_and_replica_config("  freshness: { default: relaxed }\n").await;
    let mut router = Router::start_with_env(dir, &cfg, &[("SWITCHYARD_RYW_KEY", "")]);
    let key_file = router.dir.0.join("state/ryw.key");
    assert!(key_file.exists(), "the key is kept in the state directory");
    // Lagging 20 s (within the relaxed 30 s bound): the replica serves plain
    // reads, and lacks the write for longer than a restart takes.
    b.set("lag", json!(20000)).await;
    eventually(Duration::from_secs(5), || async {
        read(&router, "x", None, &[]).await.1 == "b"
    })
    .await;
    let (status, token, _) = write_for_token(&router, "cart", "3 items").await;
    assert_eq!(status, 201);
    // The token steers the read to the owner while the replica lags...
    let honoured = |router: &Router| {
        let url = router.url("/kv/cart");
        let token = token.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(url)
                .header("X-Switchyard-Ryw", token)
                .send()
                .await
                .expect("read");
            served_by(&resp) == "a"
        }
    };
    assert!(honoured(&router).await);
    // ...after a reload...
    let reloaded = router.reload_with(&cfg).await;
    assert_eq!(reloaded.status().as_u16(), 200);
    assert!(honoured(&router).await, "after a reload");
    // ...and after a restart.
    tokio::task::block_in_place(|| router.restart());
    assert!(honoured(&router).await, "after a restart");
}

#[test]
fn a_short_read_your_writes_key_or_a_fleet_without_one_refuses_to_start() {
    let dir = TempDir::new();
    let base = format!(
        "listen: {{ http: 127.0.0.1:0 }}\nstate_dir: {}\nregions:\n  a: {{ type: full, endpoints: [\"127.0.0.1:1\"], services: [api] }}\nrouting: {{ policy: weighted }}\n",
        dir.0.join("state").display()
    );
    let run = |config: &std::path::Path, key: &str| {
        run_switchyard(&["run"], config, &[("SWITCHYARD_RYW_KEY", key)])
    };
    let single = dir.write("single.yaml", &base);
    let (code, err) = run(&single, "too-short");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("SWITCHYARD_RYW_KEY holds 9 bytes; a read-your-writes key needs at least 32"),
        "{err}"
    );
    let fleet = dir.write(
        "fleet.yaml",
        &format!("{base}coordination: {{ etcd: {{ endpoints: [\"http://127.0.0.1:1\"] }} }}\n"),
    );
    let (code, err) = run(&fleet, "");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("in fleet mode every router must sign"),
        "{err}"
    );
}

/// A write whose owner is promoted away while its body is still arriving is
/// not forwarded with the old epoch to the demoted owner: 503, nothing
/// reaches either region, and the op log records it as never sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_while_a_body_arrives_stops_the_write_at_the_edge() {
    use std::io::{Read, Write};
    let (a, b, router) = owner_and_replica("").await;
    b.set("role", json!("primary")).await;
    let before = (a.requests(), b.requests());
    let mut s = std::net::TcpStream::connect(router.http).expect("connect");
    s.write_all(
        b"PUT /kv/racing HTTP/1.1\r\nHost: a\r\nIdempotency-Key: race-1\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhalf-",
    )
    .expect("first half");
    // The write's owner is looked up before its body is read: once the
    // router reads the body, the promotion comes after the lookup.
    eventually(Duration::from_secs(5), || async {
        router.status().await["writes_reading_body"] == 1
    })
    .await;
    let (code, body) = promote(
        &router,
        json!({"partition": "default", "to": "b", "force": true}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    s.write_all(b"done!").expect("second half");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("changed while the request was read"),
        "{answer}"
    );
    assert!(answer.to_lowercase().contains("retry-after"), "{answer}");
    assert_eq!(
        (a.requests(), b.requests()),
        before,
        "nothing reached either region"
    );
    // The outcome is logged after the answer; wait for it.
    let outcome = || {
        oplog_records(&router)
            .into_iter()
            .filter_map(|r| match r {
                switchyard_oplog::Record::Outcome(o) => Some(o.outcome),
                _ => None,
            })
            .next_back()
    };
    eventually(Duration::from_secs(5), || async { outcome().is_some() }).await;
    assert_eq!(outcome(), Some(switchyard_oplog::OutcomeKind::Failed));
}
