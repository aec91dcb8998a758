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

mod handover;
mod huge_pages;
mod listeners;
pub(crate) mod open_files;
mod secrets;
pub(crate) mod systemd;

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
    control_listeners: listeners::ControlListeners,
    bound: Bound,
    grace: Duration,
    state_dir: PathBuf,
}

/// How a run was asked to end.
enum Stop {
    /// SIGTERM or SIGINT: stop accepting, drain, exit.
    Terminate,
    /// SIGQUIT: a new process (`run --upgrade`) takes the listeners over.
    Upgrade,
}

/// How much longer than its own `shutdown_grace` a new process waits for
/// the one it replaces to sync its op log and let go.
const TAKEOVER_SLACK: Duration = Duration::from_secs(30);

impl App {
    /// Loads the config and builds everything; the listeners are bound when
    /// it returns, and [`App::bound`] says where. With `upgrade`, the router
    /// running on the same `state_dir` hands its listeners over and drains.
    pub fn build(config_path: PathBuf, upgrade: bool) -> anyhow::Result<App> {
        let mut config = switchyard_config::load(&config_path)?;
        let replaces = if upgrade {
            Some(handover::running_router(&config.state_dir)?)
        } else {
            None
        };
        for w in config.warnings() {
            tracing::warn!("{}: {w}", config_path.display());
        }
        huge_pages::keep_memory_off_huge_pages();
        let files = open_files::raise_open_files(config.limits.max_connections);
        tracing::info!(
            soft = files.soft,
            was = files.soft_before,
            hard = files.hard,
            max_connections = files.max_connections,
            "open-files limit"
        );
        // The listeners are built once, with the limit as it is now.
        config.limits.max_connections = Some(files.max_connections);
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
        let takeover = replaces.map(|_| config.shutdown_grace + TAKEOVER_SLACK);
        let oplog = OpLog::start(&config.state_dir, &config.oplog, edge.clone(), takeover)?;
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
                access_log: config
                    .access_log
                    .as_ref()
                    .map(crate::store::access_log::AccessLogWriter::start)
                    .transpose()?,
                spans: config
                    .tracing
                    .as_ref()
                    .map(crate::control::spans::SpanExport::start)
                    .transpose()?,
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
        // Listeners are bound (or taken over) only once the regions have been
        // heard from: the first requests are routed on what the probes found.
        let probing = Instant::now();
        let unheard = control.block_on(crate::control::health::first_round(&state));
        let waited_ms = probing.elapsed().as_millis() as u64;
        if unheard.is_empty() {
            tracing::info!(waited_ms, "every region endpoint probed once");
        } else {
            tracing::warn!(waited_ms, endpoints = ?unheard, "serving before these endpoints answered a first probe");
        }
        let inherited = match replaces {
            Some(pid) => handover::take_over(&config.state_dir, pid)?,
            None => handover::Inherited::default(),
        };
        let mut control_listeners = listeners::ControlListeners::new(inherited);
        let mut bound = Bound::default();
        let cl = &mut control_listeners;
        listeners::serve_admin(&control, &config, &state, &reloader, cl, &mut bound)?;
        listeners::serve_metrics(&control, &config, metrics_handle, cl, &mut bound)?;
        let proxy = listeners::Proxy::build(&config, &state, &mut bound, upgrade)?;
        Ok(App {
            control,
            state,
            reloader,
            oplog,
            proxy,
            control_listeners,
            bound,
            grace: config.shutdown_grace,
            state_dir: config.state_dir.clone(),
        })
    }

