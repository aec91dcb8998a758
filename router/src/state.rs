//! The router's shared state: the current topology (swapped whole on reload),
//! the retry budget, and the in-flight count that graceful shutdown waits on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tower::retry::budget::TpsBudget;

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
}

impl RouterState {
    pub fn new(
        topology: Topology,
        config_path: PathBuf,
        control: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let ratio = topology.config.routing.retry_budget as f32;
        Arc::new(RouterState {
            topology: ArcSwap::from_pointee(topology),
            config_path,
            retry_budget: TpsBudget::new(Duration::from_secs(10), 5, ratio),
            inflight: AtomicUsize::new(0),
            reload_lock: tokio::sync::Mutex::new(()),
            control,
        })
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
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
