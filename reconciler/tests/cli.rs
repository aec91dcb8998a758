//! The reconciler's command line: bad usage and bad input exit 2 with a message.

use std::process::Command;

fn reconcile(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-reconcile"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A folder of its own for a test, removed when the test ends.
fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sy-reconcile-")
        .tempdir()
        .expect("dir")
}

#[test]
fn missing_arguments_exit_2() {
    let (code, err) = reconcile(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--config"), "{err}");
    let dir = temp();
    let cfg = dir.path().join("ok.yaml");
    std::fs::write(&cfg, "listen: { http: 127.0.0.1:1 }\nregions:\n  a: { type: full, endpoints: [\"127.0.0.1:2\"], services: [api] }\nrouting: { policy: weighted }\n").expect("write");
    let c = cfg.to_str().expect("utf8");
    let (code, err) = reconcile(&["--config", c]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--oplog DIR"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let e = empty.to_str().expect("utf8");
    let (code, err) = reconcile(&["--oplog", e, "--config", c]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no op log segments"), "{err}");
    let (code, err) = reconcile(&["--oplog", e, "--config", c, "--rate", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--rate"), "{err}");
    let (code, err) = reconcile(&["--nats", "nats://127.0.0.1:1", "--config", c]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--stream"), "{err}");
}

#[test]
fn bad_input_exits_2_with_the_reason() {
    let dir = temp();
    let cfg = dir.path().join("sy.yaml");
    std::fs::write(&cfg, "listen: { http: 127.0.0.1:1 }\nregions:\n  a: { type: fulll, endpoints: [\"127.0.0.1:2\"], services: [api] }\nrouting: { policy: weighted }\n").expect("write");
    let (code, err) = reconcile(&[
        "--oplog",
        "/nonexistent",
        "--config",
        cfg.to_str().expect("utf8"),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--oplog /nonexistent: not a folder"), "{err}");
    let d = dir.path().to_str().expect("utf8");
    let (code, err) = reconcile(&["--oplog", d, "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("sy.yaml:3:14: `regions.a.type`"), "{err}");
    let (code, err) = reconcile(&[
        "--oplog",
        d,
        "--config",
        cfg.to_str().expect("utf8"),
        "--report",
        "out.pdf",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains(".json, .md or .html"), "{err}");
}
