//! The proxies under attack, started as child processes on loopback:
//! Switchyard, and nginx and HAProxy where installed, each in front of the
//! same strict upstream with the same client timeouts.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Client timeouts every proxy gets, in seconds: short, so the drill is.
pub const HEADER_TIMEOUT: u64 = 5;
pub const KEEPALIVE_TIMEOUT: u64 = 5;

/// One running proxy.
pub struct Proxy {
    pub name: &'static str,
    pub plain: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    child: Child,
}

impl Proxy {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the proxy and its worker processes, KiB.
    pub fn rss_kib(&self) -> u64 {
        crate::floods::tree_rss_kib(self.pid())
    }
}

impl Drop for Proxy {
    /// SIGTERM, so nginx's master takes its worker with it (SIGKILL would
    /// leave the worker running, holding the drill's stdout open).
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        let termed = pid.map(|p| rustix::process::kill_process(p, rustix::process::Signal::TERM));
        if !matches!(termed, Some(Ok(()))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("{what} is not listening on {addr}")
}

/// A self-signed certificate for `localhost`: (cert path, key path, both in one).
pub fn certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let (crt, key, pem) = (
        dir.join("edge.crt"),
        dir.join("edge.key"),
        dir.join("edge.pem"),
    );
    std::fs::write(&crt, cert.cert.pem())?;
    std::fs::write(&key, cert.key_pair.serialize_pem())?;
    std::fs::write(
        &pem,
        format!("{}{}", cert.cert.pem(), cert.key_pair.serialize_pem()),
    )?;
    Ok((crt, key, pem))
}

/// Switchyard with `config`, its ports read from its ready line.
pub fn switchyard(binary: &Path, dir: &Path, config: &str) -> anyhow::Result<Proxy> {
    let path = dir.join("switchyard.yaml");
    std::fs::write(&path, config)?;
    let mut child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&path)
        .env("SWITCHYARD_LOG", "error")
        .env(
            "SWITCHYARD_RYW_KEY",
            "hostile-drill-ryw-key-of-32-bytes-or-more",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .read_line(&mut line)?;
    let field = |name: &str| -> Option<SocketAddr> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|a| a.parse().ok())
    };
    let plain =
        field("http").ok_or_else(|| anyhow::anyhow!("switchyard did not start: {line:?}"))?;
    Ok(Proxy {
        name: "switchyard",
        plain,
        tls: field("https"),
        metrics: field("metrics"),
        child,
    })
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// nginx, one worker, in front of `upstream`; `None` when not installed.
pub fn nginx(
    dir: &Path,
    upstream: SocketAddr,
    crt: &Path,
    key: &Path,
) -> anyhow::Result<Option<Proxy>> {
    if !installed("nginx") {
        return Ok(None);
    }
    let (plain, tls) = (free_port()?, free_port()?);
    let d = dir.display();
    let conf = format!(
        "worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err;
worker_rlimit_nofile 20000;
events {{ worker_connections 8000; }}
http {{ access_log off;
  client_header_timeout {HEADER_TIMEOUT}s; keepalive_timeout {KEEPALIVE_TIMEOUT}s; client_body_timeout 30s;
  upstream strict {{ server {upstream}; keepalive 32; }}
  server {{ listen 127.0.0.1:{plain}; listen 127.0.0.1:{tls} ssl http2;
    ssl_certificate {crt}; ssl_certificate_key {key};
    location / {{ proxy_pass http://strict; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}
",
        crt = crt.display(),
        key = key.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let p = Proxy {
        name: "nginx",
        plain: SocketAddr::from(([127, 0, 0, 1], plain)),
        tls: Some(SocketAddr::from(([127, 0, 0, 1], tls))),
        metrics: None,
        child,
    };
    wait_listening(p.plain, "nginx")?;
    Ok(Some(p))
}

/// HAProxy, one thread, in front of `upstream`; `None` when not installed.
pub fn haproxy(dir: &Path, upstream: SocketAddr, pem: &Path) -> anyhow::Result<Option<Proxy>> {
    if !installed("haproxy") {
        return Ok(None);
    }
    let (plain, tls) = (free_port()?, free_port()?);
    let conf = format!(
        "global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout http-request {HEADER_TIMEOUT}s
  timeout http-keep-alive {KEEPALIVE_TIMEOUT}s
frontend edge
  bind 127.0.0.1:{plain}
  bind 127.0.0.1:{tls} ssl crt {pem} alpn h2,http/1.1
  default_backend strict
backend strict
  server s {upstream}
",
        pem = pem.display()
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf)?;
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let p = Proxy {
        name: "haproxy",
        plain: SocketAddr::from(([127, 0, 0, 1], plain)),
        tls: Some(SocketAddr::from(([127, 0, 0, 1], tls))),
        metrics: None,
        child,
    };
    wait_listening(p.plain, "haproxy")?;
    Ok(Some(p))
}
