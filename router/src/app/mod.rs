//! Builds and runs the router: [`App::build`] opens the stores, joins the
//! fleet, starts the control loops and binds every listener (so the
//! addresses are known before anything is served); [`App::run`] serves until
//! SIGTERM or SIGINT, then stops accepting, drains in-flight requests within
//! `shutdown_grace` and flushes the op log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, SignalKind};

use crate::control::reload::Reloader;
use crate::control::RouterState;
use crate::route::topology::Topology;
use crate::store::oplog::OpLog;

mod listeners;
pub(crate) mod open_files;
mod secrets;

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

/// A router built and listening, not yet serving proxy traffic.
pub struct App {
    control: Runtime,
    state: Arc<RouterState>,
    reloader: Arc<Reloader>,
    oplog: Arc<OpLog>,
    proxy: listeners::Proxy,
    bound: Bound,
    grace: Duration,
}

impl App {
    /// Loads the config and builds everything; the listeners are bound when
    /// it returns, and [`App::bound`] says where.
    pub fn build(config_path: PathBuf) -> anyhow::Result<App> {
        let config = switchyard_config::load(&config_path)?;
        for w in config.warnings() {
            tracing::warn!("{}: {w}", config_path.display());
        }
        let files = open_files::raise_open_files(config.limits.max_connections);
        tracing::info!(
            soft = files.soft,
            was = files.soft_before,
            hard = files.hard,
            "open-files limit"
        );
        if let Some(w) = &files.warning {
            tracing::warn!("{w}");
        }
        let control = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("switchyard-control")
            .enable_all()
            .build()?;
        let metrics_handle = {
            let _enter = control.enter();
            crate::metrics::install()?
        };
        let secrets = secrets::load(&config)?;
        let topology = Topology::build(Arc::new(config.clone()), None, &secrets)?;
        let traffic = crate::store::traffic::TrafficStore::open(&config.state_dir)
            .context("state_dir: cannot read the saved traffic state")?;
        let ownership = crate::store::ownership::OwnershipStore::open(&config.state_dir, &config)
            .context("state_dir: cannot read the ownership table")?;
        let fleet = match &config.etcd {
            None => None,
            Some(etcd) => Some(control.block_on(join_fleet(etcd, &ownership))?),
        };
        let edge = crate::store::edge_id(&config)?;
        let presence = fleet
            .as_ref()
            .map(|_| Arc::new(crate::fleet::presence::Presence::new(edge.clone())));
        let oplog = OpLog::start(&config.state_dir, &config.oplog, edge.clone())?;
        if let Some(nats) = &config.oplog.nats {
            control.spawn(crate::store::oplog_nats::run(
                oplog.dir.clone(),
                nats.clone(),
                edge,
                oplog.forwarded.clone(),
            ));
            control.spawn(crate::store::oplog_nats::watch_backlog(oplog.clone()));
        }
        let state = RouterState::new(
            topology,
            secrets,
            config_path,
            control.handle().clone(),
            traffic,
            ownership,
            crate::control::Shared {
                fleet: fleet.clone(),
                presence: presence.clone(),
                oplog: Some(oplog.clone()),
            },
        );
        if let (Some(fleet), Some(presence), Some(etcd)) = (&fleet, &presence, &config.etcd) {
            crate::control::fleet_sync::start(&state, fleet, presence, etcd.lease_ttl);
        }
        let resolver = Arc::new(crate::control::dns::resolver()?);
        let reloader = Arc::new(Reloader {
            state: state.clone(),
            resolver,
        });
        crate::control::start_loops(&state, &reloader);
        let mut bound = Bound::default();
        listeners::serve_admin(&control, &config, &state, &reloader, &mut bound)?;
        listeners::serve_metrics(&control, &config, metrics_handle, &mut bound)?;
        let proxy = listeners::Proxy::build(&config, &state, &mut bound)?;
        Ok(App {
            control,
            state,
            reloader,
            oplog,
            proxy,
            bound,
            grace: config.shutdown_grace,
        })
    }

    /// Where the router listens.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Serves until SIGTERM or SIGINT (SIGHUP reloads), then drains and returns.
    pub fn run(self) -> anyhow::Result<()> {
        let running = self.proxy.start()?;
        println!("{}", self.bound.ready_line());
        let b = &self.bound;
        tracing::info!(http = ?b.http, https = ?b.https, admin = ?b.admin, metrics = ?b.metrics, "switchyard ready");
        self.control.block_on(wait_for_stop(&self.reloader))?;
        running.stop_accepting();
        drain(&self.state, self.grace);
        self.control.block_on(self.oplog.flush());
        tracing::info!("op log flushed");
        Ok(())
    }
}

/// Connects to etcd, seeds the partitions the fleet does not know yet with
/// the local table's owners, and takes the fleet's table as this router's.
async fn join_fleet(
    etcd: &switchyard_config::Etcd,
    ownership: &crate::store::ownership::OwnershipStore,
) -> anyhow::Result<crate::fleet::Fleet> {
    let fleet = crate::fleet::Fleet::connect(etcd)
        .await
        .context("coordination.etcd")?;
    fleet
        .seed(&ownership.snapshot())
        .await
        .context("coordination.etcd: cannot seed owners")?;
    let table = fleet
        .load()
        .await
        .context("coordination.etcd: cannot read owners")?;
    ownership.replace(table)?;
    Ok(fleet)
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
            // A failed reload is logged and counted by the reloader; the old config stays.
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
