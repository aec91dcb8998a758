//! The processes a drill starts: the router (the real binary), reference
//! regions (in-process), and a work folder removed at the end.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use switchyard_region::{RegionOpts, Role};

/// The admin token drills give the router.
pub const TOKEN: &str = "fault-drill-admin-token";
/// The read-your-writes key drills give the router.
pub const RYW_KEY: &str = "fault-drill-read-your-writes-key-0123";

/// A folder removed when dropped.
pub struct Work(pub PathBuf);

impl Work {
    pub fn new(name: &str) -> anyhow::Result<Work> {
        let p = std::env::temp_dir().join(format!("sy-drill-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Work(p))
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free port below the ephemeral range (a later bind must get it).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 12_000 + (std::process::id() * 131) % 8_000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + n * 3) % 8_000 + 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

/// A reference region in this process.
pub async fn region(
    name: &str,
    role: Role,
    replicate_from: Option<String>,
) -> anyhow::Result<SocketAddr> {
    let opts = RegionOpts {
        name: name.into(),
        role,
        services: vec!["api".into()],
        replicate_from,
        lag: Duration::ZERO,
        delay: Duration::ZERO,
        partition_header: "X-Partition".into(),
    };
    let (addr, _) = switchyard_region::spawn("127.0.0.1:0".parse()?, opts).await?;
    Ok(addr)
}

/// The router, a child process.
pub struct Router {
    pub child: Option<Child>,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub state: PathBuf,
    bin: PathBuf,
}

/// The config's header: fixed ports (so a restart or upgrade keeps them).
pub fn header(state: &Path, http: u16, admin: u16) -> String {
    format!(
        "listen: {{ http: 127.0.0.1:{http} }}\nadmin: {{ addr: 127.0.0.1:{admin}, token_env: SY_DRILL_TOKEN }}\nstate_dir: {}\nshutdown_grace: 5s\n",
        state.display()
    )
}

/// A region block with fast health checks.
pub fn region_yaml(name: &str, addr: impl std::fmt::Display, extra: &str) -> String {
    format!(
        "  {name}:\n    type: full\n    endpoints: [\"{addr}\"]\n    services: [api]\n    health: {{ interval: 100ms, timeout: 300ms, fall: 2, rise: 1 }}\n{extra}"
    )
}

impl Router {
    /// Writes `config` into `dir` and starts the router on it.
    pub fn start(bin: &Path, dir: &Path, config: &str) -> anyhow::Result<Router> {
        let path = dir.join("switchyard.yaml");
        std::fs::write(&path, config)?;
        let state = dir.join("state");
        let (child, line) = launch(bin, &path, &[])?;
        Router::from_line(bin, child, &line, path, state)
    }

    fn from_line(
        bin: &Path,
        child: Child,
        line: &str,
        config: PathBuf,
        state: PathBuf,
    ) -> anyhow::Result<Router> {
        let field = |name: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|a| a.parse().ok())
        };
        let (Some(http), Some(admin)) = (field("http"), field("admin")) else {
            bail!("the router did not start: {line:?}");
        };
        Ok(Router {
            child: Some(child),
            http,
            admin,
            config,
            state,
            bin: bin.to_path_buf(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid() as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the router again on the same config and state.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let (child, line) = launch(&self.bin, &self.config, &[])?;
        *self = Router::from_line(
            &self.bin,
            child,
            &line,
            self.config.clone(),
            self.state.clone(),
        )?;
        Ok(())
    }

    /// `run --upgrade` beside this one; returns the old process.
    pub fn upgrade(&mut self) -> anyhow::Result<Child> {
        let (child, line) = launch(&self.bin, &self.config, &["--upgrade"])?;
        if !line.contains("switchyard ready") {
            bail!("the upgrade did not start: {line:?}");
        }
        self.child.replace(child).context("no router was running")
    }

    /// Panics the router's processes reported on stderr (each one a bug).
    pub fn panics(&self) -> u64 {
        let text = std::fs::read_to_string(self.config.with_file_name("router.stderr"))
            .unwrap_or_default();
        text.matches("panicked at").count() as u64
    }

    /// The admin API's status document.
    pub async fn status(&self) -> serde_json::Value {
        let r = reqwest::Client::new()
            .get(format!("http://{}/admin/v1/status", self.admin))
            .bearer_auth(TOKEN)
            .send()
            .await;
        match r {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// Calls the admin API.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .request(method, format!("http://{}{path}", self.admin))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await;
        match r {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
            Err(e) => (0, serde_json::json!(e.to_string())),
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The router's stderr, appended to beside its config (every process of
/// a drill's router: restarts and upgrades too).
fn stderr_log(config: &Path) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("router.stderr"))?)
}

fn launch(bin: &Path, config: &Path, extra: &[&str]) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(bin)
        .arg("run")
        .args(extra)
        .arg("--config")
        .arg(config)
        .env("SY_DRILL_TOKEN", TOKEN)
        .env("SWITCHYARD_RYW_KEY", RYW_KEY)
        .env("SWITCHYARD_THREADS", "2")
        .env(
            "SWITCHYARD_LOG",
            std::env::var("SWITCHYARD_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::piped())
        .stderr(stderr_log(config)?)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok((child, line))
}

/// Polls `check` every 20 ms until it holds; the time it took, or an error after `limit`.
pub async fn until<F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{what}: not within {limit:?}")
}

/// Waits for a child to exit; its code, or `None` after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
