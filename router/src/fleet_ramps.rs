//! Fleet mode: ramp progress shared through etcd. The leader alone drives
//! ramps (its controller judges the gates, moves the dials and publishes each
//! change of a run and of its region's dial); every router watches the runs,
//! so each one's status shows them and any one can start, pause or abort a
//! ramp. A run's key changes only through a transaction comparing its
//! `mod_revision` with the one this router last read, so an operator's pause
//! and the leader's next step cannot overwrite each other.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde_json::Value;
use switchyard_config::Ramp;

use crate::fleet::Fleet;
use crate::ramp::{RampAction, RampRefusal, RampRun};
use crate::state::RouterState;

/// The revision of each run key this router last read or wrote. Its lock
/// also serialises this router's reads and writes of runs, so a watch
/// re-read cannot slip between a change and its publication.
#[derive(Default)]
pub struct RampRevisions(tokio::sync::Mutex<HashMap<String, i64>>);

pub type Revisions<'a> = tokio::sync::MutexGuard<'a, HashMap<String, i64>>;

impl RampRevisions {
    pub async fn lock(&self) -> Revisions<'_> {
        self.0.lock().await
    }
}

impl Fleet {
    fn ramps_prefix(&self) -> String {
        format!("{}/ramps/", self.prefix())
    }

    /// Every published run, with its key's revision.
    async fn ramps(&self) -> anyhow::Result<Vec<(String, RampRun, i64)>> {
        let mut client = self.client();
        let resp = client
            .get(self.ramps_prefix(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let Some(name) = kv.key_str()?.strip_prefix(&self.ramps_prefix()) else {
                continue;
            };
            match serde_json::from_slice::<RampRun>(kv.value()) {
                Ok(run) => out.push((name.to_string(), run, kv.mod_revision())),
                Err(e) => {
                    tracing::warn!(ramp = name, error = %e, "etcd holds a ramp run this router cannot read; ignored")
                }
            }
        }
        Ok(out)
    }

    /// Publishes `run` if its key is still at the revision this router read;
    /// false when another router changed it meanwhile.
    async fn put_ramp(
        &self,
        revisions: &mut Revisions<'_>,
        name: &str,
        run: &RampRun,
    ) -> anyhow::Result<bool> {
        let key = format!("{}{name}", self.ramps_prefix());
        let seen = revisions.get(name).copied().unwrap_or(0);
        let mut client = self.client();
        let resp = client
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, seen)])
                    .and_then([TxnOp::put(key, serde_json::to_vec(run)?, None)]),
            )
            .await?;
        if !resp.succeeded() {
            return Ok(false);
        }
        if let Some(h) = resp.header() {
            revisions.insert(name.to_string(), h.revision());
        }
        Ok(true)
    }
}

/// Takes a published run into this router's state. The hold timer and the
/// gates' baseline are this router's own: kept while the run is on the same
/// step, restarted when it moved.
fn adopt(local: &mut RampRun, remote: RampRun) {
    let same_step = local.state == remote.state
        && local.step == remote.step
        && local.stepping_down == remote.stepping_down;
    if same_step {
        local.reason = remote.reason;
        local.history = remote.history;
    } else {
        *local = remote;
    }
}

/// Reads every published run into this router; the caller holds the lock.
async fn sync_locked(
    state: &RouterState,
    fleet: &Fleet,
    revisions: &mut Revisions<'_>,
) -> anyhow::Result<()> {
    let remote = fleet.ramps().await?;
    state.traffic.update(|t| {
        for (name, run, rev) in remote {
            adopt(t.ramps.entry(name.clone()).or_default(), run);
            revisions.insert(name, rev);
        }
    })?;
    Ok(())
}

/// Reads every published run into this router.
pub async fn sync(state: &RouterState, fleet: &Fleet) -> anyhow::Result<()> {
    let mut revisions = fleet.ramp_revisions().lock().await;
    sync_locked(state, fleet, &mut revisions).await
}

/// An operator's ramp action. In fleet mode it applies to the fleet's run
/// (read fresh), is published before it is answered, and is undone here if
/// it cannot be.
pub async fn act(
    state: &RouterState,
    spec: &Ramp,
    action: RampAction,
) -> Result<Value, RampRefusal> {
    let Some(fleet) = &state.fleet else {
        return crate::ramp::act(state, spec, action);
    };
    let unavailable = |e: anyhow::Error| RampRefusal {
        rule: "etcd",
        message: format!("cannot share the ramp through etcd: {e:#}"),
    };
    let mut revisions = fleet.ramp_revisions().lock().await;
    sync_locked(state, fleet, &mut revisions)
        .await
        .map_err(unavailable)?;
    let before = state.traffic.snapshot().ramps.get(&spec.name).cloned();
    let answer = crate::ramp::act(state, spec, action)?;
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
    let _ = state.traffic.update(|t| match before {
        Some(run) => t.ramps.insert(spec.name.clone(), run),
        None => t.ramps.remove(&spec.name),
    });
    match published {
        Ok(_) => {
            let _ = sync_locked(state, fleet, &mut revisions).await;
            Err(RampRefusal {
                rule: "concurrent_change",
                message: format!(
                    "ramp {} changed through another router meanwhile; look at the status and retry",
                    spec.name
                ),
            })
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// Publishes what the leader's controller changed: the runs named and the
/// dials of their regions. A run another router changed meanwhile is read
/// back instead (the operator's action wins over the controller's tick).
pub async fn publish(
    state: &RouterState,
    fleet: &Fleet,
    revisions: &mut Revisions<'_>,
    changed: &[String],
    dials: &[(String, switchyard_config::Percent)],
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
        if let Err(e) = sync_locked(state, fleet, revisions).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot read ramps from etcd");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ramp::RampState;

    #[test]
    fn adopting_keeps_the_hold_on_the_same_step_only() {
        let run = |step, reason: Option<&str>| {
            let mut r = RampRun::default();
            r.state = RampState::Running;
            r.step = step;
            r.reason = reason.map(String::from);
            r
        };
        let mut local = run(2, None);
        local.step_started = Some(std::time::Instant::now());
        let same = run(2, Some("holding"));
        adopt(&mut local, same);
        assert!(local.step_started.is_some());
        assert_eq!(local.reason.as_deref(), Some("holding"));
        let moved = run(3, None);
        adopt(&mut local, moved);
        assert_eq!(local.step, 3);
        assert!(
            local.step_started.is_none(),
            "a new step starts its own hold"
        );
    }
}
