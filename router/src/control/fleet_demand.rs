//! Fleet rate budgets by demand. Each second every router publishes its
//! demand for each rate-limited region (requests that wanted a token, per
//! second, over the last interval) to `{prefix}/demand/{edge}`, reads every
//! live member's, and takes the fraction of each region's budget its demand
//! is of the fleet's. Each router is also given a floor (5% of the budget
//! split evenly) so that one whose traffic is just starting gets tokens to
//! show its demand with. With no demand anywhere the split is even (`1/N`).
//!
//! A member that has published nothing recent (older than `STALE`) counts
//! as no demand; a router that cannot reach etcd falls back to `1/N` of the
//! budget (the membership's split), which together never exceeds it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use serde::{Deserialize, Serialize};

use crate::control::RouterState;
use crate::fleet::presence::Presence;
use crate::fleet::Fleet;

/// How often demand is published and the fractions recomputed.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// A published demand older than this no longer counts.
const STALE_MS: u64 = 3_000;
/// The share of a budget set aside as every router's floor.
const FLOOR: f64 = 0.05;

/// What one router publishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Published {
    at_ms: u64,
    /// Region → requests per second that wanted its tokens.
    rps: HashMap<String, f64>,
}

/// This router's fraction of a budget of `rps`, given its demand `mine`
/// and the other live members' `others` (one entry per member, 0 for those
/// with none known).
pub(crate) fn fraction(rps: f64, mine: f64, others: &[f64]) -> f64 {
    let members = (others.len() + 1) as f64;
    let total: f64 = mine + others.iter().sum::<f64>();
    if total <= 0.0 {
        return 1.0 / members;
    }
    let floor = FLOOR * rps / members;
    let weight = |d: f64| d.max(0.0) + floor;
    weight(mine) / (weight(mine) + others.iter().map(|d| weight(*d)).sum::<f64>())
}

/// Publishes this router's demand and sets its fractions, every `INTERVAL`.
pub(crate) async fn run(state: Arc<RouterState>, fleet: Fleet, presence: Arc<Presence>) {
    let prefix = format!("{}/demand/", fleet.prefix());
    let mine_key = format!("{prefix}{}", presence.edge_id);
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut taken = Instant::now();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let secs = taken.elapsed().as_secs_f64().max(1e-3);
        taken = Instant::now();
        let topo = state.topology.load_full();
        let mut rps = HashMap::new();
        for r in &topo.regions {
            let Some(bucket) = &r.rate else { continue };
            let now = bucket.demand();
            let before = last.insert(r.spec.name.to_string(), now).unwrap_or(now);
            rps.insert(r.spec.name.to_string(), (now - before) as f64 / secs);
        }
        if rps.is_empty() {
            continue;
        }
        let published = Published {
            at_ms: switchyard_oplog::unix_ms(),
            rps: rps.clone(),
        };
        let result: anyhow::Result<Vec<Published>> = async {
            let mut client = fleet.client();
            client
                .put(mine_key.clone(), serde_json::to_vec(&published)?, None)
                .await?;
            let all = client
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await?;
            let live = presence.members();
            let now = switchyard_oplog::unix_ms();
            Ok(live
                .iter()
                .filter(|edge| **edge != presence.edge_id)
                .map(|edge| {
                    let key = format!("{prefix}{edge}");
                    all.kvs()
                        .iter()
                        .find(|kv| kv.key() == key.as_bytes())
                        .and_then(|kv| serde_json::from_slice::<Published>(kv.value()).ok())
                        .filter(|p| now.saturating_sub(p.at_ms) <= STALE_MS)
                        .unwrap_or(Published {
                            at_ms: now,
                            rps: HashMap::new(),
                        })
                })
                .collect())
        }
        .await;
        match result {
            Ok(others) => {
                for r in &topo.regions {
                    let Some(bucket) = &r.rate else { continue };
                    let name = r.spec.name.as_str();
                    let theirs: Vec<f64> = others
                        .iter()
                        .map(|p| p.rps.get(name).copied().unwrap_or(0.0))
                        .collect();
                    let mine = rps.get(name).copied().unwrap_or(0.0);
                    bucket.set_fraction(fraction(bucket.limit.rps, mine, &theirs));
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "fleet demand: cannot reach etcd; each router takes 1/N of every budget");
                let n = presence.member_count();
                for r in &topo.regions {
                    if let Some(bucket) = &r.rate {
                        bucket.set_fraction(1.0 / f64::from(n));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fraction;

    #[test]
    fn the_budget_follows_demand_with_a_floor_for_every_router() {
        // No demand anywhere: even.
        assert_eq!(fraction(100.0, 0.0, &[0.0]), 0.5);
        // All the traffic here: all but the other's floor (2.5 of 100).
        let all = fraction(100.0, 150.0, &[0.0]);
        assert!((all - 152.5 / 155.0).abs() < 1e-9, "{all}");
        assert!(all > 0.9);
        // The idle one keeps its floor.
        let idle = fraction(100.0, 0.0, &[150.0]);
        assert!((idle - 2.5 / 155.0).abs() < 1e-9, "{idle}");
        assert!(
            (all + idle - 1.0).abs() < 1e-9,
            "the fractions sum to the budget"
        );
        // Equal demand: even.
        assert!((fraction(100.0, 40.0, &[40.0, 40.0]) - 1.0 / 3.0).abs() < 1e-9);
    }
}
