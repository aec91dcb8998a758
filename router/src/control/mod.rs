//! The control plane: the router's shared state (the current topology,
//! swapped whole on reload; the stores; the retry budget; the in-flight
//! count that graceful shutdown waits on) and the loops and state machines
//! that change it: health checks and DNS, brownout ejection, ramps, shadow
//! reads, promotion, reload, the safety interlocks, and the fleet's sync.

pub(crate) mod adaptive;
pub(crate) mod at_risk;
pub(crate) mod dns;
pub(crate) mod error;
pub(crate) mod fleet_demand;
pub(crate) mod fleet_sync;
pub(crate) mod health;
pub(crate) mod idempotency;
pub(crate) mod outlier;
pub(crate) mod promote;
pub(crate) mod ramp;
pub(crate) mod region_client;
pub(crate) mod reload;
pub(crate) mod repair;
pub(crate) mod safety;
pub(crate) mod series;
pub(crate) mod shadow;
pub(crate) mod spans;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tower::retry::budget::TpsBudget;

use switchyard_config::Percent;

use crate::control::ramp::StepClocks;
use crate::control::safety::DialHistory;
use crate::route::shadow::ShadowTarget;
use crate::route::topology::{Secrets, Topology};
use crate::store::ownership::OwnershipStore;
use crate::store::traffic::{TrafficState, TrafficStore};

pub(crate) struct RouterState {
    pub(crate) topology: ArcSwap<Topology>,
    /// The secrets every topology generation is built with.
    pub(crate) secrets: Secrets,
    pub(crate) config_path: PathBuf,
    /// Retries allowed as a share of recent requests, so retries cannot amplify an outage.
    pub(crate) retry_budget: TpsBudget,
    pub(crate) inflight: AtomicUsize,
    /// Writes whose body the edge is reading ahead (their owner looked up).
    pub(crate) writes_reading_body: AtomicUsize,
    /// Serialises reloads; requests never take it.
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    /// The control-plane runtime, where health checks and DNS tasks run.
    pub(crate) control: tokio::runtime::Handle,
    /// Operator state that survives restarts: dials, drains, ramps.
    pub(crate) traffic: TrafficStore,
    /// Each ramp's running step clock (not saved).
    pub(crate) ramp_clocks: StepClocks,
    /// Partition owners and epochs, durable in `state_dir`.
    pub(crate) ownership: OwnershipStore,
    /// Recent dials, for the `max_dial_step` interlock.
    pub(crate) dial_history: DialHistory,
    /// Regions taking shadow reads now (ramps at their synthetic stage).
    pub(crate) shadow_active: ArcSwap<Vec<Arc<ShadowTarget>>>,
    /// Every shadow target a ramp has had, by ramp name, with its counters.
    pub(crate) shadow_all: Mutex<HashMap<String, Arc<ShadowTarget>>>,
    /// Idempotency keys seen within the window.
    pub(crate) idempotency: Arc<crate::control::idempotency::IdempotencyTable>,
    /// Fleet mode: owners and epochs shared through etcd.
    pub(crate) fleet: Option<crate::fleet::Fleet>,
    /// Fleet mode: this router's membership and leadership.
    pub(crate) presence: Option<Arc<crate::fleet::presence::Presence>>,
    /// Every write's intent and outcome, and every promotion.
    pub(crate) oplog: Option<Arc<crate::store::oplog::OpLog>>,
    /// The proxy's open client connections and its limit (set once it is built).
    pub(crate) connections: std::sync::OnceLock<Arc<pingora::services::listening::ConnectionLimit>>,
    /// One JSON line per request, when `access_log` is configured.
    pub(crate) access_log: Option<crate::store::access_log::AccessLogWriter>,
    /// Spans sent over OTLP, when `tracing` is configured.
    pub(crate) spans: Option<spans::SpanExport>,
    /// The last minutes of traffic per region, for the console.
    pub(crate) series: series::Series,
    /// Repair on read: each failover's window, and the replays made.
    pub(crate) repairs: repair::Repairs,
}

/// What a router shares with others or with disk beyond its own state.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) fleet: Option<crate::fleet::Fleet>,
    pub(crate) presence: Option<Arc<crate::fleet::presence::Presence>>,
    pub(crate) oplog: Option<Arc<crate::store::oplog::OpLog>>,
    pub(crate) access_log: Option<crate::store::access_log::AccessLogWriter>,
    pub(crate) spans: Option<spans::SpanExport>,
}

