//! Tail latency and overload: hedged reads, per-try timeouts and client
//! deadlines, concurrency limits per region, least outstanding picks and
//! panic mode, each through the real router in front of reference regions.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_region::Role;

use crate::support::*;

/// Owner `a` and replica `b` (following `a`), `a` preferred for reads;
/// `routing_extra` goes under `routing:`, `a_extra` under region `a`.
async fn pair(routing_extra: &str, a_extra: &str) -> (TestRegion, TestRegion, Router) {
    let a = region("a").await;
    let b = region_with("b", Role::Replica, Some(a.url())).await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}{}routing:\n  policy: weighted\n  weights: {{ a: 1, b: 0 }}\n  outlier: {{ enabled: false }}\n{routing_extra}consistency: {{ owners: {{ default: a }} }}\n",
        header(&dir),
        region_yaml("a", a.addr, a_extra),
        region_yaml("b", b.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    eventually(Duration::from_secs(5), || async {
        let s = router.status().await;
        s["regions"]["a"]["healthy"] == true && s["regions"]["b"]["healthy"] == true
    })
    .await;
    (a, b, router)
}

/// Writes `k` through the router and waits until `b` has it.
async fn seed(router: &Router, b: &TestRegion) {
    let w = reqwest::Client::new()
        .put(router.url("/kv/k"))
        .body("v")
        .send()
        .await
        .expect("write");
    assert_eq!(w.status(), 201);
    eventually(Duration::from_secs(5), || async {
        reqwest::get(format!("{}/kv/k", b.url()))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

fn p99(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[((ms.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_first_region_is_hedged_to_the_next_and_the_first_answer_wins() {
    let (a, b, router) = pair(
        "  retry_budget: 1.0\n  hedge: { after: 50ms, max: 1 }\n",
        "",
    )
    .await;
    seed(&router, &b).await;
    // a turns slow while its health checks pass.
    a.set("slow", json!(300)).await;
    let client = reqwest::Client::new();
    let mut direct = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let r = client
            .get(format!("{}/kv/k", b.url()))
            .send()
            .await
            .expect("read");
        assert_eq!(r.status(), 200);
        direct.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut hedged = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let r = client.get(router.url("/kv/k")).send().await.expect("read");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-switchyard-region"], "b");
        let v: Value = r.json().await.expect("JSON");
        assert_eq!(v["value"], "v");
        hedged.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (fast, with_hedge) = (p99(direct), p99(hedged));
    eprintln!(
        "fast region p99 {fast:.1} ms; hedged read p99 {with_hedge:.1} ms (a answers in 300 ms)"
    );
    // The figure against after + fast p99 + 10 ms is the drill's
    // (`fault-drill overload`, on a quiet machine); here, beside the other
    // tests, every read must be served well before a's 300 ms.
    assert!(
        with_hedge < 200.0,
        "hedged p99 {with_hedge:.1} ms: reads waited for the slow region"
    );
    let metrics = router.metrics_text().await;
    assert!(
        metrics.contains("switchyard_hedges_total{outcome=\"hedge_won\"} 30"),
        "{metrics}"
    );
    // Writes are never hedged: a write waits for its slow owner.
    let t = Instant::now();
    let w = client
        .put(router.url("/kv/w"))
        .body("x")
        .send()
        .await
        .expect("write");
    assert_eq!(w.status(), 201);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(metrics.contains("outcome=\"sent\"} 30"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_try_timeout_moves_a_read_on_and_a_client_deadline_bounds_it() {
    let (a, b, router) = pair("  retry_budget: 1.0\n  try_timeout: 100ms\n", "").await;
    seed(&router, &b).await;
    a.set("slow", json!(1000)).await;
    let client = reqwest::Client::new();
    let t = Instant::now();
    let r = client.get(router.url("/kv/k")).send().await.expect("read");
    let took = t.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-region"], "b");
    assert!(took < Duration::from_millis(600), "{took:?}");

    // Only the slow region left: the client's deadline answers 504 in time.
    let (code, _) = router
        .admin(reqwest::Method::POST, "/admin/v1/regions/b/drain", None)
        .await;
    assert_eq!(code, 200);
    let t = Instant::now();
    let r = client
        .get(router.url("/kv/k"))
        .header("X-Request-Timeout", "80ms")
        .send()
        .await
        .expect("read");
    // The connection is not reused after a failed proxy, and the answer says so.
    assert_eq!(
        r.headers().get("connection").and_then(|v| v.to_str().ok()),
        Some("close")
    );
    assert_eq!(r.status(), 504, "{:?}", r.text().await);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let r = client
        .get(router.url("/kv/k"))
        .header("X-Request-Timeout", "soon")
        .send()
        .await
        .expect("read");
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("body").contains("X-Request-Timeout"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_region_at_max_inflight_holds_no_more_and_the_rest_spill() {
    let (a, b, router) = pair("", "    max_inflight: 4\n").await;
    seed(&router, &b).await;
    a.set("slow", json!(200)).await;
    let client = reqwest::Client::new();
    let reads = (0..32).map(|_| {
        let (client, url) = (client.clone(), router.url("/kv/k"));
        tokio::spawn(async move {
            let mut regions = Vec::new();
            for _ in 0..3 {
                let r = client.get(&url).send().await.expect("read");
                assert_eq!(r.status(), 200);
                regions.push(
                    r.headers()["x-switchyard-region"]
                        .to_str()
                        .unwrap_or("")
                        .to_string(),
                );
            }
            regions
        })
    });
    let mut served = Vec::new();
    for r in futures_util::future::join_all(reads).await {
        served.extend(r.expect("joined"));
    }
    assert!(a.concurrent_max() <= 4, "a held {}", a.concurrent_max());
    assert!(
        a.concurrent_max() >= 3,
        "a was used: {}",
        a.concurrent_max()
    );
    let on_b = served.iter().filter(|r| *r == "b").count();
    assert!(on_b >= 48, "most spilled to b: {on_b} of 96");
    let s = router.status().await;
    let c = &s["regions"]["a"]["concurrency"];
    assert_eq!(
        (c["kind"].clone(), c["limit"].clone()),
        (json!("fixed"), json!(4)),
        "{s}"
    );
    assert!(c["spilled"].as_u64() >= Some(48), "{c}");

    // Nowhere to spill: 503 with Retry-After.
    router
        .admin(reqwest::Method::POST, "/admin/v1/regions/b/drain", None)
        .await;
    let reads = (0..16).map(|_| {
        let (client, url) = (client.clone(), router.url("/kv/k"));
        tokio::spawn(async move {
            let r = client.get(&url).send().await.expect("read");
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        })
    });
    let answers: Vec<(u16, bool)> = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .map(|r| r.expect("joined"))
        .collect();
    let refused = answers.iter().filter(|(s, _)| *s == 503).count();
    assert!(refused >= 8, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, retry_after)| *s == 200 || (*s == 503 && *retry_after)),
        "{answers:?}"
    );
    assert!(a.concurrent_max() <= 4);

    // Writes wait their turn at the owner: 8 at once, 4 at a time, all taken.
    let writes = (0..8).map(|i| {
        let (client, url) = (client.clone(), router.url(&format!("/kv/w{i}")));
        tokio::spawn(async move {
            client
                .put(&url)
                .body("x")
                .send()
                .await
                .expect("write")
                .status()
                .as_u16()
        })
    });
    for w in futures_util::future::join_all(writes).await {
        assert_eq!(w.expect("joined"), 201);
    }
    assert!(a.concurrent_max() <= 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_every_health_check_failing_reads_go_on_in_panic_mode() {
    let (a, b, router) = pair("", "").await;
    seed(&router, &b).await;
    a.set("health", json!(503)).await;
    b.set("health", json!(503)).await;
    eventually(Duration::from_secs(5), || async {
        router.status().await["panic"]["api"] == true
    })
    .await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let r = client.get(router.url("/kv/k")).send().await.expect("read");
        assert_eq!(r.status(), 200, "reads ignore health in panic mode");
    }
    // Writes stay with their owner, which health calls down: refused as before.
    let w = client
        .put(router.url("/kv/w"))
        .body("x")
        .send()
        .await
        .expect("write");
    assert_eq!(w.status(), 503);
    let metrics = router.metrics_text().await;
    assert!(
        metrics.contains("switchyard_panic_reads_total 10"),
        "{metrics}"
    );
    // One region back is half of two: at the threshold, no longer panic.
    a.set("health", json!(200)).await;
    eventually(Duration::from_secs(5), || async {
        router.status().await["panic"]["api"] == false
    })
    .await;
}

/// The only region serving a service, ejected for a burst of errors while
/// its health checks pass: ejected counts as down, so the service is in
/// panic mode and its reads still reach the region (and are answered once
/// it recovers) instead of being refused until the ejection runs out.
#[tokio::test(flavor = "multi_thread")]
async fn ejecting_the_last_region_of_a_service_puts_it_in_panic_mode() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}routing:\n  policy: weighted\n  outlier: {{ consecutive_failures: 3, interval: 50ms, base_ejection: 60s }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    let client = reqwest::Client::new();
    let read = || async {
        client
            .get(router.url("/kv/k"))
            .send()
            .await
            .expect("read")
            .status()
            .as_u16()
    };
    assert_eq!(read().await, 404, "a answers");
    a.set("fail", json!(503)).await;
    for _ in 0..3 {
        read().await;
    }
    eventually(Duration::from_secs(5), || async {
        let s = router.status().await;
        s["regions"]["a"]["ejected"] == true && s["panic"]["api"] == true
    })
    .await;
    a.set("fail", json!(0)).await;
    for _ in 0..5 {
        assert_eq!(read().await, 404, "the ejected region still serves reads");
    }
    let s = router.status().await;
    assert_eq!(s["regions"]["a"]["ejected"], true, "{s}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_with_fewer_requests_in_flight_goes_first() {
    let fast = region("fast").await;
    let slow = region("slow").await;
    slow.set("slow", json!(200)).await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n  r:\n    type: full\n    endpoints: [\"{}\", \"{}\"]\n    services: [api]\n    health: {{ interval: 100ms, timeout: 300ms, fall: 2, rise: 1 }}\nrouting:\n  policy: weighted\n  outlier: {{ enabled: false }}\n",
        header(&dir),
        fast.addr,
        slow.addr
    );
    let router = Router::start_in(dir, &cfg);
    let client = reqwest::Client::new();
    let reads = (0..8).map(|_| {
        let (client, url) = (client.clone(), router.url("/kv/k"));
        tokio::spawn(async move {
            for _ in 0..10 {
                client.get(&url).send().await.expect("read");
            }
        })
    });
    futures_util::future::join_all(reads).await;
    let (f, s) = (fast.requests(), slow.requests());
    eprintln!("fast endpoint {f}, slow endpoint {s}");
    assert!(
        f >= 3 * s,
        "least outstanding favours the fast endpoint: {f} vs {s}"
    );
}

/// `clients` tasks reading `/kv/k` through the router until `stop` is set.
fn load(
    router: &Router,
    clients: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (client, url, stop) = (reqwest::Client::new(), router.url("/kv/k"), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = client.get(&url).send().await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adaptive_limit_is_cut_when_latency_climbs_with_load_and_recovers_after() {
    let (a, b, router) = pair(
        "",
        "    adaptive_concurrency: { min: 2, max: 64, initial: 32 }\n",
    )
    .await;
    seed(&router, &b).await;
    // a's answers take 5 ms (a real API's, not loopback's fraction of a
    // millisecond, which a busy machine's scheduling can double), and 10 ms
    // more for every other request it is answering.
    a.set("slow", json!(5)).await;
    a.set("load", json!(10)).await;
    let limit = |s: &Value| {
        s["regions"]["a"]["concurrency"]["limit"]
            .as_u64()
            .unwrap_or(0)
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Light load first, one request at a time (two could keep each other
    // 10 ms slow for good): the region's best latency is learned.
    let light = load(&router, 1, &stop);
    eventually(Duration::from_secs(10), || async {
        router.status().await["regions"]["a"]["concurrency"]["min_rtt_ms"]
            .as_f64()
            .is_some_and(|m| (5.0..30.0).contains(&m))
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    futures_util::future::join_all(light).await;

    // Heavy load: latency climbs with concurrency, and the limit comes down.
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let heavy = load(&router, 24, &stop);
    let t = Instant::now();
    eventually(Duration::from_secs(10), || async {
        limit(&router.status().await) <= 8
    })
    .await;
    let cut_after = t.elapsed();
    let s = router.status().await;
    eprintln!(
        "limit cut to {} after {cut_after:?}: {}",
        limit(&s),
        s["regions"]["a"]["concurrency"]
    );
    assert!(
        s["regions"]["a"]["concurrency"]["spilled"].as_u64() > Some(0),
        "{s}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    futures_util::future::join_all(heavy).await;
    assert!(a.concurrent_max() <= 64);

    // Light load again: latency is back near its best, and the limit grows.
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let light = load(&router, 1, &stop);
    let t = Instant::now();
    eventually(Duration::from_secs(10), || async {
        limit(&router.status().await) >= 32
    })
    .await;
    eprintln!(
        "limit back to {} after {:?}",
        limit(&router.status().await),
        t.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    futures_util::future::join_all(light).await;
    let metrics = router.metrics_text().await;
    assert!(
        metrics.contains("switchyard_region_concurrency_limit{region=\"a\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adaptive_limit_learns_a_slower_baseline_within_its_window() {
    let (a, b, router) = pair(
        "",
        "    adaptive_concurrency: { min: 2, max: 64, initial: 32 }\n",
    )
    .await;
    seed(&router, &b).await;
    let concurrency = |s: Value| s["regions"]["a"]["concurrency"].clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let light = load(&router, 1, &stop);
    // Fast answers first: the best latency is learned.
    eventually(Duration::from_secs(10), || async {
        concurrency(router.status().await)["min_rtt_ms"]
            .as_f64()
            .is_some_and(|m| m > 0.0 && m < 4.0)
    })
    .await;
    // The region's baseline moves to 20 ms for good (a slower dependency of
    // its own), at the same light load: at first that looks like a queue...
    a.set("slow", json!(20)).await;
    eventually(Duration::from_secs(10), || async {
        concurrency(router.status().await)["limit"].as_u64() < Some(16)
    })
    .await;
    let t = Instant::now();
    // ...and once the fast intervals have left the window, it is the new
    // best, and the limit grows back.
    eventually(Duration::from_secs(25), || async {
        let c = concurrency(router.status().await);
        c["limit"].as_u64() >= Some(32) && c["min_rtt_ms"].as_f64() >= Some(20.0)
    })
    .await;
    eprintln!(
        "baseline learned after {:?}: {}",
        t.elapsed(),
        concurrency(router.status().await)
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    futures_util::future::join_all(light).await;
}
