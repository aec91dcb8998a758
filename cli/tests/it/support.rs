//! Test support: reference regions in-process, the real `switchyard` binary
//! as a child process on free ports, and polling with a deadline.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use rustix::process::Signal;
use switchyard_region::{Region, RegionOpts, Role};

pub const TOKEN: &str = "test-admin-token";
pub const RYW_KEY: &str = "test-read-your-writes-key-0123456789";

pub struct TestRegion {
    pub addr: SocketAddr,
    pub region: Arc<Region>,
}

impl TestRegion {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets one of the region's knobs (`lag`, `delay`, `health`, `fail`, `role`, `services`).
    pub async fn set(&self, knob: &str, value: serde_json::Value) {
        let resp = reqwest::Client::new()
            .put(format!("{}/_control/{knob}", self.url()))
            .json(&serde_json::json!({ "value": value }))
            .send()
            .await
            .expect("control request");
        assert!(
            resp.status().is_success(),
            "setting {knob}: {}",
            resp.status()
        );
    }

    /// A header of the last request the region kept (echo, kv, gRPC).
    pub fn last_header(&self, name: &str) -> Option<String> {
        self.region
            .last_echo_headers
            .lock()
            .expect("lock")
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub fn requests(&self) -> u64 {
        self.region
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The most API requests the region has answered at once.
    pub fn concurrent_max(&self) -> u64 {
        self.region
            .concurrent_max
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub async fn region(name: &str) -> TestRegion {
    region_with(name, Role::Primary, None).await
}

pub async fn region_with(name: &str, role: Role, replicate_from: Option<String>) -> TestRegion {
    spawn_region(name, role, replicate_from, None).await
}

/// A primary reference region on a free port, over TLS when `tls` is given.
pub async fn region_over(name: &str, tls: Option<&switchyard_region::ServerTls>) -> TestRegion {
    spawn_region(name, Role::Primary, None, tls).await
}

async fn spawn_region(
    name: &str,
    role: Role,
    replicate_from: Option<String>,
    tls: Option<&switchyard_region::ServerTls>,
) -> TestRegion {
    let opts = RegionOpts {
        name: name.into(),
        role,
        services: vec!["api".into()],
        replicate_from,
        lag: Duration::ZERO,
        delay: Duration::ZERO,
        partition_header: "X-Partition".into(),
    };
    let (addr, region) =
        switchyard_region::spawn_with("127.0.0.1:0".parse().expect("addr"), opts, tls)
            .await
            .expect("region starts");
    TestRegion { addr, region }
}

/// Runs `switchyard ctl --admin ADDR ARGS…` against `router` with the test
/// token (from a multi-threaded test: it blocks in place); its output.
pub fn ctl(router: &Router, args: &[&str]) -> std::process::Output {
    let admin = router.admin.expect("admin configured").to_string();
    tokio::task::block_in_place(|| {
        Command::new(binary())
            .args(["ctl", "--admin", &admin])
            .args(args)
            .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("ctl runs")
    })
}

/// A config with `top` (top-level keys) and one region `a`, weighted.
pub fn one_region(dir: &TempDir, top: &str, a: &TestRegion) -> String {
    format!(
        "{}{top}regions:\n{}routing:\n  policy: weighted\n",
        header(dir),
        region_yaml("a", a.addr, "")
    )
}

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("switchyard-it-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running router; killed on drop.
pub struct Router {
    pub child: Option<Child>,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub config: PathBuf,
    env: Vec<(String, String)>,
    pub dir: TempDir,
}

/// Spawns the binary on `config`; returns it with its ready line.
fn launch(config: &Path, env: &[(String, String)]) -> (Child, String) {
    launch_with(&["run"], config, env)
}

/// In a router's environment, a command that runs the router (it execs it,
/// as `prlimit --nofile=N:N` does); not passed on to the router.
pub const WRAPPER: &str = "SY_TEST_WRAPPER";

fn launch_with(args: &[&str], config: &Path, env: &[(String, String)]) -> (Child, String) {
    let wrapper = env
        .iter()
        .find(|(k, _)| k == WRAPPER)
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_default();
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(binary());
            c
        }
        None => Command::new(binary()),
    };
    let mut child = command
        .args(args)
        .arg("--config")
        .arg(config)
        .env("SY_TEST_TOKEN", TOKEN)
        // Every router of a test shares a read-your-writes key (fleet mode
        // needs one); a test that unsets it passes an empty value.
        .env("SWITCHYARD_RYW_KEY", RYW_KEY)
        .env("SWITCHYARD_THREADS", "2")
        .env("SWITCHYARD_LOG", "warn")
        .envs(
            env.iter()
                .filter(|(k, _)| k != WRAPPER)
                .map(|(k, v)| (k, v)),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("router starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    (child, line)
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

/// The header that every test config starts with: free ports, admin, metrics.
pub fn header(dir: &TempDir) -> String {
    format!(
        "listen: {{ http: 127.0.0.1:0 }}
admin: {{ addr: 127.0.0.1:0, token_env: SY_TEST_TOKEN }}
metrics: {{ addr: 127.0.0.1:0 }}
state_dir: {}
",
        dir.0.join("state").display()
    )
}

/// A region block with a fast health check.
pub fn region_yaml(name: &str, addr: impl std::fmt::Display, extra: &str) -> String {
    format!(
        "  {name}:
    type: full
    endpoints: [\"{addr}\"]
    services: [api]
    health: {{ interval: 100ms, timeout: 300ms, fall: 2, rise: 1 }}
{extra}"
    )
}

/// The config with health checks slowed to once a minute: for tests where
/// the first probe must be the only one (retries, not ejection, must act).
pub fn slow_health(config: &str) -> String {
    config.replace(
        "interval: 100ms, timeout: 300ms",
        "interval: 1m, timeout: 3s",
    )
}

impl Router {
    /// Starts the router with `config` (the YAML text) written into `dir`.
    pub fn start_in(dir: TempDir, config: &str) -> Router {
        Self::start_with_env(dir, config, &[])
    }

    /// Starts the router with extra environment variables.
    pub fn start_with_env(dir: TempDir, config: &str, env: &[(&str, &str)]) -> Router {
        let path = dir.write("switchyard.yaml", config);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, line) = launch(&path, &env);
        let field = |name: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|a| a.parse().ok())
        };
        let http = field("http").unwrap_or_else(|| panic!("router did not start: {line:?}"));
        let r = Router {
            child: Some(child),
            http,
            https: field("https"),
            admin: field("admin"),
            metrics: field("metrics"),
            config: path,
            env,
            dir,
        };
        r.wait_listening();
        r
    }

    /// Kills the router (SIGKILL) and starts it again on the same config,
    /// state directory and ports.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.pin_ports();
        let (child, line) = launch(&self.config, &self.env);
        assert!(
            line.contains("switchyard ready"),
            "restart failed: {line:?}"
        );
        self.child = Some(child);
        self.wait_listening();
    }

    /// Starts `run --upgrade` on the same config and ports; returns the old
    /// process (handing over, then draining) once the new one is ready.
    pub fn upgrade(&mut self) -> Child {
        self.pin_ports();
        let (child, line) = launch_with(&["run", "--upgrade"], &self.config, &self.env);
        assert!(
            line.contains("switchyard ready"),
            "upgrade failed: {line:?}"
        );
        self.child.replace(child).expect("a running router")
    }

    /// Writes the ports the router got into its config, so the next process
    /// on it listens where this one did.
    fn pin_ports(&self) {
        let mut text = std::fs::read_to_string(&self.config).expect("config");
        for (key, addr) in [
            ("http", Some(self.http)),
            ("addr", self.admin),
            ("addr", self.metrics),
        ] {
            if let Some(a) = addr {
                text = text.replacen(&format!("{key}: 127.0.0.1:0"), &format!("{key}: {a}"), 1);
            }
        }
        std::fs::write(&self.config, text).expect("config");
    }

    /// Calls the admin API; returns the status and the JSON body (or the text as a string).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let admin = self.admin.expect("admin configured");
        let mut req = reqwest::Client::new()
            .request(method, format!("http://{admin}{path}"))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("admin body");
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }

    fn wait_listening(&self) {
        wait_listening(self.http, Duration::from_secs(10), "router");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).expect("a child's pid is positive");
        rustix::process::kill_process(pid, sig).expect("signal the router");
    }

    /// Waits until the router has `n` requests in flight.
    pub async fn wait_inflight(&self, n: u64) {
        eventually(Duration::from_secs(5), || async {
            self.status().await["inflight"] == n
        })
        .await;
    }

    pub async fn status(&self) -> serde_json::Value {
        status_at(self.admin.expect("admin configured")).await
    }

    /// Writes `config` over the router's file and asks for a reload over the admin API.
    pub async fn reload_with(&self, config: &str) -> reqwest::Response {
        std::fs::write(&self.config, config).expect("write config");
        let admin = self.admin.expect("admin configured");
        reqwest::Client::new()
            .post(format!("http://{admin}/admin/v1/reload"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("reload")
    }

    pub async fn metrics_text(&self) -> String {
        let m = self.metrics.expect("metrics configured");
        reqwest::get(format!("http://{m}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Waits until the status shows region `name` with `healthy == want`.
    pub async fn wait_healthy(&self, name: &str, want: bool) {
        eventually(Duration::from_secs(10), || async {
            self.status().await["regions"][name]["healthy"] == serde_json::Value::Bool(want)
        })
        .await;
    }

    /// Waits for exit; returns the exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status document of the router whose admin API is at `admin`.
pub async fn status_at(admin: SocketAddr) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{admin}/admin/v1/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status json")
}

/// Asserts `check` holds at every look for the whole of `span`: for what
/// must not happen (a ramp that must stay paused, an owner that must stay),
/// failing as soon as it does.
pub async fn consistently<F, Fut>(span: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + span;
    while Instant::now() < until {
        assert!(check().await, "condition broken within {span:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the regions together have served `n` more requests than now.
pub async fn served_more(regions: &[&TestRegion], n: u64) {
    let total = || regions.iter().map(|r| r.requests()).sum::<u64>();
    let from = total();
    eventually(Duration::from_secs(10), || async { total() >= from + n }).await;
}

/// A client whose requests leave from `source` (any 127/8 address works on loopback).
pub fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().expect("ip"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GETs `url` and returns (status, serving region).
pub async fn get_region(
    client: &reqwest::Client,
    url: &str,
    partition: Option<&str>,
) -> (u16, String) {
    let mut req = client.get(url);
    if let Some(p) = partition {
        req = req.header("X-Partition", p);
    }
    let resp = req.send().await.expect("request");
    (resp.status().as_u16(), served_by(&resp))
}

/// The region an answer names in `X-Switchyard-Region` ("" when none).
pub fn served_by(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-switchyard-region")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Runs `switchyard ARGS --config CONFIG` with `env` to its end: the exit
/// code and what it printed on stderr.
pub fn run_switchyard(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .expect("switchyard runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every record of the router's op log, in order.
pub fn oplog_records(router: &Router) -> Vec<switchyard_oplog::Record> {
    let mut out = Vec::new();
    switchyard_oplog::read_dir(&router.dir.0.join("state/oplog"), 0, |_, r| out.push(r))
        .expect("read the op log");
    out
}

/// The body the op log kept in the intent of the write to `path`.
pub fn logged_intent_body(router: &Router, path: &str) -> Option<switchyard_oplog::Body> {
    oplog_records(router)
        .into_iter()
        .filter_map(|r| match r {
            switchyard_oplog::Record::Intent(i) if i.path == path => Some(i.body),
            _ => None,
        })
        .next_back()
}

/// Sends raw bytes and returns the status line's code and the whole answer.
pub fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A config with regions `a` and `b` (`b_extra` appended to b's block).
pub fn two_regions(
    a: &TestRegion,
    b: &TestRegion,
    routing: &str,
    b_extra: &str,
    dir: &TempDir,
) -> String {
    format!(
        "{}regions:\n{}{}routing:\n{routing}",
        header(dir),
        region_yaml("a", a.addr, ""),
        region_yaml("b", b.addr, b_extra),
    )
}

/// A metric's value for a label set, from `/metrics` text (0 when absent).
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The `routing` of [`two_regions`] that splits reads evenly between a and b.
pub const EVEN_SPLIT: &str = "  policy: weighted\n  weights: { a: 50, b: 50 }\n";

/// Sends `n` reads with distinct partition keys; counts the serving regions.
pub async fn split(router: &Router, n: usize) -> HashMap<String, usize> {
    split_with(router, n, &[]).await
}

/// [`split`], each read also carrying `headers`.
pub async fn split_with(
    router: &Router,
    n: usize,
    headers: &[(&str, &str)],
) -> HashMap<String, usize> {
    let client = reqwest::Client::new();
    let mut counts = HashMap::new();
    for i in 0..n {
        let mut req = client
            .get(router.url("/kv/x"))
            .header("X-Partition", format!("client-{i}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        assert!(status < 500, "request {i} got {status}");
        *counts.entry(served_by(&resp)).or_insert(0) += 1;
    }
    counts
}

/// The values of `keys` in a JSON object, in order: one assertion compares
/// several fields of a report and prints them all when it fails.
pub fn fields(v: &serde_json::Value, keys: &[&str]) -> Vec<serde_json::Value> {
    keys.iter().map(|k| v[*k].clone()).collect()
}

/// `POST /admin/v1/promote` with `body`: the status and the answer.
pub async fn promote(router: &Router, body: serde_json::Value) -> (u16, serde_json::Value) {
    router
        .admin(reqwest::Method::POST, "/admin/v1/promote", Some(body))
        .await
}

/// Waits until `addr` accepts connections, failing the test after `limit`.
pub fn wait_listening(addr: std::net::SocketAddr, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A router with plain and HTTPS listeners (a self-signed certificate for
/// `localhost`) in front of one region.
pub fn tls_router_to(name: &str, addr: SocketAddr) -> Router {
    let dir = TempDir::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    dir.write("edge.crt", &cert.cert.pem());
    dir.write("edge.key", &cert.key_pair.serialize_pem());
    let cfg = format!(
        "{}regions:\n{}routing:\n  policy: weighted\n",
        header(&dir).replace(
            "listen: { http: 127.0.0.1:0 }",
            "listen: { http: 127.0.0.1:0, https: { addr: 127.0.0.1:0, cert: edge.crt, key: edge.key } }"
        ),
        region_yaml(name, addr, "")
    );
    Router::start_in(dir, &cfg)
}

/// The `i`th keyed write of a test's series: `PUT /kv/k{i}` = `v{i}` with
/// `Idempotency-Key: key-{i}`, answered 201.
pub async fn put_nth(router: &Router, i: usize) -> reqwest::Response {
    let r = reqwest::Client::new()
        .put(router.url(&format!("/kv/k{i}")))
        .header("Idempotency-Key", format!("key-{i}"))
        .body(format!("v{i}"))
        .send()
        .await
        .expect("write");
    assert_eq!(r.status().as_u16(), 201);
    r
}
