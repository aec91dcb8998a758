//! The op log's fleet sink against a real NATS server (the Debian
//! `nats-server` package, JetStream on, started on loopback per test): two
//! routers publish, the reconciler reads the stream, duplicates are dropped,
//! and records written while NATS is away are forwarded when it returns.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_region::Role;

use crate::fleet::free_port;
use crate::reconcile::reconcile_binary;
use crate::support::*;

struct Nats {
    child: Child,
    url: String,
    port: u16,
    _dir: TempDir,
}

impl Nats {
    fn start(port: u16) -> Nats {
        let dir = TempDir::new();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.0.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)");
        wait_listening(
            ([127, 0, 0, 1], port).into(),
            Duration::from_secs(10),
            "nats-server",
        );
        Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            _dir: dir,
        }
    }

    /// Messages in the stream now.
    async fn messages(&self, stream: &str) -> u64 {
        let Ok(client) = async_nats::connect(self.url.as_str()).await else {
            return 0;
        };
        let js = async_nats::jetstream::new(client);
        match js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn put(router: &Router, i: usize) {
    put_nth(router, i).await;
}

fn reconcile_stream(
    nats: &Nats,
    config: &std::path::Path,
    report: &std::path::Path,
) -> (i32, Value) {
    let out = Command::new(reconcile_binary())
        .args(["--nats", &nats.url, "--stream", "SY_TEST"])
        .arg("--config")
        .arg(config)
        .arg("--report")
        .arg(report)
        .output()
        .expect("reconciler runs");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(report).expect("report");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&text).expect("JSON"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_routers_publish_and_the_reconciler_reads_the_stream_once() {
    let port = free_port();
    let a = region("a").await;
    let b = region_with("b", Role::Replica, Some(a.url())).await;
    let config = |dir: &TempDir| {
        format!(
            "{}regions:\n{}{}routing:\n  policy: weighted\nconsistency: {{ owners: {{ default: a }} }}\noplog: {{ nats: {{ url: \"nats://127.0.0.1:{port}\", stream: SY_TEST }} }}\n",
            header(dir),
            region_yaml("a", a.addr, ""),
            region_yaml("b", b.addr, ""),
        )
    };
    let (d1, d2) = (TempDir::new(), TempDir::new());
    let (c1, c2) = (config(&d1), config(&d2));
    let one = Router::start_in(d1, &c1);
    let mut two = Router::start_in(d2, &c2);

    // NATS is not there yet: writes go on, their records wait in the local logs.
    for i in 0..10 {
        put(&one, i).await;
    }
    eventually(Duration::from_secs(5), || async {
        one.status().await["regions"]["b"]["applied_position"] == 10
    })
    .await;
    b.set("replicate_from", Value::Null).await;
    for i in 10..20 {
        put(&two, i).await;
    }
    // The backlog is in status while NATS is away: 20 records, on disk.
    let backlog = one.status().await["oplog"]["nats"].clone();
    assert_eq!(backlog["backlog_records"], 20, "{backlog}");
    assert!(backlog["backlog_bytes"].as_u64() > Some(28), "{backlog}");
    let nats = tokio::task::block_in_place(|| Nats::start(port));
    // 20 intents, 20 outcomes, from two routers.
    let t = Instant::now();
    eventually(Duration::from_secs(10), || async {
        nats.messages("SY_TEST").await == 40
    })
    .await;
    eventually(Duration::from_secs(5), || async {
        let n = one.status().await["oplog"]["nats"].clone();
        n["backlog_records"] == 0 && n["backlog_bytes"] == 0
    })
    .await;
    eprintln!("forwarded once NATS was up, within {:?}", t.elapsed());

    // Router one's dry run counts every edge's writes from the stream: its
    // own ten are on b, router two's ten (positions 11 to 20) are not.
    let (code, preview) = one
        .admin(
            reqwest::Method::POST,
            "/admin/v1/promote",
            Some(json!({"partition": "default", "to": "b", "dry_run": true})),
        )
        .await;
    assert_eq!(code, 200, "{preview}");
    assert!(
        preview["scope"]
            .as_str()
            .is_some_and(|s| s.starts_with("every edge")),
        "{preview}"
    );
    assert_eq!(preview["partitions"][0]["writes_at_risk"], 10, "{preview}");
    assert_eq!(preview["problems"], json!([]), "{preview}");

    a.set("health", json!(503)).await;
    b.set("role", json!("primary")).await;
    let (code, body) = promote(
        &one,
        json!({"partition": "default", "to": "b", "force": true}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    eventually(Duration::from_secs(5), || async {
        nats.messages("SY_TEST").await == 41
    })
    .await;

    // Router two forgets what it forwarded and sends it all again: the
    // server drops every duplicate by its message id.
    let _ = std::fs::remove_file(two.dir.0.join("state/oplog/nats.cursor"));
    tokio::task::block_in_place(|| two.restart());
    eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(two.dir.0.join("state/oplog/nats.cursor"))
            .is_ok_and(|s| s.trim() == "20")
    })
    .await;
    assert_eq!(nats.messages("SY_TEST").await, 41);

    let (code, report) = reconcile_stream(&nats, &one.config, &one.dir.0.join("r.json"));
    assert_eq!(code, 1, "ten writes to replay");
    let s = &report["summary"];
    assert_eq!(
        fields(
            s,
            &["ops_scanned", "in_window", "already_present", "to_replay"]
        ),
        [json!(20), json!(20), json!(10), json!(10)],
        "{s}"
    );
    assert_eq!(report["duplicates_dropped"], 0);
    let edges: std::collections::BTreeSet<&str> = report["ops"]
        .as_array()
        .map(|ops| ops.iter().filter_map(|o| o["edge_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(edges.len(), 2, "both routers' writes: {edges:?}");
    let _ = nats.port;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_past_its_bound_is_cut_and_the_reconciler_reports_the_gap() {
    let port = free_port();
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}routing:\n  policy: weighted\nconsistency: {{ owners: {{ default: a }} }}\noplog: {{ segment_bytes: 4096, max_backlog_bytes: 8192, nats: {{ url: \"nats://127.0.0.1:{port}\", stream: SY_TEST }} }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
    );
    let router = Router::start_in(dir, &cfg);
    // NATS is away: ~40 KiB of records, five times the bound.
    for i in 0..150 {
        put(&router, i).await;
    }
    let backlog = router.status().await["oplog"]["nats"].clone();
    let bytes = backlog["backlog_bytes"].as_u64().expect("bytes");
    // The sealed part is bounded; the open segment comes on top.
    assert!(bytes <= 8192 + 4096 + 4096, "{backlog}");
    let metrics = router.metrics_text().await;
    assert!(
        metrics.contains("switchyard_oplog_gap_records_total"),
        "the gap is counted"
    );

    let nats = tokio::task::block_in_place(|| Nats::start(port));
    eventually(Duration::from_secs(10), || async {
        router.status().await["oplog"]["nats"]["backlog_records"] == 0
    })
    .await;
    let (code, report) = reconcile_stream(&nats, &router.config, &router.dir.0.join("r.json"));
    assert_eq!(code, 1, "lost records leave the run unresolved");
    let lost = report["summary"]["lost_records"]
        .as_u64()
        .expect("lost_records");
    assert!(lost > 0, "{}", report["summary"]);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("were deleted before NATS had them"),
        "{problems}"
    );
    // Every record is either in the stream or in a gap: none vanished unsaid.
    let in_stream = nats.messages("SY_TEST").await;
    let written = router.status().await["oplog"]["nats"]["forwarded_before_seq"]
        .as_u64()
        .expect("forwarded_before_seq");
    assert!(
        written > 300,
        "150 intents, 150 outcomes and gap records: {written}"
    );
    assert_eq!(
        in_stream + lost,
        written,
        "{in_stream} in the stream, {lost} lost: {problems}"
    );
}
