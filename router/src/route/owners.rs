//! Partition ownership as data: partition → (owner region, epoch), with a
//! `default` entry for partitions not named, and the promotion records.
//! Epochs start at 1 and only a promotion raises them, by one. The config's
//! `consistency.owners` only seeds a partition the table does not know yet.
//! Where the table is kept (a file, etcd) is the store's and the fleet's
//! business; the hot path reads its [`OwnerIndex`].

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchyard_config::{Config, RegionKind};

use crate::route::topology::RegionIdx;

/// The format version of a saved table.
pub(crate) const VERSION: u32 = 1;
/// The partition name of the default entry.
pub(crate) const DEFAULT: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub(crate) region: String,
    pub(crate) epoch: u64,
    /// Fleet mode: unix ms before which writes to this owner are held. A
    /// router cut off from etcd goes on writing to the old owner for up to
    /// `write_grace` (after its last answer from etcd, with a lease that
    /// lives `lease_ttl`): the new owner takes writes once every such router
    /// must have stopped, so the two never both accept writes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) writes_from_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One promotion, as the reconciler reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PromotionRecord {
    /// Unix time, milliseconds.
    pub(crate) at_ms: u64,
    pub(crate) partition: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) from_epoch: u64,
    pub(crate) to_epoch: u64,
    /// The target's applied position when it was promoted (from its health report).
    pub(crate) applied_position: u64,
    pub(crate) forced: bool,
    /// `manual`, or why an automatic promotion happened.
    pub(crate) reason: String,
    /// Acknowledged writes above the target's applied position when it was
    /// promoted, from this router's op log (absent when not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) writes_at_risk: Option<u64>,
}

/// What a promotion is made on: the target's applied position, whether the
/// rules were overridden, why, and what it strands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms<'a> {
    pub(crate) applied_position: u64,
    pub(crate) forced: bool,
    pub(crate) reason: &'a str,
    pub(crate) writes_at_risk: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct OwnershipTable {
    pub(crate) version: u32,
    pub(crate) partitions: BTreeMap<String, Owner>,
    #[serde(default)]
    pub(crate) promotions: Vec<PromotionRecord>,
}

impl OwnershipTable {
    /// The entry a partition's writes use: its own, else the default.
    pub(crate) fn owner(&self, partition: Option<&str>) -> Option<(&str, &Owner)> {
        partition
            .and_then(|p| self.partitions.get_key_value(p))
            .or_else(|| self.partitions.get_key_value(DEFAULT))
            .map(|(k, o)| (k.as_str(), o))
    }

    /// Adds the config's owners for partitions the table does not have yet
    /// (epoch 1); says where the config disagrees with the table.
    pub(crate) fn seed(&mut self, config: &Config) -> bool {
        let mut changed = false;
        let default = config
            .consistency
            .default_owner
            .as_ref()
            .map(|r| r.as_str().to_string())
            .or_else(|| {
                config
                    .regions
                    .iter()
                    .find(|r| r.kind != RegionKind::ReadOnly)
                    .map(|r| r.name.as_str().to_string())
            });
        let wanted = default.map(|d| (DEFAULT.to_string(), d)).into_iter().chain(
            config
                .consistency
                .owners
                .iter()
                .map(|(p, r)| (p.clone(), r.as_str().to_string())),
        );
        for (partition, region) in wanted {
            match self.partitions.get(&partition) {
                None => {
                    self.partitions.insert(
                        partition,
                        Owner {
                            region,
                            epoch: 1,
                            writes_from_ms: 0,
                        },
                    );
                    changed = true;
                }
                Some(o) if o.region != region => tracing::warn!(
                    partition,
                    config = region,
                    owner = o.region,
                    epoch = o.epoch,
                    "the config names another owner than the ownership table; promote to change owners"
                ),
                Some(_) => {}
            }
        }
        changed
    }
}

