//! Promotion: move a partition's ownership to another region and raise its
//! epoch by one, durably, before any write uses it. Manual (admin API, `ctl
//! promote`) with rules a target must pass, and automatic when the owner has
//! been unhealthy for `consistency.auto_promote.after`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use switchyard_config::RegionKind;

use crate::control::at_risk::OwnerWrites;
use crate::control::error::ControlError;
use crate::control::RouterState;
use crate::fleet::FleetError;
use crate::route::owners::{OwnershipTable, PromotionRecord, Terms};
use crate::route::topology::{RegionIdx, Topology};

/// `POST /admin/v1/promote`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PromoteRequest {
    /// A partition, `default`, or `*` for every partition.
    pub(crate) partition: String,
    /// The target; a dry run without one previews every candidate.
    #[serde(default)]
    pub(crate) to: Option<String>,
    /// Overrides the health, drain, lag and writes-at-risk rules (never
    /// read-only or residency).
    #[serde(default)]
    pub(crate) force: bool,
    /// Change nothing; answer what the promotion would strand and whether
    /// the rules allow it.
    #[serde(default)]
    pub(crate) dry_run: bool,
    /// Promote only while each partition is still at this epoch, the one
    /// the caller read: a promotion made in between (by another router, an
    /// operator or the automatic promoter) refuses this one
    /// (`concurrent_promotion`) instead of moving the owner again.
    #[serde(default)]
    pub(crate) if_epoch: Option<u64>,
}

/// How a promotion was asked for.
pub(crate) struct Asked<'a> {
    /// `manual`, or why the automatic promoter acted.
    pub(crate) reason: &'a str,
    /// Past the health, drain, lag and writes-at-risk rules.
    pub(crate) forced: bool,
    /// Only while every partition is still at this epoch.
    pub(crate) if_epoch: Option<u64>,
}

/// `concurrent_promotion` when a partition in `seen` has moved past the
/// epoch the caller read.
fn epoch_moved(
    seen: &OwnershipTable,
    partitions: &[String],
    if_epoch: Option<u64>,
) -> Option<ControlError> {
    let read = if_epoch?;
    partitions.iter().find_map(|p| {
        let (_, owner) = seen.owner(Some(p))?;
        (owner.epoch != read).then(|| {
            ControlError::refused(
                "concurrent_promotion",
                format!(
                    "partition {p} is at epoch {} now, not {read}: its owner changed since it was read; read the status and retry",
                    owner.epoch
                ),
            )
        })
    })
}

/// Why `to` may not own `partitions` now; `None` when it may.
pub(crate) fn refusal(
    topo: &Topology,
    partitions: &[String],
    to: RegionIdx,
    force: bool,
) -> Option<ControlError> {
    let r = &topo.regions[to as usize];
    let name = r.spec.name.as_str();
    let c = &topo.config.consistency;
    if r.spec.kind == RegionKind::ReadOnly {
        return Some(ControlError::refused(
            "read_only",
            format!("{name} is a read-only region and cannot own writes"),
        ));
    }
    for p in partitions {
        if let Some(zone) = c.partition_residency.get(p) {
            if r.spec.data_residency.as_deref() != Some(zone.as_str()) {
                return Some(ControlError::refused(
                    "residency",
                    format!(
                        "partition {p} must stay in residency zone {zone}; {name} is in {}",
                        r.spec.data_residency.as_deref().unwrap_or("no zone")
                    ),
                ));
            }
        }
    }
    let owners = topo.owners.load();
    if partitions
        .iter()
        .all(|p| owners.get(Some(p)).map(|o| o.0) == Some(to))
    {
        return Some(ControlError::refused(
            "already_owner",
            format!("{name} already owns {}", partitions.join(", ")),
        ));
    }
    if force {
        return None;
    }
    if !r.live.is_healthy() {
        return Some(ControlError::refused(
            "unhealthy",
            format!("{name} is unhealthy (use force to promote anyway)"),
        ));
    }
    if r.live.is_draining() {
        return Some(ControlError::refused(
            "drained",
            format!("{name} is drained (use force to promote anyway)"),
        ));
    }
    let Some(lag) = r
        .live
        .lag_within(report_max_age(&r.spec), crate::route::live::now_nanos())
    else {
        return Some(ControlError::refused(
            "lag_unknown",
            format!(
                "{name} has not reported its replica lag lately (replica_lag_ms in its health answer): nobody knows which writes it lacks (use force to promote anyway)"
            ),
        ));
    };
    let lag = Duration::from_millis(lag);
    if lag > c.promotion.max_lag {
        return Some(ControlError::refused(
            "lag",
            format!(
                "{name} lags {} ms, more than consistency.promotion.max_lag ({} ms); promoting it would lose the writes in between (use force to promote anyway)",
                lag.as_millis(),
                c.promotion.max_lag.as_millis()
            ),
        ));
    }
    None
}

