//! The monitoring that ships in `docs/monitoring/`: the alert rules and
//! their tests pass `promtool`, every dashboard query parses, every metric
//! they name is one the router exports, and the router's own exposition
//! passes `promtool check metrics`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring")
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (`scripts/setup --test` installs Debian's prometheus)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("promtool runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `switchyard_…` names in `text`, without the `_bucket`/`_sum`/`_count`
/// a histogram's series add.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("switchyard_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        names.insert(base.to_string());
    }
    names
}

/// Every metric name the router's source registers.
fn exported() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../router/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("router source").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                for (i, _) in text.match_indices("\"switchyard_") {
                    let name: String = text[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    names.insert(name);
                }
            }
        }
    }
    names
}

#[test]
fn the_alert_rules_pass_promtool_and_each_alert_has_a_test() {
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yml"], None);
    assert!(ok, "{out}");
    let rules = std::fs::read_to_string(monitoring().join("alerts.yml")).expect("rules");
    let tests = std::fs::read_to_string(monitoring().join("alerts_test.yml")).expect("tests");
    for line in rules.lines() {
        if let Some(alert) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {alert}")),
                "{alert} has no test"
            );
        }
    }
}

#[test]
fn the_dashboard_queries_parse_and_name_only_exported_metrics() {
    let text = std::fs::read_to_string(monitoring().join("dashboard.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    // promtool parses PromQL in rule files: each query as a recording rule,
    // with the dashboard's variable given a value.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e.replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::Value::String(e)
        ));
    }
    let dir = TempDir::new();
    let file = dir.write("dashboard_rules.yml", &rules);
    let (ok, out) = promtool(&["check", "rules", file.to_str().expect("path")], None);
    assert!(ok, "{out}");
    let exported = exported();
    let rules = std::fs::read_to_string(monitoring().join("alerts.yml")).expect("rules");
    for name in metric_names(&text).union(&metric_names(&rules)) {
        assert!(
            exported.contains(name),
            "{name} is not a metric the router exports"
        );
    }
}

#[tokio::test]
async fn the_routers_metrics_pass_promtool() {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = one_region(&dir, "", &a);
    let router = Router::start_in(dir, &cfg);
    router.wait_healthy("a", true).await;
    for _ in 0..5 {
        let _ = reqwest::get(router.url("/kv/m")).await.expect("request");
    }
    let text = router.metrics_text().await;
    assert!(text.contains("switchyard_requests_total"), "{text}");
    assert!(text.contains("switchyard_oplog_writable 1"), "{text}");
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "{out}\n{text}");
}