    /// Where the router listens.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Serves until SIGTERM or SIGINT (SIGHUP reloads) or SIGQUIT (a new
    /// process takes over), then drains and returns.
    pub fn run(self) -> anyhow::Result<()> {
        let close_upgraded = self.proxy.close_upgraded.clone();
        let running = self.proxy.start()?;
        wait_accepting(&self.bound);
        println!("{}", self.bound.ready_line());
        let b = &self.bound;
        tracing::info!(http = ?b.http, https = ?b.https, admin = ?b.admin, metrics = ?b.metrics, "switchyard ready");
        systemd::notify_ready();
        let stopping = loop {
            match self.control.block_on(wait_for_stop(&self.reloader))? {
                Stop::Terminate => {
                    systemd::notify_stopping();
                    break running.stop_accepting();
                }
                Stop::Upgrade => match self.control_listeners.hand_over(&self.state_dir) {
                    Ok(()) => {
                        tracing::info!("listeners handed over; draining");
                        break running.hand_over();
                    }
                    // The new process is gone or never came: keep serving.
                    Err(e) => tracing::error!("upgrade abandoned, still serving: {e:#}"),
                },
            }
        };
        self.control
            .block_on(stopping.closed(listeners::UPGRADE_OVERLAP + Duration::from_secs(10)));
        drain(&self.state, self.grace, &close_upgraded);
        self.control.block_on(self.oplog.flush());
        tracing::info!("op log flushed");
        if let Some(log) = &self.state.access_log {
            log.flush(Duration::from_secs(2));
        }
        if let Some(spans) = &self.state.spans {
            spans.shutdown();
        }
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

/// Pingora binds its listeners in its own thread, after `start` returns:
/// "ready" is said once they take connections (up to 5 s), so a client
/// that starts on the ready line is not refused.
fn wait_accepting(bound: &Bound) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for addr in [bound.http, bound.https].into_iter().flatten() {
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if Instant::now() > deadline {
                tracing::warn!(%addr, "the proxy does not take connections yet");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Serves SIGHUP as a reload; returns on SIGTERM, SIGINT or SIGQUIT.
async fn wait_for_stop(reloader: &Reloader) -> anyhow::Result<Stop> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let stop = loop {
        tokio::select! {
            _ = term.recv() => break Stop::Terminate,
            _ = int.recv() => break Stop::Terminate,
            _ = quit.recv() => break Stop::Upgrade,
            // A failed reload is logged and counted by the reloader; the old config stays.
            _ = hup.recv() => { let _ = reloader.reload().await; }
            // logrotate moved the access log: write a new file at its path.
            _ = usr1.recv() => {
                if let Some(log) = &reloader.state.access_log {
                    log.reopen();
                }
            }
        }
    };
    match stop {
        Stop::Terminate => {
            tracing::info!("stopping: no new connections; draining requests in flight")
        }
        Stop::Upgrade => tracing::info!("a new process asks to take over"),
    }
    Ok(stop)
}

/// Waits for in-flight requests to finish, up to `grace`. Idle connections
/// linger for [`listeners::IDLE_LINGER`] after the listeners close, so a
/// request may still start until then.
fn drain(state: &RouterState, grace: Duration, close_upgraded: &tokio::sync::watch::Sender<bool>) {
    let deadline = Instant::now() + grace;
    let lingering = Instant::now() + listeners::IDLE_LINGER + Duration::from_millis(50);
    let open = || state.connections.get().map_or(0, |c| c.open());
    while (state.inflight() > 0 || (open() > 0 && Instant::now() < lingering))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let websockets = || {
        let topo = state.topology.load();
        topo.regions
            .iter()
            .map(|r| r.live.websockets.load(std::sync::atomic::Ordering::Relaxed))
            .sum::<usize>()
    };
    if websockets() > 0 {
        // Conversations have no end of their own: at the deadline each gets
        // a WebSocket close (1001, going away) both ways, and a moment to go.
        tracing::info!(
            websockets = websockets(),
            "grace period over; closing WebSocket connections with a close frame"
        );
        let _ = close_upgraded.send(true);
        let until = Instant::now() + Duration::from_secs(1);
        while websockets() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let left = state.inflight();
    if left > 0 {
        tracing::warn!(left, "grace period over; abandoning requests in flight");
    } else {
        tracing::info!("drained");
    }
}
