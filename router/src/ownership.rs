//! Partition ownership: partition → (owner region, epoch), with a `default`
//! entry for partitions not named. Epochs start at 1 and only a promotion
//! raises them, by one. The table and every promotion record live in one
//! file in `state_dir`, replaced atomically and fsynced before the new epoch
//! is used by any write. The config's `consistency.owners` only seeds a
//! partition the table does not know yet.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchyard_config::{Config, RegionKind};

use crate::persist::write_atomically;
use crate::topology::{RegionIdx, Topology};

const FILE: &str = "ownership.json";
const VERSION: u32 = 1;
/// The partition name of the default entry.
pub const DEFAULT: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub region: String,
    pub epoch: u64,
}

/// One promotion, as the reconciler reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionRecord {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    pub partition: String,
    pub from: String,
    pub to: String,
    pub from_epoch: u64,
    pub to_epoch: u64,
    /// The target's applied position when it was promoted (from its health report).
    pub applied_position: u64,
    pub forced: bool,
    /// `manual`, or why an automatic promotion happened.
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OwnershipTable {
    pub version: u32,
    pub partitions: BTreeMap<String, Owner>,
    #[serde(default)]
    pub promotions: Vec<PromotionRecord>,
}

impl OwnershipTable {
    /// The entry a partition's writes use: its own, else the default.
    pub fn owner(&self, partition: Option<&str>) -> Option<(&str, &Owner)> {
        partition
            .and_then(|p| self.partitions.get_key_value(p))
            .or_else(|| self.partitions.get_key_value(DEFAULT))
            .map(|(k, o)| (k.as_str(), o))
    }

    /// Adds the config's owners for partitions the table does not have yet
    /// (epoch 1); says where the config disagrees with the table.
    fn seed(&mut self, config: &Config) -> bool {
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

/// The table resolved against one topology: what the hot path reads.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    pub default: Option<(RegionIdx, u64)>,
    pub partitions: HashMap<String, (RegionIdx, u64)>,
}

impl OwnerIndex {
    pub fn build(table: &OwnershipTable, topo_regions: &dyn Fn(&str) -> Option<RegionIdx>) -> Self {
        let mut out = OwnerIndex::default();
        for (p, o) in &table.partitions {
            let Some(idx) = topo_regions(&o.region) else {
                continue;
            };
            if p == DEFAULT {
                out.default = Some((idx, o.epoch));
            } else {
                out.partitions.insert(p.clone(), (idx, o.epoch));
            }
        }
        out
    }

    /// The owner and epoch of a partition's writes.
    #[inline]
    pub fn get(&self, partition: Option<&str>) -> Option<(RegionIdx, u64)> {
        if self.partitions.is_empty() {
            return self.default;
        }
        partition
            .and_then(|p| self.partitions.get(p).copied())
            .or(self.default)
    }
}

/// The table on disk and in memory.
pub struct OwnershipStore {
    path: Option<PathBuf>,
    table: Mutex<OwnershipTable>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl OwnershipStore {
    /// Reads `state_dir/ownership.json` (seeding it from the config) and
    /// writes it back when the config added partitions.
    pub fn open(state_dir: &Path, config: &Config) -> anyhow::Result<Self> {
        let path = state_dir.join(FILE);
        let mut table = read(&path)?.unwrap_or(OwnershipTable {
            version: VERSION,
            ..OwnershipTable::default()
        });
        let store_path = Some(path.clone());
        if table.seed(config) || !path.exists() {
            table.version = VERSION;
            write_atomically(&path, &serde_json::to_vec_pretty(&table)?)?;
        }
        Ok(OwnershipStore {
            path: store_path,
            table: Mutex::new(table),
        })
    }

    /// Seeds from a config without a file (tests, benches).
    pub fn in_memory(config: &Config) -> Self {
        let mut table = OwnershipTable::default();
        table.seed(config);
        OwnershipStore {
            path: None,
            table: Mutex::new(table),
        }
    }

    pub fn snapshot(&self) -> OwnershipTable {
        self.table.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// After a reload: adds partitions the new config names.
    pub fn seed(&self, config: &Config) -> anyhow::Result<()> {
        let mut t = self
            .table
            .lock()
            .map_err(|_| anyhow::anyhow!("ownership lock poisoned"))?;
        if t.seed(config) {
            self.write(&t)?;
        }
        Ok(())
    }

    /// Takes the fleet's table as this router's (kept in the file as a cache).
    pub fn replace(&self, mut table: OwnershipTable) -> anyhow::Result<()> {
        table.version = VERSION;
        let mut t = self
            .table
            .lock()
            .map_err(|_| anyhow::anyhow!("ownership lock poisoned"))?;
        if t.partitions != table.partitions || t.promotions != table.promotions {
            self.write(&table)?;
            *t = table;
        }
        Ok(())
    }

    /// Re-reads the file: another writer (an operator's tool, a fleet) may have moved on.
    pub fn refresh(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(fresh) = read(path)? {
            if let Ok(mut t) = self.table.lock() {
                *t = fresh;
            }
        }
        Ok(())
    }

    fn write(&self, t: &OwnershipTable) -> anyhow::Result<()> {
        if let Some(path) = &self.path {
            write_atomically(path, &serde_json::to_vec_pretty(t)?)
                .context("cannot persist the ownership table")?;
        }
        Ok(())
    }

    /// Raises the epoch of each of `partitions` by one with `to` as owner and
    /// records the promotions; durable before it returns.
    pub fn promote(
        &self,
        partitions: &[String],
        to: &str,
        applied_position: u64,
        forced: bool,
        reason: &str,
    ) -> anyhow::Result<Vec<PromotionRecord>> {
        let mut t = self
            .table
            .lock()
            .map_err(|_| anyhow::anyhow!("ownership lock poisoned"))?;
        let mut next = t.clone();
        let mut records = Vec::new();
        for p in partitions {
            let (from, from_epoch) = match next.owner(Some(p)) {
                Some((_, o)) => (o.region.clone(), o.epoch),
                None => (String::new(), 0),
            };
            let rec = PromotionRecord {
                at_ms: unix_ms(),
                partition: p.clone(),
                from,
                to: to.to_string(),
                from_epoch,
                to_epoch: from_epoch + 1,
                applied_position,
                forced,
                reason: reason.to_string(),
            };
            next.partitions.insert(
                p.clone(),
                Owner {
                    region: to.to_string(),
                    epoch: rec.to_epoch,
                },
            );
            next.promotions.push(rec.clone());
            records.push(rec);
        }
        next.version = VERSION;
        self.write(&next)?;
        *t = next;
        Ok(records)
    }

    /// The status document's `owners`.
    pub fn status_json(&self) -> Value {
        let t = self.snapshot();
        let mut out = serde_json::Map::new();
        for (p, o) in &t.partitions {
            out.insert(p.clone(), json!({"region": o.region, "epoch": o.epoch}));
        }
        Value::Object(out)
    }
}

fn read(path: &Path) -> anyhow::Result<Option<OwnershipTable>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let t: OwnershipTable = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not an ownership table", path.display()))?;
            if t.version > VERSION {
                anyhow::bail!(
                    "{}: written by a newer switchyard (format {}, this one reads {VERSION})",
                    path.display(),
                    t.version
                );
            }
            Ok(Some(t))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Resolves the table against a topology.
pub fn index(table: &OwnershipTable, topo: &Topology) -> OwnerIndex {
    OwnerIndex::build(table, &|name| topo.index_of(name))
}
