//! The router's shared state: the current topology (swapped whole on reload),
//! the retry budget, and the in-flight count that graceful shutdown waits on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tower::retry::budget::TpsBudget;

use switchyard_config::Percent;

use crate::ownership::OwnershipStore;
use crate::persist::{TrafficState, TrafficStore};
use crate::safety::DialHistory;
use crate::shadow::ShadowTarget;
use crate::topology::Topology;

pub struct RouterState {
    pub topology: ArcSwap<Topology>,
    pub config_path: PathBuf,
    /// Retries allowed as a share of recent requests, so retries cannot amplify an outage.
    pub retry_budget: TpsBudget,
    pub inflight: AtomicUsize,
    /// Serialises reloads; requests never take it.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// The control-plane runtime, where health checks and DNS tasks run.
    pub control: tokio::runtime::Handle,
    /// Operator state that survives restarts: dials, drains, ramps.
    pub traffic: TrafficStore,
    /// Partition owners and epochs, durable in `state_dir`.
    pub ownership: OwnershipStore,
    /// Recent dials, for the `max_dial_step` interlock.
    pub dial_history: DialHistory,
    /// Regions taking shadow reads now (ramps at their synthetic stage).
    pub shadow_active: ArcSwap<Vec<Arc<ShadowTarget>>>,
    /// Every shadow target a ramp has had, by ramp name, with its counters.
    pub shadow_all: Mutex<HashMap<String, Arc<ShadowTarget>>>,
    /// Idempotency keys seen within the window.
    pub idempotency: Arc<crate::idempotency::IdempotencyTable>,
    /// Fleet mode: owners and epochs shared through etcd.
    pub fleet: Option<crate::fleet::Fleet>,
    /// Fleet mode: this router's membership and leadership.
    pub presence: Option<Arc<crate::fleet::Presence>>,
    /// Every write's intent and outcome, and every promotion.
    pub oplog: Option<Arc<crate::oplog::OpLog>>,
}

/// What a router shares with others or with disk beyond its own state.
#[derive(Default)]
pub struct Shared {
    pub fleet: Option<crate::fleet::Fleet>,
    pub presence: Option<Arc<crate::fleet::Presence>>,
    pub oplog: Option<Arc<crate::oplog::OpLog>>,
}

impl RouterState {
    pub fn new(
        topology: Topology,
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
        } = shared;
        let ratio = topology.config.routing.retry_budget as f32;
        restore(&topology, &traffic.snapshot());
        topology.set_owners(&ownership.snapshot());
        Arc::new(RouterState {
            topology: ArcSwap::from_pointee(topology),
            config_path,
            retry_budget: TpsBudget::new(Duration::from_secs(10), 5, ratio),
            inflight: AtomicUsize::new(0),
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
        })
    }

    /// Re-reads the ownership table (from etcd in fleet mode) and makes it current.
    pub async fn refresh_ownership(&self) {
        if let Some(fleet) = &self.fleet {
            match crate::fleet::sync(self, fleet).await {
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
    pub fn ownership_unconfirmed(&self) -> Option<String> {
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
    pub fn apply_rate_shares(&self) {
        let routers = self.presence.as_ref().map_or(1, |p| p.member_count());
        for r in &self.topology.load().regions {
            if let Some(bucket) = &r.rate {
                bucket.set_share(routers);
            }
        }
    }

    pub fn inflight(&self) -> usize {
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
pub struct InflightGuard(Arc<RouterState>);

impl InflightGuard {
    pub fn new(state: &Arc<RouterState>) -> Self {
        state.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(state.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}
