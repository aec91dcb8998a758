//! The peers under the same load and the same operation, for the tables'
//! side-by-side rows: nginx reloading (`nginx -s reload`), nginx's binary
//! upgrade (`USR2`, then `WINCH` and `QUIT` to the old master) and
//! HAProxy's reload (a new process with `-sf` the old one's pid).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::load::{self, Stats};
use super::procs::{free_port, until};

struct Proc(Child);

impl Drop for Proc {
    /// SIGTERM first: a master SIGKILLed leaves its workers behind.
    fn drop(&mut self) {
        signal(self.0.id() as i32, rustix::process::Signal::TERM);
        if super::procs::wait_exit(&mut self.0, Duration::from_secs(3)).is_none() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

async fn listening(port: u16) -> anyhow::Result<()> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    until(Duration::from_secs(10), "the peer listens", || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await
    .map(|_| ())
}

/// The drills' mix of reads and writes, at `rate`, to a peer on `port`.
fn load_on(port: u16, rate: u32) -> load::Running {
    load::start(
        rate,
        super::drills::reads_and_writes(format!("http://127.0.0.1:{port}")),
    )
}

/// nginx's config: one worker, kept-alive upstream connections to `backend`.
fn nginx_conf(dir: &Path, port: u16, backend: SocketAddr, daemon: bool) -> String {
    format!(
        "worker_processes 1; daemon {}; pid {}; error_log {}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off;
  upstream a {{ server {backend}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://a; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}
",
        if daemon { "on" } else { "off" },
        dir.join("nginx.pid").display(),
        dir.display()
    )
}

/// nginx in front of `backend`, in the foreground.
fn nginx(dir: &Path, port: u16, backend: SocketAddr) -> anyhow::Result<Proc> {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, port, backend, false))?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("nginx (apt-get install nginx)")?;
    Ok(Proc(child))
}

/// `nginx -s reload` every second for `rounds` seconds under `rate`.
pub async fn nginx_reloads(
    dir: &Path,
    backend: SocketAddr,
    rate: u32,
    rounds: u64,
) -> anyhow::Result<Stats> {
    let port = free_port();
    let _nginx = nginx(dir, port, backend)?;
    listening(port).await?;
    let load = load_on(port, rate);
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .args(["-s", "reload"])
            .stderr(Stdio::null())
            .status();
    }
    Ok(load::stats(&load.finish().await))
}

/// nginx's binary upgrade under `rate`: USR2 (a new master beside the
/// old), then WINCH and QUIT to the old one.
pub async fn nginx_upgrade(
    dir: &Path,
    backend: SocketAddr,
    rate: u32,
    phase: Duration,
) -> anyhow::Result<Stats> {
    let port = free_port();
    // Daemonised, as its binary upgrade expects (the new master is a child of the old).
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, port, backend, true))?;
    // Its binary upgrade re-executes argv[0]: it must be a full path.
    let bin = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nginx"))
                .find(|p| p.is_absolute() && p.exists())
        })
        .context("nginx is not on PATH")?;
    let ok = Command::new(&bin)
        .arg0(&bin)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .status()?
        .success();
    anyhow::ensure!(ok, "nginx did not start");
    let _stop = StopNginx(dir.to_path_buf());
    listening(port).await?;
    let load = load_on(port, rate);
    tokio::time::sleep(phase).await;
    let old = read_pid(&dir.join("nginx.pid")).context("nginx.pid")?;
    signal(old, rustix::process::Signal::USR2);
    until(Duration::from_secs(10), "nginx's new master", || async {
        read_pid(&dir.join("nginx.pid")).is_some_and(|p| p != old)
    })
    .await
    .with_context(|| std::fs::read_to_string(dir.join("error.log")).unwrap_or_default())?;
    signal(old, rustix::process::Signal::WINCH);
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(old, rustix::process::Signal::QUIT);
    tokio::time::sleep(phase).await;
    Ok(load::stats(&load.finish().await))
}

/// Stops a daemonised nginx (both masters, mid-upgrade) whatever happened.
struct StopNginx(std::path::PathBuf);

impl Drop for StopNginx {
    fn drop(&mut self) {
        for f in ["nginx.pid", "nginx.pid.oldbin"] {
            if let Some(pid) = read_pid(&self.0.join(f)) {
                signal(pid, rustix::process::Signal::TERM);
            }
        }
    }
}

/// HAProxy's reload under `rate`: a new process with `-sf` the old pid.
pub async fn haproxy_reload(
    dir: &Path,
    backend: SocketAddr,
    rate: u32,
    phase: Duration,
) -> anyhow::Result<Stats> {
    let port = free_port();
    let conf = dir.join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  server a {backend}\n"
        ),
    )?;
    let pidfile = dir.join("haproxy.pid");
    let start = |extra: Vec<String>| -> anyhow::Result<Proc> {
        Ok(Proc(
            Command::new("haproxy")
                .arg("-f")
                .arg(&conf)
                .arg("-p")
                .arg(&pidfile)
                .arg("-db")
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("haproxy (apt-get install haproxy)")?,
        ))
    };
    let old = start(Vec::new())?;
    listening(port).await?;
    let load = load_on(port, rate);
    tokio::time::sleep(phase).await;
    let _new = start(vec!["-sf".into(), old.0.id().to_string()])?;
    tokio::time::sleep(phase).await;
    let stats = load::stats(&load.finish().await);
    drop(old);
    Ok(stats)
}
