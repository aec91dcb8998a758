//! Traffic shift and protection: dials from the admin API, the synthetic
//! marker, ramps (completing, halting), rate limits, brownout ejection,
//! drain, interlocks, explain.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

const SYNTHETIC: &str = "synthetic: { header: X-Switchyard-Synthetic, token_env: SY_SYNTHETIC }\n";
const SYNTHETIC_TOKEN: &str = "synthetic-secret";

/// Sends `n` reads carrying the synthetic marker with `token`; counts regions.
async fn synthetic_split(router: &Router, n: usize, token: &str) -> HashMap<String, usize> {
    split_with(router, n, &[("X-Switchyard-Synthetic", token)]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_dial_changes_the_split_within_a_second() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = two_regions(&a, &b, EVEN_SPLIT, "", &dir);
    let router = Router::start_in(dir, &cfg);
    let (status, body) = router
        .admin(
            Method::PUT,
            "/admin/v1/regions/b/dial",
            Some(json!({"percent": 20})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dial"], 20);
    let counts = split(&router, 2000).await;
    let share_b = counts.get("b").copied().unwrap_or(0) as f64 / 2000.0;
    assert!(
        (share_b - 0.10).abs() < 0.03,
        "b got {share_b:.3}: {counts:?}"
    );
    assert!(router
        .metrics_text()
        .await
        .contains("switchyard_region_dial_percent{region=\"b\"} 20"));

    // Tenths of a percent are kept.
    let (status, body) = router
        .admin(
            Method::PUT,
            "/admin/v1/regions/b/dial",
            Some(json!({"percent": 12.5})),
        )
        .await;
    assert_eq!((status, body["dial"].clone()), (200, json!(12.5)));

    // Dial 0: no real request reaches b.
    let (status, _) = router
        .admin(
            Method::PUT,
            "/admin/v1/regions/b/dial",
            Some(json!({"percent": 0})),
        )
        .await;
    assert_eq!(status, 200);
    let counts = split(&router, 300).await;
    assert_eq!(counts.get("b"), None, "{counts:?}");

    // Bad bodies and names.
    for (body, want) in [
        (json!({"percent": 101}), "from 0 to 100"),
        (json!({"percent": 0.05}), "steps of 0.1"),
        (json!({"pct": 5}), "unknown field"),
        (json!("fifty"), "bad request body"),
    ] {
        let (status, answer) = router
            .admin(Method::PUT, "/admin/v1/regions/b/dial", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(want),
            "{answer}"
        );
    }
    let (status, _) = router
        .admin(
            Method::PUT,
            "/admin/v1/regions/zz/dial",
            Some(json!({"percent": 5})),
        )
        .await;
    assert_eq!(status, 404);
    let unauthorised = reqwest::Client::new()
        .put(format!(
            "http://{}/admin/v1/regions/b/dial",
            router.admin.expect("admin")
        ))
        .json(&json!({"percent": 50}))
        .send()
        .await
        .expect("request");
    assert_eq!(unauthorised.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn synthetic_marker_reaches_a_dark_region_only_with_the_token() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = format!(
        "{}{SYNTHETIC}",
        two_regions(&a, &b, EVEN_SPLIT, "    dial: 0\n", &dir)
    );
    let router = Router::start_with_env(dir, &cfg, &[("SY_SYNTHETIC", SYNTHETIC_TOKEN)]);
    let with = synthetic_split(&router, 100, SYNTHETIC_TOKEN).await;
    assert_eq!(with.get("b"), Some(&100), "{with:?}");
    let without = synthetic_split(&router, 100, "wrong-token").await;
    assert_eq!(without.get("b"), None, "{without:?}");

    // The region sees the marker only when it was authentic.
    let client = reqwest::Client::new();
    for (token, forwarded) in [(SYNTHETIC_TOKEN, true), ("wrong-token", false)] {
        let echo: Value = client
            .get(router.url("/_echo"))
            .header("X-Switchyard-Synthetic", token)
            .send()
            .await
            .expect("echo")
            .json()
            .await
            .expect("json");
        let seen = echo["headers"]
            .as_array()
            .is_some_and(|hs| hs.iter().any(|h| h[0] == "x-switchyard-synthetic"));
        assert_eq!(seen, forwarded, "{token}: {echo}");
    }
}

/// Sends reads (half of them synthetic) until `stop` is set.
fn background_traffic(
    router: &Router,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let url = router.url("/kv/x");
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut req = client.get(&url).header("X-Partition", format!("k{i}"));
            if i.is_multiple_of(2) {
                req = req.header("X-Switchyard-Synthetic", SYNTHETIC_TOKEN);
            }
            let _ = req.send().await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        i
    })
}

fn ramp_config(a: &TestRegion, b: &TestRegion, dir: &TempDir, steps: &str, hold: &str) -> String {
    format!(
        "{}{SYNTHETIC}ramps:\n  b-launch:\n    region: b\n    steps: {steps}\n    hold: {hold}\n    step_down_every: 300ms\n    gates: {{ max_error_rate: 0.05 }}\n",
        two_regions(a, b, EVEN_SPLIT, "    dial: 0\n", dir)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ramp_on_a_healthy_region_completes() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = ramp_config(&a, &b, &dir, "[synthetic, 10, 50, 100]", "700ms");
    let router = Router::start_with_env(dir, &cfg, &[("SY_SYNTHETIC", SYNTHETIC_TOKEN)]);
    let status = router.status().await;
    assert_eq!(status["ramps"]["b-launch"]["state"], "pending");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = background_traffic(&router, stop.clone());
    let (code, body) = router
        .admin(Method::POST, "/admin/v1/ramps/b-launch/start", None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["step"], "synthetic");
    let mut steps_seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = router.status().await;
        let step = s["ramps"]["b-launch"]["step"].clone();
        if steps_seen.last() != Some(&step) {
            steps_seen.push(step);
        }
        if s["ramps"]["b-launch"]["state"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "ramp did not complete: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(traffic.await.expect("traffic") > 100);
    assert_eq!(
        steps_seen,
        vec![json!("synthetic"), json!(10), json!(50), json!(100)]
    );
    let s = router.status().await;
    assert_eq!(s["regions"]["b"]["dial"], 100);
    // Dials set by a ramp in control are refused; after completion they are not.
    let (code, _) = router
        .admin(
            Method::PUT,
            "/admin/v1/regions/b/dial",
            Some(json!({"percent": 90})),
        )
        .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_region_halts_its_ramp_and_steps_down_gradually() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = ramp_config(&a, &b, &dir, "[synthetic, 40, 100]", "1s");
    let router = Router::start_with_env(dir, &cfg, &[("SY_SYNTHETIC", SYNTHETIC_TOKEN)]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = background_traffic(&router, stop.clone());
    let (code, _) = router
        .admin(Method::POST, "/admin/v1/ramps/b-launch/start", None)
        .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(10), || async {
        router.status().await["ramps"]["b-launch"]["step"] == 40
    })
    .await;
    let (code, body) = router
        .admin(
            Method::PUT,
            "/admin/v1/regions/b/dial",
            Some(json!({"percent": 100})),
        )
        .await;
    assert_eq!(
        (code, body["rule"].clone()),
        (409, json!("ramp_in_control")),
        "{body}"
    );
    // b starts failing its answers (its health check still passes).
    b.set("fail", json!(500)).await;
    let mut dials = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = router.status().await;
        let dial = s["regions"]["b"]["dial"].as_f64().unwrap_or(-1.0);
        if dials.last() != Some(&dial) {
            dials.push(dial);
        }
        if s["ramps"]["b-launch"]["state"] == "halted" && dial == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ramp did not halt and step down: {dials:?} {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = traffic.await;
    let s = router.status().await;
    let reason = s["ramps"]["b-launch"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("error_rate"), "{reason}");
    // Never one jump: each move down at most halves the dial, until 1% or less.
    assert!(dials.len() >= 4, "{dials:?}");
    for pair in dials.windows(2) {
        assert!(pair[1] < pair[0], "{dials:?}");
        assert!(
            pair[1] + 0.05 >= pair[0] / 2.0 || pair[0] <= 1.0,
            "{dials:?}"
        );
    }
    let m = router.metrics_text().await;
    assert!(
        m.contains("switchyard_ramp_halts_total{ramp=\"b-launch\",gate=\"error_rate\"} 1"),
        "{m}"
    );
    assert!(m.contains("switchyard_ramp_state{ramp=\"b-launch\",state=\"halted\"} 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ramp_state_survives_a_restart() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = ramp_config(&a, &b, &dir, "[synthetic, 10, 100]", "1m");
    let mut router = Router::start_with_env(dir, &cfg, &[("SY_SYNTHETIC", SYNTHETIC_TOKEN)]);
    let (code, _) = router
        .admin(Method::POST, "/admin/v1/ramps/b-launch/start", None)
        .await;
    assert_eq!(code, 200);
    let (code, _) = router
        .admin(Method::POST, "/admin/v1/ramps/b-launch/pause", None)
        .await;
    assert_eq!(code, 200);
    let (code, body) = router
        .admin(Method::POST, "/admin/v1/ramps/b-launch/pause", None)
        .await;
    assert_eq!((code, body["rule"].clone()), (409, json!("state")));
    let (code, _) = router
        .admin(Method::POST, "/admin/v1/ramps/b-launch/launch", None)
        .await;
    assert_eq!(code, 400);
    let (code, _) = router
        .admin(Method::POST, "/admin/v1/ramps/nope/start", None)
        .await;
    assert_eq!(code, 404);
    router.restart();
    let s = router.status().await;
    assert_eq!(s["ramps"]["b-launch"]["state"], "paused", "{s}");
    assert_eq!(s["ramps"]["b-launch"]["step"], "synthetic");
    let (code, body) = router
        .admin(Method::POST, "/admin/v1/ramps/b-launch/start", None)
        .await;
    assert_eq!((code, body["state"].clone()), (200, json!("running")));
    let (code, body) = router
        .admin(Method::POST, "/admin/v1/ramps/b-launch/abort", None)
        .await;
    assert_eq!((code, body["state"].clone()), (200, json!("aborted")));
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_rate_limit_reads_spill_and_then_get_429() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}    rate_limit: {{ rps: 1, burst: 5 }}\n{}    rate_limit: {{ rps: 1, burst: 5 }}\nrouting:\n  policy: weighted\n  weights: {{ a: 100, b: 1 }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
        region_yaml("b", b.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    // b may take bounded reads once it has reported its lag.
    eventually(Duration::from_secs(10), || async {
        router.status().await["regions"]["b"]["lag_known"] == true
    })
    .await;
    let client = reqwest::Client::new();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    let mut retry_after = None;
    for i in 0..20 {
        // One key, so the policy's first choice is the same every time.
        let resp = client
            .get(router.url("/kv/x"))
            .header("X-Partition", "one-key")
            .send()
            .await
            .expect("request");
        let region = Some(served_by(&resp)).filter(|r| !r.is_empty());
        if resp.status().as_u16() == 429 {
            retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
        }
        let key = region.unwrap_or_else(|| resp.status().as_u16().to_string());
        *by_status.entry(key).or_default() += 1;
        let _ = i;
    }
    // Five from each bucket, then 429s.
    assert!(
        by_status.get("a").copied().unwrap_or(0) >= 5,
        "{by_status:?}"
    );
    assert!(
        by_status.get("b").copied().unwrap_or(0) >= 4,
        "{by_status:?}"
    );
    assert!(
        by_status.get("429").copied().unwrap_or(0) >= 8,
        "{by_status:?}"
    );
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    let m = router.metrics_text().await;
    assert!(
        m.contains("switchyard_rate_limited_total{region=\"a\",outcome=\"spilled\"}"),
        "{m}"
    );
    assert!(
        m.contains("switchyard_rate_limited_total{region=\"b\",outcome=\"rejected\"}"),
        "{m}"
    );
    let s = router.status().await;
    assert_eq!(s["regions"]["a"]["rate"]["burst"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_region_is_ejected_and_readmitted_after_recovery() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = two_regions(
        &a,
        &b,
        // Unequal weights: between equals, least outstanding would already
        // steer reads away from b while its slow ones are in flight, leaving
        // the detector too few of b's answers to judge.
        "  policy: weighted\n  weights: { a: 40, b: 60 }\n  outlier: { base_ejection: 2s }\n",
        "",
        &dir,
    );
    let router = Router::start_in(dir, &cfg);
    split(&router, 50).await;
    b.set("slow", json!(500)).await;
    let slow_at = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let url = router.url("/kv/x");
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client
                    .get(&url)
                    .header("X-Partition", format!("t{t}-{i}"))
                    .send()
                    .await;
                i += 1;
            }
        }));
    }
    eventually(Duration::from_secs(5), || async {
        router.status().await["regions"]["b"]["ejected"] == true
    })
    .await;
    let took = slow_at.elapsed();
    let s = router.status().await;
    let reason = s["regions"]["b"]["ejection"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(reason.contains("slow, not dead"), "{s}");
    assert_eq!(
        s["regions"]["b"]["healthy"], true,
        "still passing health checks"
    );
    eprintln!("ejected {took:?} after turning slow: {reason}");
    // While ejected, reads go to a only.
    let counts = split(&router, 100).await;
    assert_eq!(counts.get("b"), None, "{counts:?}");
    // Recovered: readmitted when the ejection runs out, and serving again.
    b.set("slow", json!(0)).await;
    eventually(Duration::from_secs(10), || async {
        router.status().await["regions"]["b"]["ejected"] == false
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let counts = split(&router, 200).await;
    assert!(counts.get("b").copied().unwrap_or(0) > 50, "{counts:?}");
    assert!(router
        .metrics_text()
        .await
        .contains("switchyard_ejections_total{region=\"b\",reason=\"slow\"}"));
}

/// A client that hangs up before its answer (impatient clients, the end of
/// a load test) is no failure of the region's: only the region's own
/// failures count towards ejecting it.
#[tokio::test(flavor = "multi_thread")]
async fn clients_hanging_up_do_not_count_against_the_region() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = two_regions(
        &a,
        &b,
        "  policy: weighted\n  weights: { a: 0, b: 1 }\n  outlier: { consecutive_failures: 3, interval: 50ms }\n",
        "",
        &dir,
    );
    let router = Router::start_in(dir, &cfg);
    b.set("slow", json!(400)).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .expect("client");
    for i in 0..6 {
        let sent = impatient
            .get(router.url("/kv/x"))
            .header("X-Partition", format!("gone-{i}"))
            .send()
            .await;
        assert!(sent.is_err(), "the client gave up first: {sent:?}");
    }
    // Every hang-up has reached the router and ended its request, while the
    // detector looked every 50 ms: none of them was held against b.
    eventually(Duration::from_secs(5), || async {
        router.status().await["inflight"] == 0
    })
    .await;
    let s = router.status().await;
    assert_eq!(s["regions"]["b"]["ejections"], 0, "{s}");
    // Now b fails for real, three times: that, and only that, ejects it.
    b.set("slow", json!(0)).await;
    b.set("fail", json!(503)).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let _ = client
            .get(router.url("/kv/x"))
            .header("X-Partition", format!("fails-{i}"))
            .send()
            .await;
    }
    eventually(Duration::from_secs(5), || async {
        router.status().await["regions"]["b"]["ejected"] == true
    })
    .await;
    let s = router.status().await;
    assert_eq!(
        s["regions"]["b"]["ejection"]["reason"], "3 failures in a row",
        "{s}"
    );
    assert_eq!(s["regions"]["b"]["ejections"], 1, "{s}");
    assert!(!router
        .metrics_text()
        .await
        .contains("switchyard_upstream_errors_total{region=\"b\",kind=\"proxy\"}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_stops_new_requests_and_lets_in_flight_ones_finish() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = two_regions(
        &a,
        &b,
        "  policy: weighted\n  weights: { a: 0, b: 1 }\n",
        "",
        &dir,
    );
    let mut router = Router::start_in(dir, &cfg);
    b.set("slow", json!(1000)).await;
    let received = b.requests();
    let url = router.url("/kv/x");
    let in_flight = tokio::spawn(async move {
        let (status, region) = get_region(&reqwest::Client::new(), &url, Some("slow-one")).await;
        (status, region)
    });
    // In flight at b, not just at the edge: the drain counts b's requests.
    eventually(Duration::from_secs(5), || async { b.requests() > received }).await;
    let (code, body) = router
        .admin(Method::POST, "/admin/v1/regions/b/drain", None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["inflight"], 1, "{body}");
    b.set("slow", json!(0)).await;
    let counts = split(&router, 100).await;
    assert_eq!(counts.get("a"), Some(&100), "{counts:?}");
    let (status, served_by) = in_flight.await.expect("in flight");
    assert!(status < 500, "{status}");
    assert_eq!(served_by, "b");
    // A drain outlives a restart; undrain brings the region back.
    router.restart();
    assert_eq!(router.status().await["regions"]["b"]["draining"], true);
    let (code, _) = router
        .admin(Method::POST, "/admin/v1/regions/b/undrain", None)
        .await;
    assert_eq!(code, 200);
    let counts = split(&router, 50).await;
    assert_eq!(counts.get("b"), Some(&50), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn interlocks_refuse_changes_naming_the_rule() {
    let (a, b, c) = (region("a").await, region("b").await, region("c").await);
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}{}{}routing:\n  policy: weighted\nsafety: {{ min_serving_regions: 2, max_dial_step: 30 }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
        region_yaml("b", b.addr, ""),
        region_yaml("c", c.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    let dial = |region: &'static str, percent: f64| {
        let router = &router;
        async move {
            router
                .admin(
                    Method::PUT,
                    &format!("/admin/v1/regions/{region}/dial"),
                    Some(json!({"percent": percent})),
                )
                .await
        }
    };
    let (code, body) = dial("b", 50.0).await;
    assert_eq!(
        (code, body["rule"].clone()),
        (409, json!("max_dial_step")),
        "{body}"
    );
    assert_eq!(dial("b", 80.0).await.0, 200);
    // 100 → 80 → 60 moves 40 within the interval.
    let (code, body) = dial("b", 60.0).await;
    assert_eq!(
        (code, body["rule"].clone()),
        (409, json!("max_dial_step")),
        "{body}"
    );
    let (code, body) = router
        .admin(Method::POST, "/admin/v1/regions/a/drain", None)
        .await;
    assert_eq!(
        (code, body["rule"].clone()),
        (409, json!("single_owner")),
        "{body}"
    );
    assert!(body["error"]
        .as_str()
        .unwrap_or("")
        .contains("owns partition(s) default"));
    assert_eq!(
        router
            .admin(Method::POST, "/admin/v1/regions/b/drain", None)
            .await
            .0,
        200
    );
    let (code, body) = router
        .admin(Method::POST, "/admin/v1/regions/c/drain", None)
        .await;
    assert_eq!(
        (code, body["rule"].clone()),
        (409, json!("min_serving_regions")),
        "{body}"
    );
    // Nothing refused was applied.
    let s = router.status().await;
    assert_eq!(s["regions"]["a"]["draining"], false);
    assert_eq!(s["regions"]["c"]["draining"], false);
    assert_eq!(s["regions"]["b"]["dial"], 80);
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_names_the_rule_that_drops_each_region() {
    let (a, b, c) = (region("a").await, region("b").await, region("c").await);
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}    compliance: {{ data_residency: US }}\n{}    compliance: {{ data_residency: EU }}\n    dial: 0\n{}    compliance: {{ data_residency: EU }}\n    rate_limit: {{ rps: 100, burst: 10 }}\nrouting:\n  policy: weighted\n  geo: {{ networks: {{ \"127.0.0.2/32\": DE }} }}\n  residency: {{ DE: EU }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
        region_yaml("b", b.addr, ""),
        region_yaml("c", c.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    let (code, e) = router
        .admin(
            Method::POST,
            "/admin/v1/explain",
            Some(json!({"method": "GET", "path": "/kv/x", "headers": {"X-Partition": "p1"}, "client": "127.0.0.2"})),
        )
        .await;
    assert_eq!(code, 200, "{e}");
    let rule = |name: &str| -> Value {
        e["candidates"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["region"] == name))
            .map_or(Value::Null, |c| c["rule"].clone())
    };
    assert_eq!(rule("a"), "outside the client's residency zone", "{e}");
    assert_eq!(rule("b"), "dial", "{e}");
    assert_eq!(rule("c"), "keep", "{e}");
    assert_eq!(e["pick"], "c");
    assert_eq!(e["request"]["residency_zone"], "EU");
    let c_entry = e["candidates"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["region"] == "c"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(c_entry["rate_limit"]["burst"], 10, "{e}");
    assert!(c_entry["score"]["rendezvous_key"].is_number(), "{e}");
    // A write from there: only the owner (a) could take it, and residency forbids it.
    let (_, w) = router
        .admin(
            Method::POST,
            "/admin/v1/explain",
            Some(json!({"method": "PUT", "path": "/kv/x", "client": "127.0.0.2"})),
        )
        .await;
    assert_eq!(w["outcome"]["status"], 503, "{w}");
    for (body, want) in [
        (json!({"path": "kv"}), "path must start with /"),
        (
            json!({"path": "/", "client": "nowhere"}),
            "not an IP address",
        ),
        (json!({"path": "/", "method": "G ET"}), "not an HTTP method"),
        (json!({"method": "GET"}), "missing field `path`"),
    ] {
        let (code, answer) = router
            .admin(Method::POST, "/admin/v1/explain", Some(body.clone()))
            .await;
        assert_eq!(code, 400, "{body}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(want),
            "{body}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_reads_mirror_real_reads_during_the_synthetic_stage() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = format!(
        "{}{SYNTHETIC}ramps:\n  b-launch:\n    region: b\n    steps: [synthetic, 100]\n    hold: 1m\n    shadow: {{ percent: 100 }}\n",
        two_regions(&a, &b, EVEN_SPLIT, "    dial: 0\n", &dir)
    );
    let router = Router::start_with_env(dir, &cfg, &[("SY_SYNTHETIC", SYNTHETIC_TOKEN)]);
    let (code, _) = router
        .admin(Method::POST, "/admin/v1/ramps/b-launch/start", None)
        .await;
    assert_eq!(code, 200);
    // Shadows start with the controller's next tick.
    eventually(Duration::from_secs(5), || async {
        router.status().await["ramps"]["b-launch"]["shadow"]["sent"] == 0
    })
    .await;
    b.set("slow", json!(1500)).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    for i in 0..20 {
        let (status, region) =
            get_region(&client, &router.url("/kv/absent"), Some(&format!("k{i}"))).await;
        assert_eq!((status, region.as_str()), (404, "a"));
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the client waited for shadows: {:?}",
        started.elapsed()
    );
    b.set("slow", json!(0)).await;
    // a holds a key b lacks: the status classes differ.
    client
        .put(format!("{}/kv/only-a", a.url()))
        .header("X-Fencing-Token", "1")
        .body("v")
        .send()
        .await
        .expect("direct write");
    let (status, _) = get_region(&client, &router.url("/kv/only-a"), None).await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(5), || async {
        let sh = router.status().await["ramps"]["b-launch"]["shadow"].clone();
        sh["sent"] == 21 && sh["matched"] == 20 && sh["mismatched"] == 1
    })
    .await;
    // Comparing bodies too: the same status with different bodies (each
    // region names itself in its answers) is a mismatch.
    let resp = router
        .reload_with(&cfg.replace(
            "shadow: { percent: 100 }",
            "shadow: { percent: 100, compare_body: true }",
        ))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    // The new settings get a shadow target of their own, with fresh counters.
    eventually(Duration::from_secs(5), || async {
        router.status().await["ramps"]["b-launch"]["shadow"]["sent"] == 0
    })
    .await;
    let (status, _) = get_region(&client, &router.url("/kv/absent"), None).await;
    assert_eq!(status, 404);
    eventually(Duration::from_secs(5), || async {
        let sh = router.status().await["ramps"]["b-launch"]["shadow"].clone();
        sh["sent"] == 1 && sh["mismatched"] == 1
    })
    .await;
    let m = router.metrics_text().await;
    for result in ["match", "status_mismatch", "body_mismatch"] {
        assert!(
            m.contains(&format!(
                "switchyard_shadow_reads_total{{region=\"b\",result=\"{result}\"}}"
            )),
            "{result}: {m}"
        );
    }
}

/// Shadow copies follow the read's own rules and carry no credentials: a
/// client whose residency zone the ramping region is outside is never
/// mirrored to it, and `Authorization`, `Cookie` and the configured headers
/// never reach it.
#[tokio::test(flavor = "multi_thread")]
async fn shadow_reads_keep_residency_and_credentials() {
    let (a, b) = (region("a").await, region("b").await);
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}{}routing:\n  policy: weighted\n  weights: {{ a: 50, b: 50 }}\n  geo: {{ networks: {{ \"127.0.0.2/32\": US }} }}\n  residency: {{ US: US }}\n{SYNTHETIC}ramps:\n  b-launch:\n    region: b\n    steps: [synthetic, 100]\n    hold: 1m\n    shadow: {{ percent: 100, strip_headers: [X-Api-Key] }}\n",
        header(&dir),
        region_yaml("a", a.addr, "    compliance: { data_residency: US }\n"),
        region_yaml("b", b.addr, "    compliance: { data_residency: EU }\n    dial: 0\n"),
    );
    let router = Router::start_with_env(dir, &cfg, &[("SY_SYNTHETIC", SYNTHETIC_TOKEN)]);
    let (code, _) = router
        .admin(Method::POST, "/admin/v1/ramps/b-launch/start", None)
        .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(5), || async {
        router.status().await["ramps"]["b-launch"]["shadow"]["sent"] == 0
    })
    .await;
    // A US client: its reads stay in the US, shadows included.
    let us = client_from("127.0.0.2");
    for i in 0..10 {
        let (status, region) =
            get_region(&us, &router.url("/kv/absent"), Some(&format!("k{i}"))).await;
        assert_eq!((status, region.as_str()), (404, "a"));
    }
    // A client with no zone is mirrored, without its credentials.
    let anywhere = client_from("127.0.0.3");
    let resp = anywhere
        .get(router.url("/_echo"))
        .header("Authorization", "Bearer secret")
        .header("Cookie", "session=secret")
        .header("X-Api-Key", "secret")
        .header("X-Kept", "yes")
        .send()
        .await
        .expect("read");
    assert_eq!(served_by(&resp), "a");
    // `sent` counts a shadow as it leaves the router: wait for b to have it.
    eventually(Duration::from_secs(5), || async { b.requests() >= 1 }).await;
    assert_eq!(
        router.status().await["ramps"]["b-launch"]["shadow"]["sent"],
        1
    );
    assert_eq!(b.requests(), 1, "only the client with no zone was mirrored");
    let seen = b
        .region
        .last_echo_headers
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    let names: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains(&"x-kept"), "{names:?}");
    assert!(names.contains(&"x-switchyard-shadow"), "{names:?}");
    for secret in ["authorization", "cookie", "x-api-key"] {
        assert!(
            !names.contains(&secret),
            "{secret} reached the shadow: {names:?}"
        );
    }
}