/// How old a region's last lag report may be to count as known (to promote
/// by, and in status): a few of its health intervals. A region that reports
/// no lag is never trusted to have caught up.
pub(crate) fn report_max_age(spec: &switchyard_config::Region) -> Duration {
    (spec.health.interval * 3).max(Duration::from_secs(1))
}

/// The partitions a request names: `*` is every partition in the table.
fn partitions_of(state: &RouterState, partition: &str) -> Vec<String> {
    if partition == "*" {
        state.ownership.snapshot().partitions.into_keys().collect()
    } else {
        vec![partition.to_string()]
    }
}

fn region_index(topo: &Topology, name: &str) -> Result<RegionIdx, ControlError> {
    topo.index_of(name).ok_or_else(|| {
        let known: Vec<&str> = topo.regions.iter().map(|r| r.spec.name.as_str()).collect();
        ControlError::NotFound(format!(
            "no region {name:?}; configured: {}",
            known.join(", ")
        ))
    })
}

/// The `writes_at_risk` rule: more stranded writes than
/// `consistency.promotion.max_writes_at_risk` allows, unless forced.
fn too_many_at_risk(
    topo: &Topology,
    to: RegionIdx,
    at_risk: u64,
    force: bool,
) -> Option<ControlError> {
    let max = topo.config.consistency.promotion.max_writes_at_risk?;
    (at_risk > max && !force).then(|| {
        ControlError::refused(
            "writes_at_risk",
            format!(
                "promoting {} would strand {at_risk} acknowledged writes it has not applied, more than consistency.promotion.max_writes_at_risk ({max}); see them with dry_run (use force to promote anyway)",
                topo.name(to)
            ),
        )
    })
}

/// Promotes; returns the records written.
pub(crate) async fn promote(
    state: &RouterState,
    req: &PromoteRequest,
    reason: &str,
) -> Result<Vec<PromotionRecord>, ControlError> {
    // Promotions and reloads both rebuild the owner index: one at a time.
    let _one_at_a_time = state.reload_lock.lock().await;
    let topo = state.topology.load_full();
    let Some(to) = req.to.as_deref() else {
        return Err(ControlError::refused(
            "no_target",
            "name the region to promote (\"to\"), or ask for a dry run to compare candidates",
        ));
    };
    let to = region_index(&topo, to)?;
    let partitions = partitions_of(state, &req.partition);
    if let Some(refused) = refusal(&topo, &partitions, to, req.force) {
        return Err(refused);
    }
    // Counted whenever the log can be read; needed when the rule is set.
    let at_risk = match OwnerWrites::read(state, &partitions).await {
        Ok(w) => Some(w.worst(&topo, &partitions, to)),
        Err(e)
            if topo
                .config
                .consistency
                .promotion
                .max_writes_at_risk
                .is_some()
                && !req.force =>
        {
            return Err(e)
        }
        Err(e) => {
            tracing::warn!(error = %e, "writes at risk not counted for this promotion");
            None
        }
    };
    if let Some(refused) = at_risk.and_then(|n| too_many_at_risk(&topo, to, n, req.force)) {
        return Err(refused);
    }
    if req.force && at_risk.is_some_and(|n| n > 0) {
        tracing::warn!(
            to = topo.name(to),
            writes_at_risk = at_risk,
            "FORCED promotion strands acknowledged writes; the reconciler replays what it can"
        );
    }
    let asked = Asked {
        reason,
        forced: req.force,
        if_epoch: req.if_epoch,
    };
    apply(state, &topo, &partitions, to, &asked, at_risk).await
}

