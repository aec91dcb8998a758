//! Fleet mode, the router's side: keeps this router's owners, dials and ramp
//! runs in step with what etcd holds (read through `fleet`), keeps its
//! membership (and with it its share of each rate limit), and shares ramp
//! actions. The leader alone drives ramps: its controller judges the gates,
//! moves the dials and publishes each change of a run and of its region's
//! dial; every router watches the runs, so each one's status shows them and
//! any one can start, pause or abort a ramp.

use std::sync::Arc;

use serde_json::Value;
use switchyard_config::{Percent, Ramp};

use crate::control::error::ControlError;
use crate::control::ramp::RampAction;
use crate::control::RouterState;
use crate::fleet::presence::Presence;
use crate::fleet::ramps::Revisions;
use crate::fleet::Fleet;
use crate::store::traffic::RampRecord;

/// Starts the loops that keep this router in step with the fleet.
pub(crate) fn start(
    state: &Arc<RouterState>,
    fleet: &Fleet,
    presence: &Arc<Presence>,
    lease_ttl: std::time::Duration,
) {
    let control = &state.control;
    for what in [Watched::Owners, Watched::Dials, Watched::Ramps] {
        let (state, fleet) = (state.clone(), fleet.clone());
        control.spawn(async move {
            let prefix = what.prefix(&fleet);
            fleet
                .watch_prefix(prefix, || what.sync(&state, &fleet))
                .await
        });
    }
    control.spawn(crate::control::fleet_demand::run(
        state.clone(),
        fleet.clone(),
        presence.clone(),
    ));
    let shares = state.clone();
    control.spawn(crate::fleet::presence::keep_presence(
        fleet.clone(),
        presence.clone(),
        lease_ttl,
        move || shares.apply_rate_shares(),
    ));
}

/// What a watch keeps in step with etcd.
#[derive(Debug, Clone, Copy)]
enum Watched {
    Owners,
    Dials,
    Ramps,
}

impl Watched {
    fn prefix(self, fleet: &Fleet) -> String {
        match self {
            Watched::Owners => fleet.owners_prefix(),
            Watched::Dials => fleet.dials_prefix(),
            Watched::Ramps => fleet.ramps_prefix(),
        }
    }

    async fn sync(self, state: &RouterState, fleet: &Fleet) {
        let (result, what) = match self {
            Watched::Owners => (sync_owners(state, fleet).await, "owners"),
            Watched::Dials => (sync_dials(state, fleet).await, "dials"),
            Watched::Ramps => (sync_ramps(state, fleet).await, "ramps"),
        };
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "cannot read {what} from etcd");
        }
    }
}

/// Reads the fleet's ownership table into this router: the local store and
/// the hot path's index.
pub(crate) async fn sync_owners(state: &RouterState, fleet: &Fleet) -> anyhow::Result<()> {
    let table = fleet.load().await?;
    state.ownership.replace(table)?;
    state
        .topology
        .load()
        .set_owners(&state.ownership.snapshot());
    Ok(())
}

/// Applies the fleet's dials to this router's regions.
async fn sync_dials(state: &RouterState, fleet: &Fleet) -> anyhow::Result<()> {
    let dials = fleet.dials().await?;
    let topo = state.topology.load();
    for r in &topo.regions {
        let Some(p) = dials
            .get(r.spec.name.as_str())
            .and_then(|t| Percent::from_tenths(*t))
        else {
            continue;
        };
        if r.live.dial() != p {
            r.live.set_dial(p);
            r.live.publish_gauges(&r.spec.name);
            tracing::info!(region = %r.spec.name, dial = %p, "dial set through the fleet");
        }
    }
    Ok(())
}

/// Takes a published run into this router's record; true when it is on the
/// same step as before, so the step's clock (hold and gate baseline, this
/// router's own) carries on, false when it moved and the clock restarts.
fn adopt(local: &mut RampRecord, remote: RampRecord) -> bool {
    let same_step = local.state == remote.state
        && local.step == remote.step
        && local.stepping_down == remote.stepping_down;
    if same_step {
        local.reason = remote.reason;
        local.history = remote.history;
    } else {
        *local = remote;
    }
    same_step
}

