//! The access log and trace propagation, black-box: JSON lines with the
//! request's decision, the trace id the region saw, reopened on SIGUSR1.

use std::time::Duration;

use crate::support::*;

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn wait_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(10), || async { lines(path).len() >= n }).await;
    lines(path)
}

/// The `traceparent` the region saw last.
fn region_traceparent(r: &TestRegion) -> String {
    r.last_header("traceparent").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_is_a_json_line_with_its_decision_and_trace() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&dir, "access_log: { path: access.log, format: json }\n", &a);
    let router = Router::start_in(dir, &cfg);
    router.wait_healthy("a", true).await;
    let log = router.dir.0.join("access.log");
    let client = reqwest::Client::new();

    // A read continuing the client's trace.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = client
        .get(router.url("/_echo/read?secret=1"))
        .header("traceparent", parent)
        .header("tracestate", "vendor=opaque")
        .header("X-Freshness", "relaxed")
        .send()
        .await
        .expect("read");
    assert_eq!(resp.status(), 200);
    let seen = region_traceparent(&a);
    assert!(
        seen.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{seen}"
    );
    assert!(
        !seen.contains("00f067aa0ba902b7"),
        "the region's parent is the router's span: {seen}"
    );
    assert!(seen.ends_with("-01"));

    // A write with no trace: a new one is started.
    let resp = client
        .put(router.url("/kv/k1"))
        .header("X-Partition", "p1")
        .header("Idempotency-Key", "key-1")
        .body("v1")
        .send()
        .await
        .expect("write");
    assert!(resp.status().is_success(), "{}", resp.status());
    // A request the router refuses itself.
    let resp = client
        .get(router.url("/kv/x"))
        .header("X-Freshness", "no-such-class")
        .send()
        .await
        .expect("refused");
    assert_eq!(resp.status(), 400);

    // Each line is written when its request ends; requests on different
    // connections (the read's body was not read, so the write took a new
    // one) may end in either order, so lines are found by what they are.
    let got = wait_lines(&log, 3).await;
    let line = |what: &str, is: &dyn Fn(&serde_json::Value) -> bool| {
        got.iter()
            .find(|l| is(l))
            .unwrap_or_else(|| panic!("no {what} line in {got:?}"))
            .clone()
    };
    let read = &line("read", &|l| l["path"] == "/_echo/read");
    assert_eq!(read["method"], "GET");
    assert_eq!(read["path"], "/_echo/read", "no query unless include_query");
    assert_eq!(read["status"], 200);
    assert_eq!(read["region"], "a");
    assert_eq!(read["endpoint"], a.addr.to_string());
    assert_eq!(read["class"], "read");
    assert_eq!(read["freshness_ms"], 30_000);
    assert_eq!(read["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(read["decision"]["rule"], "weighted");
    assert_eq!(read["decision"]["retries"], 0);
    assert_eq!(read["client"], "127.0.0.1");
    assert!(read["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(read["bytes_out"].as_u64().is_some_and(|n| n > 0));
    assert!(read["duration_ms"].as_f64().is_some());
    assert!(read["upstream_ms"].as_f64().is_some());
    assert!(read["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    let write = &line("write", &|l| l["method"] == "PUT");
    assert_eq!(write["class"], "write");
    assert_eq!(write["partition"], "p1");
    assert_eq!(write["epoch"], 1);
    assert_eq!(write["bytes_in"], 2);
    assert_eq!(write["decision"]["rule"], "owner");
    assert_eq!(write["idempotency"], "client_key");
    let write_trace = write["trace_id"].as_str().expect("a new trace");
    assert_eq!(write_trace.len(), 32);
    assert!(region_traceparent(&a).contains(write_trace));

    let refused = &line("refused", &|l| l["status"] == 400);
    assert_eq!(refused["decision"]["rule"], "refused");
    assert!(
        refused["decision"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no-such-class")),
        "{refused}"
    );
    assert!(refused["region"].is_null());

    // logrotate: move the file, SIGUSR1, and the next line starts a new one.
    std::fs::rename(&log, router.dir.0.join("access.log.1")).expect("rotate");
    router.signal(Signal::USR1);
    eventually(Duration::from_secs(10), || async {
        let _ = reqwest::get(router.url("/_echo/after")).await;
        lines(&log).iter().any(|l| l["path"] == "/_echo/after")
    })
    .await;
    // Lines written before the writer reopened stay in the moved file.
    let rotated = lines(&router.dir.0.join("access.log.1"));
    assert!(rotated.len() >= 3 && rotated.iter().any(|l| l["status"] == 400));
}

#[test]
fn an_access_log_in_a_missing_folder_is_a_config_error() {
    let dir = TempDir::new();
    let path = dir.write(
        "bad.yaml",
        &format!(
            "{}access_log: {{ path: nowhere/access.log }}\nregions:\n{}routing:\n  policy: weighted\n",
            header(&dir),
            region_yaml("a", "127.0.0.1:9", "")
        ),
    );
    let (code, out) = run_switchyard(&["check"], &path, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("bad.yaml:5:") && out.contains("does not exist"),
        "{out}"
    );
}

#[test]
fn process_logs_are_json_lines_when_asked() {
    let dir = TempDir::new();
    let path = dir.write(
        "junk.yaml",
        &format!(
            "{}regions:\n{}    tls: {{ ca: junk.pem }}\nrouting:\n  policy: weighted\n",
            header(&dir),
            region_yaml("a", "https://127.0.0.1:9", "")
        ),
    );
    dir.write("junk.pem", "not a certificate\n");
    let (code, out) = run_switchyard(
        &["run"],
        &path,
        &[
            ("SWITCHYARD_LOG_FORMAT", "json"),
            ("SWITCHYARD_LOG", "info"),
        ],
    );
    assert_eq!(code, Some(2), "{out}");
    let logged: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        logged
            .iter()
            .any(|l| l["level"] == "INFO" && l["message"].is_string()),
        "{out}"
    );
}
