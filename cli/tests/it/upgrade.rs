//! Zero-downtime upgrade: `run --upgrade` takes the listeners from the
//! running router, which drains and exits; `switchyard upgrade` does it from
//! a command that returns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_oplog::Record;

use crate::support::*;

/// One full region `a` owning every partition.
async fn one_owner() -> (TestRegion, TempDir, String) {
    let a = region("a").await;
    let dir = TempDir::new();
    let cfg = format!(
        "{}regions:\n{}routing:\n  policy: weighted\nconsistency:\n  owners: {{ default: a }}\n",
        header(&dir),
        region_yaml("a", a.addr, ""),
    );
    (a, dir, cfg)
}

/// What a steady mix of reads and writes on kept-alive connections saw.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
    /// The paths of the writes answered 2xx.
    written: std::sync::Mutex<Vec<String>>,
}

/// Runs `clients` loops until `stop`: a read then a write, each its own key.
fn start_load(
    router: &Router,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let base = router.url("");
    let tasks = (0..clients)
        .map(|c| {
            let (load, stop, base) = (load.clone(), stop.clone(), base.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let path = format!("/kv/c{c}-{n}");
                    let read = client.get(format!("{base}/kv/c{c}-read")).send().await;
                    let write = client
                        .put(format!("{base}{path}"))
                        .body(format!("v{n}"))
                        .send()
                        .await;
                    for (what, r) in [("read", read), ("write", write)] {
                        match r {
                            Ok(resp) if resp.status().is_server_error() => {
                                load.failed.fetch_add(1, Ordering::Relaxed);
                                load.failures
                                    .lock()
                                    .expect("lock")
                                    .push(format!("{what} {path}: {}", resp.status()));
                            }
                            Ok(resp) => {
                                load.ok.fetch_add(1, Ordering::Relaxed);
                                if what == "write" && resp.status().is_success() {
                                    load.written.lock().expect("lock").push(path.clone());
                                }
                            }
                            Err(e) => {
                                load.failed.fetch_add(1, Ordering::Relaxed);
                                load.failures
                                    .lock()
                                    .expect("lock")
                                    .push(format!("{what} {path}: {e}"));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    (load, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_load_fails_no_request_and_logs_every_write_once() {
    let (_a, dir, cfg) = one_owner().await;
    let mut router = Router::start_in(dir, &cfg);
    let admin = router.admin.expect("admin");
    let stop = Arc::new(AtomicBool::new(false));
    let (load, tasks) = start_load(&router, 6, stop.clone());
    eventually(Duration::from_secs(5), || async {
        load.ok.load(Ordering::Relaxed) > 200
    })
    .await;

    let mut old = tokio::task::block_in_place(|| router.upgrade());
    let old_pid = old.id();
    let before = load.ok.load(Ordering::Relaxed);
    let code = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = old.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the old router did not exit after handing over"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    assert_eq!(code, Some(0), "the old router drains and exits 0");
    // The new process serves on the same ports: the load goes on, and the
    // admin API answers from it.
    let after = load.ok.load(Ordering::Relaxed);
    eventually(Duration::from_secs(5), || async {
        load.ok.load(Ordering::Relaxed) > after + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("load task");
    }
    let status = status_at(admin).await;
    assert_eq!(status["oplog"]["writable"], true, "{status}");

    let failed = load.failed.load(Ordering::Relaxed);
    let failures = load.failures.lock().expect("lock").clone();
    assert_eq!(
        failed, 0,
        "requests failed across the upgrade: {failures:?}"
    );
    assert!(
        before > 200 && after > before,
        "load ran through the upgrade: {before} then {after}"
    );

    // Every acknowledged write has one intent, and the two processes' records
    // follow each other with no sequence number skipped or used twice.
    // With `fsync: batch` a write is answered once its intent is queued, and
    // the writer puts it in the file a moment later: the last writes' intents
    // are waited for.
    let written = load.written.lock().expect("lock").clone();
    assert!(written.len() > 100, "{} writes", written.len());
    let read_log = || {
        let mut seqs = Vec::new();
        let mut intents = std::collections::HashMap::<String, usize>::new();
        switchyard_oplog::read_dir(&router.dir.0.join("state/oplog"), 0, |seq, r| {
            seqs.push(seq);
            if let Record::Intent(i) = r {
                *intents.entry(i.path).or_default() += 1;
            }
        })
        .expect("read the op log");
        (seqs, intents)
    };
    eventually(Duration::from_secs(5), || {
        let (_, intents) = read_log();
        let all_there = written.iter().all(|p| intents.contains_key(p));
        async move { all_there }
    })
    .await;
    let (seqs, intents) = read_log();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers run on"
    );
    for path in &written {
        assert_eq!(intents.get(path), Some(&1), "{path}: one intent in the log");
    }
    assert_ne!(router.pid() as u32, old_pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_returns_once_the_new_router_serves_and_refuses_with_nothing_to_replace() {
    let (_a, dir, cfg) = one_owner().await;
    let mut router = Router::start_in(dir, &cfg);
    let old_pid = router.pid();
    let config = router.config.clone();
    // Pin the ports the way an upgrade needs them, then replace the
    // process with the command a service manager's reload runs.
    let mut old = tokio::task::block_in_place(|| router.upgrade());
    tokio::task::block_in_place(|| {
        assert_eq!(old.wait().expect("wait").code(), Some(0));
    });
    let new_pid = router.pid();
    assert_ne!(new_pid, old_pid);
    // The new router keeps the command's stdout: read the command's own
    // line, then its exit status (a service manager waits for that alone).
    let (code, out) = tokio::task::block_in_place(|| {
        let mut upgrade = std::process::Command::new(binary())
            .args(["upgrade", "--config"])
            .arg(&config)
            .env("SY_TEST_TOKEN", TOKEN)
            .env("SWITCHYARD_RYW_KEY", RYW_KEY)
            .env("SWITCHYARD_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("upgrade runs");
        let stdout = upgrade.stdout.take().expect("stdout");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let out = lines
            .find(|l| {
                l.as_ref()
                    .map_or(true, |l| l.starts_with("switchyard upgrade"))
            })
            .and_then(Result::ok)
            .unwrap_or_default();
        (upgrade.wait().expect("wait").code(), out)
    });
    assert_eq!(code, Some(0), "{out}");
    let pid: u32 = out
        .split_whitespace()
        .nth(3)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a pid in {out:?}"));
    // The router started by `switchyard upgrade` serves; the test's own
    // process hands over and exits.
    tokio::task::block_in_place(|| {
        assert_eq!(router.wait_exit(Duration::from_secs(20)), Some(0));
    });
    let resp = reqwest::get(router.url("/kv/x"))
        .await
        .expect("served after the upgrade");
    assert!(resp.status().as_u16() < 500);
    let kill = |pid: u32| {
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    };
    // The new router serves before it writes: it takes the op log once the
    // process it replaced has let go. Stopped before that, it would take the
    // log while stopping, and the check below would pass too early.
    let oplog = router.dir.0.join("state/oplog");
    eventually(Duration::from_secs(20), || async {
        switchyard_oplog::writer_pid(&oplog).is_ok_and(|p| p == Some(pid))
    })
    .await;
    kill(pid);
    // Nothing runs on the state_dir any more once it has drained and let go
    // of the op log: an upgrade has nothing to take over.
    eventually(Duration::from_secs(20), || async {
        switchyard_oplog::writer_pid(&oplog).is_ok_and(|p| p.is_none())
    })
    .await;
    let (code, stderr) = run_switchyard(&["run", "--upgrade"], &config, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nothing to take over"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_with_the_main_pid_then_the_new_one_after_an_upgrade() {
    let (_a, dir, cfg) = one_owner().await;
    let socket_path = dir.0.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let notify = socket_path.to_string_lossy().into_owned();
    let mut router = Router::start_with_env(dir, &cfg, &[("NOTIFY_SOCKET", &notify)]);
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = tokio::task::block_in_place(next);
    assert!(
        first.contains("READY=1") && first.contains(&format!("MAINPID={}", router.pid())),
        "{first:?}"
    );
    let mut old = tokio::task::block_in_place(|| router.upgrade());
    let second = tokio::task::block_in_place(next);
    assert!(
        second.contains("READY=1") && second.contains(&format!("MAINPID={}", router.pid())),
        "{second:?}"
    );
    tokio::task::block_in_place(|| {
        assert_eq!(old.wait().expect("wait").code(), Some(0));
    });
    // The old process, handing over, did not tell systemd the service stops.
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 512];
    assert!(
        socket.recv(&mut buf).is_err(),
        "no STOPPING=1 from an upgrade"
    );
    router.signal(rustix::process::Signal::TERM);
    socket.set_nonblocking(false).expect("blocking");
    let last = tokio::task::block_in_place(next);
    assert!(last.contains("STOPPING=1"), "{last:?}");
}
