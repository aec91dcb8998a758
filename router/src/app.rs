//! Assembles and runs the router: the control-plane runtime (admin, metrics,
//! health checks, DNS, signals) beside pingora's proxy runtime, and the
//! graceful stop that drains in-flight requests.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::admin::{self, AdminState};
use crate::proxy::Edge;
use crate::reload::Reloader;
use crate::state::RouterState;
use crate::topology::Topology;

/// The addresses the router ended up listening on.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

impl Bound {
    /// The line printed once the router is ready; tests read ports from it.
    pub fn ready_line(&self) -> String {
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
        format!(
            "switchyard ready http={} https={} admin={} metrics={}",
            show(self.http),
            show(self.https),
            show(self.admin),
            show(self.metrics)
        )
    }
}

/// Tells pingora to stop accepting when our own signal handling says so.
struct StopWatch(tokio::sync::Mutex<Option<oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for StopWatch {
    async fn recv(&self) -> ShutdownSignal {
        if let Some(rx) = self.0.lock().await.take() {
            let _ = rx.await;
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// A port-0 address becomes a concrete free port, so it can be reported.
fn concrete(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l = StdListener::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
    Ok(l.local_addr()?)
}

fn check_tls_files(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let read = |p: &Path, what: &str, marker: &str| -> anyhow::Result<()> {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("listen.https.{what}: cannot read {}", p.display()))?;
        if !text.contains(marker) {
            bail!("listen.https.{what}: {} holds no PEM {marker}", p.display());
        }
        Ok(())
    };
    read(cert, "cert", "CERTIFICATE")?;
    read(key, "key", "PRIVATE KEY")
}

/// This router's name (in the fleet and in its op log): the config's, else
/// one made once and kept in the state directory.
fn edge_id(config: &switchyard_config::Config) -> anyhow::Result<String> {
    if let Some(id) = config.etcd.as_ref().and_then(|e| e.edge_id.as_ref()) {
        return Ok(id.clone());
    }
    let state_dir = &config.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("state_dir: cannot create {}", state_dir.display()))?;
    let path = state_dir.join("edge-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    let id = format!("edge-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    crate::persist::write_atomically(&path, id.as_bytes())?;
    Ok(id)
}

fn worker_threads() -> usize {
    std::env::var("SWITCHYARD_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs the router until SIGTERM or SIGINT, then drains and returns.
pub fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = switchyard_config::load(&config_path)?;
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("switchyard-control")
        .enable_all()
        .build()?;
    let metrics_handle = {
        let _enter = control.enter();
        crate::metrics::install()?
    };

    let topology = Topology::build(Arc::new(config.clone()), None)?;
    let traffic = crate::persist::TrafficStore::open(&config.state_dir)
        .context("state_dir: cannot read the saved traffic state")?;
    let ownership = crate::ownership::OwnershipStore::open(&config.state_dir, &config)
        .context("state_dir: cannot read the ownership table")?;
    let fleet = match &config.etcd {
        None => None,
        Some(etcd) => {
            let fleet = control
                .block_on(crate::fleet::Fleet::connect(etcd))
                .context("coordination.etcd")?;
            // The config's owners seed partitions the fleet does not know yet.
            control
                .block_on(fleet.seed(&ownership.snapshot()))
                .context("coordination.etcd: cannot seed owners")?;
            let table = control
                .block_on(fleet.load())
                .context("coordination.etcd: cannot read owners")?;
            ownership.replace(table)?;
            Some(fleet)
        }
    };
    let edge = edge_id(&config)?;
    let presence = match &config.etcd {
        Some(_) if fleet.is_some() => Some(Arc::new(crate::fleet::Presence::new(edge.clone()))),
        _ => None,
    };
    let oplog = crate::oplog::OpLog::start(&config.state_dir, &config.oplog, edge.clone())?;
    if let Some(nats) = &config.oplog.nats {
        control.spawn(crate::oplog_nats::run(
            oplog.dir.clone(),
            nats.clone(),
            edge.clone(),
            oplog.forwarded.clone(),
        ));
    }
    let state = RouterState::new(
        topology,
        config_path,
        control.handle().clone(),
        traffic,
        ownership,
        crate::state::Shared {
            fleet: fleet.clone(),
            presence: presence.clone(),
            oplog: Some(oplog.clone()),
        },
    );
    if let (Some(fleet), Some(presence), Some(etcd)) = (fleet, presence, &config.etcd) {
        control.spawn(crate::fleet::watch(state.clone(), fleet.clone()));
        control.spawn(crate::fleet::watch_dials(state.clone(), fleet.clone()));
        control.spawn(crate::fleet::watch_ramps(state.clone(), fleet.clone()));
        control.spawn(crate::fleet::run_presence(
            state.clone(),
            fleet,
            presence,
            etcd.lease_ttl,
        ));
    }
    let resolver = Arc::new(crate::resolve::resolver()?);
    {
        let _enter = control.enter();
        crate::health::start_tasks(&state, &resolver);
    }
    control.spawn(crate::ramp::run_controller(state.clone()));
    control.spawn(crate::outlier::run_detector(state.clone()));
    control.spawn(crate::promote::run_auto_promoter(state.clone()));
    let purge = state.clone();
    control.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let window = purge.topology.load().config.consistency.idempotency_window;
            purge.idempotency.purge(window);
        }
    });
    let reloader = Arc::new(Reloader {
        state: state.clone(),
        resolver: resolver.clone(),
    });

    let mut bound = Bound::default();
    if let Some(a) = &config.admin {
        let token = std::env::var(&a.token_env).ok().filter(|t| !t.is_empty());
        if token.is_none() {
            tracing::warn!(env = %a.token_env, "admin token unset: the admin API refuses every request");
        }
        let app = admin::router(AdminState {
            router: state.clone(),
            reloader: reloader.clone(),
            token: token.map(Arc::from),
        });
        let listener = control
            .block_on(tokio::net::TcpListener::bind(a.addr))
            .with_context(|| format!("admin.addr: cannot bind {}", a.addr))?;
        bound.admin = Some(listener.local_addr()?);
        control.spawn(async move { axum::serve(listener, app).await });
    }
    if let Some(m) = &config.metrics {
        let handle = metrics_handle.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let h = handle.clone();
                async move { h.render() }
            }),
        );
        let listener = control
            .block_on(tokio::net::TcpListener::bind(m.addr))
            .with_context(|| format!("metrics.addr: cannot bind {}", m.addr))?;
        bound.metrics = Some(listener.local_addr()?);
        control.spawn(async move { axum::serve(listener, app).await });
    }
    let upkeep = metrics_handle.clone();
    control.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });

    // The proxy itself, on pingora.
    let grace = config.shutdown_grace;
    let mut conf = ServerConf {
        threads: worker_threads(),
        // One current-thread runtime per worker: no cross-thread wakeups on
        // the hot path (the work-stealing runtime spent ~8% in them).
        work_stealing: false,
        grace_period_seconds: Some(grace.as_secs() + 5),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    conf.upstream_keepalive_pool_size = 1024;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Edge {
            state: state.clone(),
        },
        "switchyard",
    );
    if let Some(addr) = config.listen.http {
        let addr = concrete(addr)?;
        service.add_tcp(&addr.to_string());
        bound.http = Some(addr);
    }
    if let Some(https) = &config.listen.https {
        check_tls_files(&https.cert, &https.key)?;
        let addr = concrete(https.addr)?;
        let mut tls =
            TlsSettings::intermediate(&https.cert.to_string_lossy(), &https.key.to_string_lossy())
                .context("listen.https: cannot load the certificate or key")?;
        tls.enable_h2();
        service.add_tls_with_settings(&addr.to_string(), None, tls);
        bound.https = Some(addr);
    }
    server.add_service(service);
    let (stop_tx, stop_rx) = oneshot::channel();
    let proxy_thread = std::thread::Builder::new()
        .name("switchyard-proxy".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(StopWatch(tokio::sync::Mutex::new(Some(stop_rx)))),
            })
        })?;

    println!("{}", bound.ready_line());
    tracing::info!(http = ?bound.http, https = ?bound.https, admin = ?bound.admin, metrics = ?bound.metrics, "switchyard ready");

    control.block_on(wait_for_stop(&reloader))?;
    let _ = stop_tx.send(());
    drain(&state, grace);
    control.block_on(oplog.flush());
    tracing::info!("op log flushed");
    drop(proxy_thread);
    Ok(())
}

/// Serves SIGHUP as a reload; returns on SIGTERM or SIGINT.
async fn wait_for_stop(reloader: &Reloader) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => { let _ = reloader.reload().await; }
        }
    }
    tracing::info!("stopping: no new connections; draining requests in flight");
    Ok(())
}

/// Waits for in-flight requests to finish, up to `grace`.
fn drain(state: &RouterState, grace: Duration) {
    let deadline = Instant::now() + grace;
    // Give the listeners a moment to close before counting.
    std::thread::sleep(Duration::from_millis(50));
    while state.inflight() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = state.inflight();
    if left > 0 {
        tracing::warn!(left, "grace period over; abandoning requests in flight");
    } else {
        tracing::info!("drained");
    }
}
