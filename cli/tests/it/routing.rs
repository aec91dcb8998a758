use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn weighted_split_is_proportional_and_sticky() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = two_regions(
        &a,
        &b,
        "  policy: weighted\n  weights: { a: 80, b: 20 }\n",
        "",
        &dir,
    );
    let router = Router::start_in(dir, &cfg);
    let counts = split(&router, 2000).await;
    let share_b = counts.get("b").copied().unwrap_or(0) as f64 / 2000.0;
    assert!(
        (share_b - 0.20).abs() < 0.03,
        "b got {share_b:.3} of traffic: {counts:?}"
    );
    // The same key lands in the same region every time.
    let client = reqwest::Client::new();
    for key in ["alice", "bob", "carol"] {
        let (_, first) = get_region(&client, &router.url("/kv/x"), Some(key)).await;
        for _ in 0..10 {
            assert_eq!(
                get_region(&client, &router.url("/kv/x"), Some(key)).await.1,
                first
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dial_sends_a_share_of_what_the_policy_would() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = two_regions(&a, &b, EVEN_SPLIT, "    dial: 20\n", &dir);
    let router = Router::start_in(dir, &cfg);
    let counts = split(&router, 2000).await;
    let share_b = counts.get("b").copied().unwrap_or(0) as f64 / 2000.0;
    assert!(
        (share_b - 0.10).abs() < 0.03,
        "b got {share_b:.3}: {counts:?}"
    );
    let status = router.status().await;
    assert_eq!(status["regions"]["b"]["dial"], 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_failover_has_no_5xx_after_detection() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = two_regions(&a, &b, EVEN_SPLIT, "", &dir);
    let router = Router::start_in(dir, &cfg);
    router.wait_healthy("a", true).await;
    // Region a turns bad: its health fails and it answers 500.
    a.set("health", json!(503)).await;
    a.set("fail", json!(500)).await;
    router.wait_healthy("a", false).await;
    let before = a.requests();
    let client = reqwest::Client::new();
    for i in 0..300 {
        let (status, region) =
            get_region(&client, &router.url("/kv/x"), Some(&format!("k{i}"))).await;
        assert!(status < 500, "request {i} got {status} from {region}");
        assert_eq!(region, "b");
    }
    assert_eq!(
        a.requests(),
        before,
        "no request reached the unhealthy region"
    );
    // It comes back.
    a.set("health", json!(200)).await;
    a.set("fail", json!(0)).await;
    router.wait_healthy("a", true).await;
    let counts = split(&router, 200).await;
    assert!(counts.get("a").copied().unwrap_or(0) > 50, "{counts:?}");
}

/// The router serves only once it has heard from its regions: a region down
/// at start gets no request, and the replicas' lag is known for the first
/// bounded read, though the next probe is a minute away.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_requests_are_routed_on_what_the_first_probes_found() {
    let (a, b) = (region("a").await, region("b").await);
    a.set("health", json!(503)).await;
    let dir = TempDir::new();
    let cfg = slow_health(&two_regions(&a, &b, EVEN_SPLIT, "", &dir));
    let router = Router::start_in(dir, &cfg);
    let status = router.status().await;
    assert_eq!(status["regions"]["a"]["healthy"], false, "{status}");
    assert_eq!(status["regions"]["b"]["healthy"], true, "{status}");
    assert_eq!(status["regions"]["b"]["lag_known"], true, "{status}");
    let before = a.requests();
    let client = reqwest::Client::new();
    for i in 0..20 {
        let (status, region) =
            get_region(&client, &router.url("/kv/x"), Some(&format!("k{i}"))).await;
        assert_eq!((status, region.as_str()), (404, "b"), "request {i}");
    }
    assert_eq!(
        a.requests(),
        before,
        "no read reached the region down at start"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_that_get_5xx_are_retried_once_on_the_next_region() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    // Slow health checks: the retry, not ejection, must save these reads.
    let cfg = slow_health(&two_regions(&a, &b, EVEN_SPLIT, "", &dir));
    let router = Router::start_in(dir, &cfg);
    a.set("fail", json!(500)).await;
    let client = reqwest::Client::new();
    for i in 0..40 {
        let (status, region) =
            get_region(&client, &router.url("/kv/x"), Some(&format!("k{i}"))).await;
        assert_eq!(status, 404, "request {i} from {region}"); // b has no such key: 404, not 500
        assert_eq!(region, "b");
    }
    let m = router.metrics_text().await;
    assert!(m.contains("switchyard_retries_total{region=\"a\"}"), "{m}");
    // Writes are never retried: they go to the owner (a) and see its 500.
    let resp = client
        .put(router.url("/kv/x"))
        .body("v")
        .send()
        .await
        .expect("write");
    assert_eq!(resp.status().as_u16(), 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_budget_stops_retries_from_amplifying_an_outage() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = slow_health(&two_regions(
        &a,
        &b,
        "  policy: weighted\n  weights: { a: 50, b: 50 }\n  retry_budget: 0.0\n",
        "",
        &dir,
    ));
    let router = Router::start_in(dir, &cfg);
    a.set("fail", json!(500)).await;
    b.set("fail", json!(500)).await;
    let client = reqwest::Client::new();
    let before = a.requests() + b.requests();
    for i in 0..200 {
        let (status, _) = get_region(&client, &router.url("/kv/x"), Some(&format!("k{i}"))).await;
        assert_eq!(status, 500);
    }
    let attempts = a.requests() + b.requests() - before;
    // A zero budget leaves only the small per-second reserve of retries.
    assert!(
        attempts < 200 + 60,
        "{attempts} upstream attempts for 200 requests"
    );
    let m = router.metrics_text().await;
    assert!(m.contains("switchyard_retries_denied_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_policy_moves_off_a_slow_region_and_back() {
    let (a, b) = (region("a").await, region("b").await);
    b.set("delay", json!(60)).await;
    let dir = TempDir::new();
    let cfg = two_regions(&a, &b, "  policy: latency\n", "", &dir);
    let router = Router::start_in(dir, &cfg);
    let client = reqwest::Client::new();
    let share = |name: &'static str| {
        let client = client.clone();
        let url = router.url("/kv/x");
        async move {
            let mut hits = 0;
            for i in 0..50 {
                if get_region(&client, &url, Some(&format!("k{i}"))).await.1 == name {
                    hits += 1;
                }
            }
            hits
        }
    };
    eventually(Duration::from_secs(10), || async { share("a").await >= 48 }).await;
    // a turns slow (but stays up): traffic moves to b.
    a.set("delay", json!(250)).await;
    b.set("delay", json!(0)).await;
    eventually(Duration::from_secs(15), || async { share("b").await >= 48 }).await;
    // a recovers: the probes see it, and traffic comes back.
    a.set("delay", json!(0)).await;
    b.set("delay", json!(60)).await;
    eventually(Duration::from_secs(15), || async { share("a").await >= 48 }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_resolved_through_dns() {
    let a = region("a").await;
    let dir = TempDir::new();
    // One probe a minute: the first, made once the name resolved, is what
    // the router starts on.
    let cfg = slow_health(&format!(
        "{}regions:\n{}routing:\n  policy: weighted\n",
        header(&dir),
        region_yaml("a", format!("localhost:{}", a.addr.port()), "")
    ));
    let router = Router::start_in(dir, &cfg);
    let status = router.status().await;
    assert_eq!(status["regions"]["a"]["role"], "primary", "{status}");
    let client = reqwest::Client::new();
    assert_eq!(
        get_region(&client, &router.url("/kv/x"), None).await,
        (404, "a".to_string())
    );
    let status = router.status().await;
    let addrs = status["regions"]["a"]["endpoints"][0]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!addrs.is_empty(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_drift_shows_in_status_and_metrics() {
    let a = region("a").await;
    let ro = region("ro").await; // reports role primary
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}{}routing:\n  policy: weighted\n",
        header(&dir),
        region_yaml("a", a.addr, "").replace("services: [api]", "services: [api, search]"),
        region_yaml("ro", ro.addr, "").replace("type: full", "type: read-only"),
    );
    let router = Router::start_in(dir, &cfg);
    eventually(Duration::from_secs(10), || async {
        let s = router.status().await;
        s["regions"]["a"]["drift"] == true && s["regions"]["ro"]["drift"] == true
    })
    .await;
    let s = router.status().await;
    let reasons = s["regions"]["a"]["drift_reasons"].to_string();
    assert!(reasons.contains("search"), "{reasons}");
    let m = router.metrics_text().await;
    assert!(
        m.contains("switchyard_region_drifted{region=\"ro\"} 1"),
        "{m}"
    );
    ro.set("role", json!("replica")).await;
    eventually(Duration::from_secs(10), || async {
        router.status().await["regions"]["ro"]["drift"] == false
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_is_sticky_by_client_address_without_a_partition_key() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = two_regions(
        &a,
        &b,
        "  policy: weighted\n  weights: { a: 70, b: 30 }\n",
        "",
        &dir,
    );
    let router = Router::start_in(dir, &cfg);
    let url = router.url("/kv/x");
    let mut counts: HashMap<String, usize> = HashMap::new();
    // 2000 distinct client addresses on loopback: 127.0.X.Y.
    for n in 0..2000u32 {
        let ip = format!("127.0.{}.{}", 10 + n / 250, 1 + n % 250);
        let client = client_from(&ip);
        let (status, first) = get_region(&client, &url, None).await;
        assert_eq!(status, 404);
        if n % 100 == 0 {
            // The same client keeps its region.
            for _ in 0..3 {
                assert_eq!(
                    get_region(&client, &url, None).await.1,
                    first,
                    "client {ip}"
                );
            }
        }
        *counts.entry(first).or_insert(0) += 1;
    }
    let share_b = counts.get("b").copied().unwrap_or(0) as f64 / 2000.0;
    assert!(
        (share_b - 0.30).abs() < 0.04,
        "b got {share_b:.3}: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_of_a_region_share_its_traffic_and_a_down_one_is_skipped() {
    let (e1, e2) = (region("a").await, region("a").await);
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}routing:\n  policy: weighted\n",
        header(&dir),
        region_yaml("a", format!("{}\", \"{}", e1.addr, e2.addr), "")
    );
    let router = Router::start_in(dir, &cfg);
    let client = reqwest::Client::new();
    let (b1, b2) = (e1.requests(), e2.requests());
    for _ in 0..100 {
        assert_eq!(get_region(&client, &router.url("/kv/x"), None).await.0, 404);
    }
    let (d1, d2) = (e1.requests() - b1, e2.requests() - b2);
    assert!(
        d1 >= 30 && d2 >= 30,
        "round robin across endpoints: {d1} / {d2}"
    );
    e2.set("health", serde_json::json!(500)).await;
    eventually(Duration::from_secs(10), || async {
        router.status().await["regions"]["a"]["endpoints"][1]["healthy"] == false
    })
    .await;
    assert_eq!(router.status().await["regions"]["a"]["healthy"], true);
    let before = e2.requests();
    for _ in 0..50 {
        assert_eq!(get_region(&client, &router.url("/kv/x"), None).await.0, 404);
    }
    assert_eq!(e2.requests(), before, "the down endpoint gets nothing");
}