impl OwnershipTable {
    /// Moves each of `partitions` to `to` with its epoch raised by one, and
    /// records each move; returns the records.
    pub(crate) fn promote(
        &mut self,
        partitions: &[String],
        to: &str,
        terms: &Terms<'_>,
        at_ms: u64,
    ) -> Vec<PromotionRecord> {
        let mut records = Vec::new();
        for p in partitions {
            let (from, from_epoch) = match self.owner(Some(p)) {
                Some((_, o)) => (o.region.clone(), o.epoch),
                None => (String::new(), 0),
            };
            let rec = PromotionRecord {
                at_ms,
                partition: p.clone(),
                from,
                to: to.to_string(),
                from_epoch,
                to_epoch: from_epoch + 1,
                applied_position: terms.applied_position,
                forced: terms.forced,
                reason: terms.reason.to_string(),
                writes_at_risk: terms.writes_at_risk,
            };
            self.partitions.insert(
                p.clone(),
                Owner {
                    region: to.to_string(),
                    epoch: rec.to_epoch,
                    writes_from_ms: 0,
                },
            );
            self.promotions.push(rec.clone());
            records.push(rec);
        }
        records
    }

    /// The status document's `owners`.
    pub(crate) fn status_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (p, o) in &self.partitions {
            let mut entry = json!({"region": o.region, "epoch": o.epoch});
            if o.writes_from_ms > 0 {
                entry["writes_from_ms"] = json!(o.writes_from_ms);
            }
            out.insert(p.clone(), entry);
        }
        Value::Object(out)
    }
}

/// The table resolved against one topology: what the hot path reads.
#[derive(Debug, Default)]
pub(crate) struct OwnerIndex {
    pub(crate) default: Option<(RegionIdx, u64)>,
    pub(crate) partitions: HashMap<String, (RegionIdx, u64)>,
    /// Entries whose writes are held until a unix ms (see
    /// [`Owner::writes_from_ms`]); empty nearly always.
    held: HashMap<String, u64>,
}

impl OwnerIndex {
    pub(crate) fn build(
        table: &OwnershipTable,
        topo_regions: &dyn Fn(&str) -> Option<RegionIdx>,
    ) -> Self {
        let mut out = OwnerIndex::default();
        for (p, o) in &table.partitions {
            let Some(idx) = topo_regions(&o.region) else {
                continue;
            };
            if o.writes_from_ms > 0 {
                out.held.insert(p.clone(), o.writes_from_ms);
            }
            if p == DEFAULT {
                out.default = Some((idx, o.epoch));
            } else {
                out.partitions.insert(p.clone(), (idx, o.epoch));
            }
        }
        out
    }

    /// Until when (unix ms) the entry deciding `partition`'s writes holds
    /// them, if it does at `now_ms`.
    pub(crate) fn writes_held_until(&self, partition: Option<&str>, now_ms: u64) -> Option<u64> {
        if self.held.is_empty() {
            return None;
        }
        let entry = partition
            .filter(|p| self.partitions.contains_key(*p))
            .unwrap_or(DEFAULT);
        self.held
            .get(entry)
            .copied()
            .filter(|until| *until > now_ms)
    }

    /// The owner and epoch of a partition's writes.
    #[inline]
    pub(crate) fn get(&self, partition: Option<&str>) -> Option<(RegionIdx, u64)> {
        if self.partitions.is_empty() {
            return self.default;
        }
        partition
            .and_then(|p| self.partitions.get(p).copied())
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(applied_position: u64, forced: bool, reason: &str) -> Terms<'_> {
        Terms {
            applied_position,
            forced,
            reason,
            writes_at_risk: None,
        }
    }

    fn config(text: &str) -> Config {
        switchyard_config::parse_str(text, std::path::Path::new("t.yaml")).expect("valid")
    }

