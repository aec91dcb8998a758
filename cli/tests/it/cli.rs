use std::process::Command;

use crate::support::{binary, TempDir};

#[test]
fn check_accepts_the_design_example() {
    let dir = TempDir::new();
    let path = dir.write("switchyard.yaml", switchyard_config::EXAMPLE);
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_reports_every_error_with_file_line_col() {
    let dir = TempDir::new();
    let text = switchyard_config::EXAMPLE
        .replace(
            "type: full                     # full",
            "type: ful                      # full",
        )
        .replace(
            "weights: { us-east-1: 80, eu-west-1: 20 }",
            "weights: { us-east-1: 80, eu-west-2: 20 }",
        )
        .replace("interval: 1s", "interval: soon");
    let path = dir.write("bad.yaml", &text);
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    assert!(err.contains(&format!("{p}:9:11: `regions.us-east-1.type` must be one of full | lightweight | read-only, found \"ful\"")), "{err}");
    assert!(
        err.contains(&format!(
            "{p}:14:40: `regions.us-east-1.health.interval` must be a duration"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:26:29: `routing.weights.eu-west-2` names region \"eu-west-2\""
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn run_refuses_an_invalid_config_with_exit_2() {
    let dir = TempDir::new();
    let path = dir.write(
        "bad.yaml",
        "listen: { http: 127.0.0.1:0 }\nregions: {}\nrouting: { policy: weighted }\nbogus: 1\n",
    );
    let out = Command::new(binary())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:4:1: unknown key `bogus`"), "{err}");
    assert!(
        err.contains("`regions` must declare at least one region"),
        "{err}"
    );
}

#[test]
fn missing_file_and_bad_usage_exit_2() {
    let out = Command::new(binary())
        .args(["check", "--config", "/nonexistent/sy.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/sy.yaml: cannot read config")
    );
    let out = Command::new(binary())
        .args(["frobnicate"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn demo_runs_regions_router_and_client_mix_and_a_ramp() {
    let out = Command::new(binary())
        .args(["demo", "--duration", "11s", "--rps", "60"])
        .env("SWITCHYARD_LOG", "error")
        .output()
        .expect("demo runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("t=  1s"), "progress lines: {text}");
    assert!(text.contains("summary:"), "{text}");
    for line in [
        "us-east-1        write",
        "us-east-1        read",
        "eu-west-1        read",
        "ap-northeast-1   read",
    ] {
        assert!(text.contains(line), "missing {line:?} in {text}");
    }
    assert!(!text.contains(" 503:") && !text.contains(" 502:"), "{text}");
    // The ramp: synthetic, then real traffic, then a gate halts it as the region fails.
    for event in [
        "ramp ap-launch: started at step synthetic",
        "ramp ap-launch: advanced to step 10%",
        "ramp ap-launch: advanced to step 50%",
        "ap-northeast-1 starts answering 500",
        "ramp ap-launch: halted: gate error_rate breached",
        "ramp ap-launch: stepped the dial down to 25%",
        // Consistency: classes, read-your-writes, a promotion.
        "X-Freshness: strong (owner only)                     → 200 from us-east-1",
        "X-Freshness: bounded (replica within 2s)             → 200 from eu-west-1",
        "with the read-your-writes token   → 200 from us-east-1",
        // The finale: the owner dies under write load, the replica takes
        // over, the reconciler replays what the lag window lost.
        "us-east-1 is down (after 100 writes)",
        "promoted partition default from us-east-1 (epoch 1) to eu-west-1 (epoch 2)",
        "PUT order-95 again after the failover → 201 from eu-west-1",
        "1 conflict(s), 0 failed; 1 unresolved",
        "conflict: PUT /kv/order-95",
        "report: ",
    ] {
        assert!(text.contains(event), "missing {event:?} in {text}");
    }
    let replayed: u32 = text
        .split(" replayed,")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        replayed > 0,
        "the lag window lost writes that were replayed: {text}"
    );
    let html = std::env::temp_dir().join("switchyard-demo-reconcile.html");
    let page = std::fs::read_to_string(&html).expect("HTML report");
    assert!(
        page.contains("<svg") && page.contains("order-95"),
        "{}",
        html.display()
    );
}