/// A dry run: for each partition and the named target (or every full region
/// that does not own it), what the promotion would strand and whether the
/// rules allow it. Changes nothing.
pub(crate) async fn preview(
    state: &RouterState,
    req: &PromoteRequest,
) -> Result<serde_json::Value, ControlError> {
    let started = Instant::now();
    let topo = state.topology.load_full();
    let named = req
        .to
        .as_deref()
        .map(|t| region_index(&topo, t))
        .transpose()?;
    let partitions = partitions_of(state, &req.partition);
    let writes = OwnerWrites::read(state, &partitions).await?;
    let owners = topo.owners.load();
    let mut out = Vec::new();
    for p in &partitions {
        let owner = owners.get(Some(p)).map(|o| o.0);
        let targets: Vec<RegionIdx> = match named {
            Some(t) => vec![t],
            None => (0..topo.regions.len() as RegionIdx)
                .filter(|i| Some(*i) != owner)
                .filter(|i| topo.regions[*i as usize].spec.kind != RegionKind::ReadOnly)
                .collect(),
        };
        for to in targets {
            let Some(e) = writes.exposure(&topo, p, to) else {
                continue;
            };
            let refused = refusal(&topo, std::slice::from_ref(p), to, req.force)
                .or_else(|| too_many_at_risk(&topo, to, e.writes_at_risk, req.force));
            let mut v =
                serde_json::to_value(&e).map_err(|e| ControlError::Internal(e.to_string()))?;
            v["allowed"] = refused.is_none().into();
            v["rule"] = refused.as_ref().and_then(|r| r.rule()).into();
            v["reason"] = refused.map(|r| r.to_string()).into();
            v["lag_ms"] = topo.regions[to as usize]
                .live
                .lag_ms
                .load(Ordering::Relaxed)
                .into();
            out.push(v);
        }
    }
    Ok(serde_json::json!({
        "dry_run": true,
        "scope": writes.scope,
        "partitions": out,
        "problems": writes.problems,
        "took_ms": (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
    }))
}

async fn apply(
    state: &RouterState,
    topo: &Topology,
    partitions: &[String],
    to: RegionIdx,
    asked: &Asked<'_>,
    writes_at_risk: Option<u64>,
) -> Result<Vec<PromotionRecord>, ControlError> {
    let Asked {
        reason,
        forced,
        if_epoch,
    } = *asked;
    let target = &topo.regions[to as usize];
    let applied = target.live.applied_position.load(Ordering::Relaxed);
    let name = target.spec.name.as_str();
    let terms = Terms {
        applied_position: applied,
        forced,
        reason,
        writes_at_risk,
    };
    // The view a fleet's transaction compares against: a promotion landing
    // after it fails the transaction. Alone, this router changes its table
    // only under the reload lock, which the caller holds.
    let seen = state.ownership.snapshot();
    if let Some(refused) = epoch_moved(&seen, partitions, if_epoch) {
        return Err(refused);
    }
    let records = match &state.fleet {
        None => state
            .ownership
            .promote(partitions, name, &terms)
            .map_err(|e| ControlError::Internal(format!("{e:#}")))?,
        Some(fleet) => {
            let hold = topo
                .config
                .etcd
                .as_ref()
                .map_or(std::time::Duration::ZERO, |e| e.write_grace + e.lease_ttl);
            let records = fleet
                .promote(&seen, partitions, name, &terms, hold)
                .await
                .map_err(|e| match e {
                    FleetError::Conflict => ControlError::refused(
                        "concurrent_promotion",
                        "another router changed this partition's owner first; read the status and retry",
                    ),
                    FleetError::Etcd(e) => ControlError::Unavailable(format!(
                        "etcd did not take the promotion: {e:#}"
                    )),
                })?;
            crate::control::fleet_sync::sync_owners(state, fleet)
                .await
                .map_err(|e| ControlError::Unavailable(format!("{e:#}")))?;
            records
        }
    };
    topo.set_owners(&state.ownership.snapshot());
    for r in &records {
        if forced {
            tracing::warn!(partition = %r.partition, from = %r.from, to = %r.to, epoch = r.to_epoch, reason, "FORCED promotion past the safety rules");
        } else {
            tracing::warn!(partition = %r.partition, from = %r.from, to = %r.to, epoch = r.to_epoch, reason, "promoted");
        }
        crate::metrics::promotion(if reason == "manual" { "manual" } else { "auto" });
        if let Some(log) = &state.oplog {
            let record = switchyard_oplog::Record::Promotion(switchyard_oplog::Promotion {
                at_ms: r.at_ms,
                edge_id: log.edge_id.clone(),
                partition: r.partition.clone(),
                from: r.from.clone(),
                to: r.to.clone(),
                from_epoch: r.from_epoch,
                to_epoch: r.to_epoch,
                applied_position: r.applied_position,
                forced: r.forced,
                reason: r.reason.clone(),
            });
            let logged = async { log.durable(crate::store::oplog::encode(&record)?).await };
            if let Err(e) = logged.await {
                // The promotion holds (it is in the ownership table); the
                // reconciler will not see it in this log.
                tracing::error!(partition = %r.partition, error = %e, "promotion not recorded in the op log");
            }
        }
    }
    Ok(records)
}

/// Automatic promotion, on the control runtime: when an owner has been
/// unhealthy for `after`, the least-lagged eligible full region takes its
/// partitions.
pub(crate) async fn run_auto_promoter(state: Arc<RouterState>) {
    let mut down_since: HashMap<String, Instant> = HashMap::new();
    // When each down owner's writes were last read from the op log.
    let mut last_scan: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let topo = state.topology.load_full();
        let Some(auto) = topo.config.consistency.auto_promote else {
            continue;
        };
        // In a fleet, only the leader promotes on its own.
        if state.presence.as_ref().is_some_and(|p| !p.is_leader()) {
            down_since.clear();
            continue;
        }
        let table = state.ownership.snapshot();
        // Owner region → the partitions it owns.
        let mut by_owner: HashMap<String, Vec<String>> = HashMap::new();
        for (p, o) in &table.partitions {
            by_owner
                .entry(o.region.clone())
                .or_default()
                .push(p.clone());
        }
        for (owner, partitions) in by_owner {
            let healthy = topo.region(&owner).is_some_and(|r| r.live.is_healthy());
            if healthy {
                down_since.remove(&owner);
                last_scan.remove(&owner);
                continue;
            }
            let since = *down_since.entry(owner.clone()).or_insert_with(Instant::now);
            if since.elapsed() < auto.after {
                continue;
            }
            // Only regions whose lag is known (and small enough) are candidates.
            let known_lag = |i: RegionIdx| {
                let r = &topo.regions[i as usize];
                r.live
                    .lag_within(report_max_age(&r.spec), crate::route::live::now_nanos())
            };
            let eligible: Vec<RegionIdx> = (0..topo.regions.len() as RegionIdx)
                .filter(|i| topo.name(*i) != owner)
                .filter(|i| topo.regions[*i as usize].spec.kind == RegionKind::Full)
                .filter(|i| known_lag(*i).is_some_and(|l| Duration::from_millis(l) <= auto.max_lag))
                .filter(|i| refusal(&topo, &partitions, *i, false).is_none())
                .collect();
            // Fewest acknowledged writes stranded first, then least lag; a
            // log that cannot be read leaves lag alone to choose. The log is
            // read only when there is a candidate, and at most once a second
            // while none passes the writes-at-risk rule.
            if eligible.is_empty()
                || last_scan
                    .get(&owner)
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                if eligible.is_empty() && since.elapsed() < auto.after + Duration::from_millis(300)
                {
                    tracing::error!(
                        owner,
                        "owner unhealthy, and no region is eligible for automatic promotion"
                    );
                }
                continue;
            }
            last_scan.insert(owner.clone(), Instant::now());
            let writes = match OwnerWrites::read(&state, &partitions).await {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(error = %e, "automatic promotion chooses by lag alone");
                    None
                }
            };
            let at_risk = |i: RegionIdx| writes.as_ref().map(|w| w.worst(&topo, &partitions, i));
            let candidate = eligible
                .iter()
                .copied()
                .filter(|i| {
                    at_risk(*i).is_none_or(|n| too_many_at_risk(&topo, *i, n, false).is_none())
                })
                .min_by_key(|i| (at_risk(*i).unwrap_or(0), known_lag(*i).unwrap_or(u64::MAX)));
            let Some(to) = candidate else {
                tracing::error!(
                    owner,
                    "owner unhealthy, and every eligible region would strand more acknowledged writes than max_writes_at_risk"
                );
                continue;
            };
            let reason = format!(
                "auto: {owner} unhealthy for {:.1}s",
                since.elapsed().as_secs_f64()
            );
            let _one_at_a_time = state.reload_lock.lock().await;
            let stranded = at_risk(to);
            let asked = Asked {
                reason: &reason,
                forced: false,
                if_epoch: None,
            };
            if let Err(e) = apply(&state, &topo, &partitions, to, &asked, stranded).await {
                tracing::error!(?e, "automatic promotion failed");
            }
            down_since.remove(&owner);
            last_scan.remove(&owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::topology::for_test;

    fn topo() -> Topology {
        for_test(
            "listen: { http: 127.0.0.1:1 }
regions:
  a: { type: full, endpoints: [\"127.0.0.1:2\"], services: [api], compliance: { data_residency: US } }
  b: { type: full, endpoints: [\"127.0.0.1:3\"], services: [api], compliance: { data_residency: US } }
  eu: { type: full, endpoints: [\"127.0.0.1:4\"], services: [api], compliance: { data_residency: EU } }
  ro: { type: read-only, endpoints: [\"127.0.0.1:5\"], services: [api], compliance: { data_residency: US } }
routing: { policy: weighted }
consistency:
  owners: { default: a }
  partition_residency: { default: US }
  promotion: { max_lag: 2s }
",
        )
    }

    fn rule(t: &Topology, to: RegionIdx, force: bool) -> Option<&'static str> {
        refusal(t, &["default".to_string()], to, force).and_then(|e| e.rule())
    }

    #[test]
    fn a_healthy_caught_up_region_in_the_zone_may_own() {
        assert_eq!(rule(&topo(), 1, false), None);
    }

    #[test]
    fn read_only_residency_and_the_owner_itself_are_refused_even_forced() {
        let t = topo();
        assert_eq!(rule(&t, 3, true), Some("read_only"));
        assert_eq!(rule(&t, 2, true), Some("residency"));
        assert_eq!(rule(&t, 0, true), Some("already_owner"));
    }

    #[test]
    fn a_region_that_never_reported_its_lag_is_refused_unless_forced() {
        let t = topo();
        t.regions[1]
            .live
            .lag_reported_at
            .store(0, Ordering::Relaxed);
        assert_eq!(rule(&t, 1, false), Some("lag_unknown"));
        assert_eq!(rule(&t, 1, true), None);
    }

    #[test]
    fn health_drain_and_lag_are_refused_unless_forced() {
        let t = topo();
        let live = &t.regions[1].live;
        live.lag_ms.store(2500, Ordering::Relaxed);
        assert_eq!(rule(&t, 1, false), Some("lag"));
        let why = refusal(&t, &["default".to_string()], 1, false).expect("refused");
        assert!(why.to_string().contains("lags 2500 ms"), "{why}");
        live.lag_ms.store(0, Ordering::Relaxed);
        live.draining.store(true, Ordering::Relaxed);
        assert_eq!(rule(&t, 1, false), Some("drained"));
        live.healthy.store(false, Ordering::Relaxed);
        assert_eq!(rule(&t, 1, false), Some("unhealthy"));
        assert_eq!(rule(&t, 1, true), None, "forced past health, drain and lag");
    }
}