    const REGIONS: &str = "listen: { http: 127.0.0.1:1 }
regions:
  ro: { type: read-only, endpoints: [\"127.0.0.1:2\"], services: [api] }
  a: { type: full, endpoints: [\"127.0.0.1:3\"], services: [api] }
  b: { type: full, endpoints: [\"127.0.0.1:4\"], services: [api] }
routing: { policy: weighted }
";

    #[test]
    fn seeding_takes_the_first_writable_region_and_keeps_what_the_table_has() {
        let mut t = OwnershipTable::default();
        assert!(t.seed(&config(REGIONS)));
        assert_eq!(
            t.owner(None).map(|(e, o)| (e, o.region.as_str(), o.epoch)),
            Some((DEFAULT, "a", 1))
        );
        // A later config naming another owner does not move ownership.
        let moved = format!("{REGIONS}consistency: {{ owners: {{ default: b, t7: b }} }}\n");
        assert!(t.seed(&config(&moved)), "t7 is new");
        assert_eq!(t.partitions[DEFAULT].region, "a");
        assert_eq!(
            t.partitions["t7"],
            Owner {
                region: "b".into(),
                epoch: 1,
                writes_from_ms: 0,
            }
        );
        assert!(!t.seed(&config(&moved)), "nothing new the second time");
    }

    #[test]
    fn a_promotion_raises_the_epoch_by_one_and_is_recorded() {
        let mut t = OwnershipTable::default();
        t.seed(&config(REGIONS));
        let recs = t.promote(&["t1".into()], "b", &terms(42, false, "manual"), 1000);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        // t1 had no entry of its own: it moves off the default's epoch.
        assert_eq!(
            (r.from.as_str(), r.from_epoch, r.to.as_str(), r.to_epoch),
            ("a", 1, "b", 2)
        );
        assert_eq!(r.applied_position, 42);
        assert_eq!(
            t.owner(Some("t1")).map(|(e, o)| (e, o.epoch)),
            Some(("t1", 2))
        );
        assert_eq!(
            t.owner(Some("t2")).map(|(e, o)| (e, o.epoch)),
            Some((DEFAULT, 1))
        );
        t.promote(&["t1".into()], "a", &terms(0, true, "again"), 2000);
        assert_eq!(t.partitions["t1"].epoch, 3);
        assert_eq!(t.promotions.len(), 2);
    }

    #[test]
    fn a_held_entry_holds_its_partitions_writes_until_its_time() {
        let mut t = OwnershipTable::default();
        t.seed(&config(REGIONS));
        t.promote(&["t1".into()], "b", &terms(0, false, "manual"), 0);
        if let Some(o) = t.partitions.get_mut(DEFAULT) {
            o.writes_from_ms = 5_000;
        }
        let idx = OwnerIndex::build(&t, &|n| {
            ["ro", "a", "b"]
                .iter()
                .position(|x| *x == n)
                .map(|i| i as RegionIdx)
        });
        // Partitions on the default entry are held; t1 has its own entry.
        assert_eq!(idx.writes_held_until(Some("other"), 4_999), Some(5_000));
        assert_eq!(idx.writes_held_until(None, 4_999), Some(5_000));
        assert_eq!(idx.writes_held_until(Some("t1"), 4_999), None);
        assert_eq!(idx.writes_held_until(Some("other"), 5_000), None);
        // Serialized only when set, so tables without it read the same.
        let json = serde_json::to_string(&t.partitions["t1"]).expect("json");
        assert!(!json.contains("writes_from_ms"), "{json}");
    }

    #[test]
    fn the_index_resolves_names_and_falls_back_to_default() {
        let mut t = OwnershipTable::default();
        t.seed(&config(REGIONS));
        t.promote(&["t1".into()], "b", &terms(0, false, "manual"), 0);
        t.partitions.insert(
            "gone".into(),
            Owner {
                region: "deleted".into(),
                epoch: 4,
                writes_from_ms: 0,
            },
        );
        let idx = OwnerIndex::build(&t, &|n| {
            ["ro", "a", "b"]
                .iter()
                .position(|x| *x == n)
                .map(|i| i as RegionIdx)
        });
        assert_eq!(idx.get(Some("t1")), Some((2, 2)));
        assert_eq!(idx.get(Some("other")), Some((1, 1)));
        assert_eq!(idx.get(None), Some((1, 1)));
        // A region no longer configured owns nothing here: the default answers.
        assert_eq!(idx.get(Some("gone")), Some((1, 1)));
    }
}
