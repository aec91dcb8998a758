//! Config reload: read and validate the file fully, build the new topology,
//! swap it in. Requests in flight keep the topology they started with; on any
//! error the old config stays and the error is logged and counted.

use std::sync::Arc;

use anyhow::Context;

use hickory_resolver::TokioResolver;

use crate::control::RouterState;
use crate::route::topology::Topology;

pub(crate) struct Reloader {
    pub(crate) state: Arc<RouterState>,
    pub(crate) resolver: Arc<TokioResolver>,
}

impl Reloader {
    pub(crate) async fn reload(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.state.reload_lock.lock().await;
        let result = self.try_reload().await;
        crate::metrics::reload(result.is_ok());
        match &result {
            Ok(()) => tracing::info!(config = %self.state.config_path.display(), "config reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the running config")
            }
        }
        result
    }

    async fn try_reload(&self) -> anyhow::Result<()> {
        let cfg = switchyard_config::load(&self.state.config_path)?;
        let old = self.state.topology.load_full();
        if cfg.listen.http != old.config.listen.http
            || cfg.listen.https.as_ref().map(|h| h.addr)
                != old.config.listen.https.as_ref().map(|h| h.addr)
        {
            tracing::warn!("listener addresses changed; they take effect on restart");
        }
        let topo = Topology::build(Arc::new(cfg), Some(&old), &self.state.secrets)?;
        self.state.ownership.seed(&topo.config)?;
        if let Some(fleet) = &self.state.fleet {
            // Partitions the new config names join the fleet's table (each
            // created only if no router has made it yet), and the fleet's
            // table stays the one this router uses.
            fleet
                .seed(&self.state.ownership.snapshot())
                .await
                .context("coordination.etcd: cannot add the new config's partitions")?;
            let table = fleet
                .load()
                .await
                .context("coordination.etcd: cannot read owners")?;
            self.state.ownership.replace(table)?;
        }
        topo.set_owners(&self.state.ownership.snapshot());
        self.state.topology.store(Arc::new(topo));
        self.state.apply_rate_shares();
        crate::control::health::start_tasks(&self.state, &self.resolver);
        Ok(())
    }
}