impl RouterState {
    pub(crate) fn new(
        topology: Topology,
        secrets: Secrets,
        config_path: PathBuf,
        control: tokio::runtime::Handle,
        traffic: TrafficStore,
        ownership: OwnershipStore,
        shared: Shared,
    ) -> Arc<Self> {
        let Shared {
            fleet,
            presence,
            oplog,
            access_log,
            spans,
        } = shared;
        let ratio = topology.config.routing.retry_budget as f32;
        restore(&topology, &traffic.snapshot());
        topology.set_owners(&ownership.snapshot());
        Arc::new(RouterState {
            topology: ArcSwap::from_pointee(topology),
            secrets,
            ramp_clocks: StepClocks::default(),
            config_path,
            retry_budget: TpsBudget::new(Duration::from_secs(10), 5, ratio),
            inflight: AtomicUsize::new(0),
            writes_reading_body: AtomicUsize::new(0),
            reload_lock: tokio::sync::Mutex::new(()),
            control,
            traffic,
            ownership,
            dial_history: DialHistory::default(),
            shadow_active: ArcSwap::from_pointee(Vec::new()),
            shadow_all: Mutex::new(HashMap::new()),
            idempotency: Arc::default(),
            presence,
            fleet,
            oplog,
            connections: std::sync::OnceLock::new(),
            access_log,
            spans,
            series: series::Series::default(),
            repairs: repair::Repairs::default(),
        })
    }

    /// Re-reads the ownership table (from etcd in fleet mode) and makes it current.
    pub(crate) async fn refresh_ownership(&self) {
        if let Some(fleet) = &self.fleet {
            match fleet_sync::sync_owners(self, fleet).await {
                Ok(()) => tracing::warn!("a region fenced a write; ownership re-read from etcd"),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot refresh ownership from etcd")
                }
            }
            return;
        }
        match self.ownership.refresh() {
            Ok(()) => {
                self.topology.load().set_owners(&self.ownership.snapshot());
                tracing::warn!("a region fenced a write; ownership refreshed");
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot refresh ownership"),
        }
    }

    /// Fleet mode: why writes cannot be taken now (etcd silent past the grace).
    pub(crate) fn ownership_unconfirmed(&self) -> Option<String> {
        let presence = self.presence.as_ref()?;
        let grace = self.topology.load().config.etcd.as_ref()?.write_grace;
        match presence.silence() {
            Some(s) if s <= grace => None,
            Some(s) => Some(format!(
                "cannot confirm ownership: etcd has not answered for {} ms (grace {} ms)",
                s.as_millis(),
                grace.as_millis()
            )),
            None => Some("cannot confirm ownership: etcd has not answered yet".into()),
        }
    }

    /// Gives every rate-limited region this router's share of its limit:
    /// one over the fleet's live members (the whole limit outside fleet mode).
    pub(crate) fn apply_rate_shares(&self) {
        let routers = self.presence.as_ref().map_or(1, |p| p.member_count());
        for r in &self.topology.load().regions {
            if let Some(bucket) = &r.rate {
                bucket.set_share(routers);
            }
        }
    }

    pub(crate) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// Puts back what operators set before a restart: dials (unless the config's
/// dial for that region changed since), drains.
fn restore(topo: &Topology, saved: &TrafficState) {
    for r in &topo.regions {
        let name = r.spec.name.as_str();
        if let Some(o) = saved.dials.get(name) {
            if o.config_tenths == r.spec.dial.tenths() {
                if let Some(p) = Percent::from_tenths(o.tenths) {
                    r.live.set_dial(p);
                    tracing::info!(region = name, dial = %p, "dial restored from the state directory");
                }
            }
        }
        if saved.drained.contains(name) {
            r.live.draining.store(true, Ordering::Relaxed);
            tracing::info!(region = name, "region still drained, as before the restart");
        }
    }
}

/// Counts a request in flight for as long as it lives.
pub(crate) struct InflightGuard(Arc<RouterState>);

impl InflightGuard {
    pub(crate) fn new(state: &Arc<RouterState>) -> Self {
        state.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(state.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one in a gauge for as long as it lives.
pub(crate) struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    pub(crate) fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps the client-connection metrics current, once a second.
/// Once a second: the gauges read from state rather than set where it
/// changes (client connections, whether the op log can write).
async fn export_gauges(state: Arc<RouterState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Some(c) = state.connections.get() {
            crate::metrics::client_connections(c.open(), c.refused());
        }
        if let Some(log) = &state.oplog {
            crate::metrics::oplog_writable(log.unavailable().is_none());
        }
    }
}

/// Starts the control loops on the control runtime: health checks and DNS
/// for every endpoint, ramps, brownout detection, automatic promotion, and
/// the idempotency table's expiry.
pub(crate) fn start_loops(state: &Arc<RouterState>, reloader: &reload::Reloader) {
    {
        let _enter = state.control.enter();
        health::start_tasks(state, &reloader.resolver);
    }
    state.control.spawn(export_gauges(state.clone()));
    state.control.spawn(series::run_sampler(state.clone()));
    state.control.spawn(ramp::run_controller(state.clone()));
    state.control.spawn(outlier::run_detector(state.clone()));
    state.control.spawn(adaptive::run(state.clone()));
    state
        .control
        .spawn(promote::run_auto_promoter(state.clone()));
    let expire = state.clone();
    state.control.spawn(async move {
        // Often and in batches: expiry never sweeps the whole table at once.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let window = expire.topology.load().config.consistency.idempotency_window;
            while expire.idempotency.expire(window) > 0 {
                tokio::task::yield_now().await;
            }
            crate::metrics::idempotency_keys(expire.idempotency.len());
        }
    });
}