/// Reads every published run into this router; the caller holds the lock.
async fn sync_ramps_locked(
    state: &RouterState,
    fleet: &Fleet,
    revisions: &mut Revisions<'_>,
) -> anyhow::Result<()> {
    let remote = fleet.ramps().await?;
    state.traffic.update(|t| {
        for (name, run, rev) in remote {
            if !adopt(t.ramps.entry(name.clone()).or_default(), run) {
                state.ramp_clocks.restart(&name);
            }
            revisions.insert(name, rev);
        }
    })?;
    Ok(())
}

/// Reads every published run into this router.
async fn sync_ramps(state: &RouterState, fleet: &Fleet) -> anyhow::Result<()> {
    let mut revisions = fleet.ramp_revisions().lock().await;
    sync_ramps_locked(state, fleet, &mut revisions).await
}

/// An operator's ramp action. In fleet mode it applies to the fleet's run
/// (read fresh), is published before it is answered, and is undone here if
/// it cannot be.
pub(crate) async fn act_on_ramp(
    state: &RouterState,
    spec: &Ramp,
    action: RampAction,
) -> Result<Value, ControlError> {
    let Some(fleet) = &state.fleet else {
        return crate::control::ramp::act(state, spec, action);
    };
    let unavailable = |e: anyhow::Error| {
        ControlError::Unavailable(format!("cannot share the ramp through etcd: {e:#}"))
    };
    let mut revisions = fleet.ramp_revisions().lock().await;
    sync_ramps_locked(state, fleet, &mut revisions)
        .await
        .map_err(unavailable)?;
    let before = state.traffic.snapshot().ramps.get(&spec.name).cloned();
    let answer = crate::control::ramp::act(state, spec, action)?;
    let after = state
        .traffic
        .snapshot()
        .ramps
        .get(&spec.name)
        .cloned()
        .unwrap_or_default();
    let published = fleet.put_ramp(&mut revisions, &spec.name, &after).await;
    if matches!(published, Ok(true)) {
        return Ok(answer);
    }
    let rollback = state.traffic.update(|t| match before {
        Some(run) => t.ramps.insert(spec.name.clone(), run),
        None => t.ramps.remove(&spec.name),
    });
    if let Err(e) = rollback {
        tracing::error!(ramp = %spec.name, error = %format!("{e:#}"), "the fleet refused a ramp action and undoing it here could not be saved; the saved state may show the refused action until the next sync");
    }
    match published {
        Ok(_) => {
            if let Err(e) = sync_ramps_locked(state, fleet, &mut revisions).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot read ramps from etcd");
            }
            Err(ControlError::refused(
                "concurrent_change",
                format!(
                    "ramp {} changed through another router meanwhile; look at the status and retry",
                    spec.name
                ),
            ))
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// Publishes what the leader's controller changed: the runs named and the
/// dials of their regions. A run another router changed meanwhile is read
/// back instead (the operator's action wins over the controller's tick).
pub(crate) async fn publish_ramps(
    state: &RouterState,
    fleet: &Fleet,
    revisions: &mut Revisions<'_>,
    changed: &[String],
    dials: &[(String, Percent)],
) {
    let runs = state.traffic.snapshot().ramps;
    let mut stale = false;
    for name in changed {
        let Some(run) = runs.get(name) else { continue };
        match fleet.put_ramp(revisions, name, run).await {
            Ok(true) => {}
            Ok(false) => stale = true,
            Err(e) => {
                tracing::warn!(ramp = %name, error = %format!("{e:#}"), "cannot publish ramp progress")
            }
        }
    }
    for (region, dial) in dials {
        if let Err(e) = fleet.put_dial(region, *dial).await {
            tracing::warn!(%region, error = %format!("{e:#}"), "cannot publish a ramp's dial");
        }
    }
    if stale {
        if let Err(e) = sync_ramps_locked(state, fleet, revisions).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot read ramps from etcd");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::traffic::RampState;

    #[test]
    fn adopting_keeps_the_clock_on_the_same_step_only() {
        let run = |step, reason: Option<&str>| RampRecord {
            state: RampState::Running,
            step,
            reason: reason.map(String::from),
            ..RampRecord::default()
        };
        let mut local = run(2, None);
        assert!(adopt(&mut local, run(2, Some("holding"))));
        assert_eq!(local.reason.as_deref(), Some("holding"));
        assert!(
            !adopt(&mut local, run(3, None)),
            "a new step starts its own hold"
        );
        assert_eq!(local.step, 3);
        let mut paused = run(3, None);
        paused.state = RampState::Paused;
        assert!(!adopt(&mut local, paused));
        assert_eq!(local.state, RampState::Paused);
    }
}
