//! The ownership table on disk: `state_dir/ownership.json`, replaced
//! atomically and fsynced before a new epoch is used by any write.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use switchyard_config::Config;

use crate::route::owners::{OwnershipTable, PromotionRecord, Terms, VERSION};
use crate::store::write_atomically;

const FILE: &str = "ownership.json";

/// The table on disk and in memory.
pub(crate) struct OwnershipStore {
    path: Option<PathBuf>,
    table: Mutex<OwnershipTable>,
}

impl OwnershipStore {
    /// Reads `state_dir/ownership.json` (seeding it from the config) and
    /// writes it back when the config added partitions.
    pub(crate) fn open(state_dir: &Path, config: &Config) -> anyhow::Result<Self> {
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

    pub(crate) fn snapshot(&self) -> OwnershipTable {
        self.table.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// After a reload: adds partitions the new config names.
    pub(crate) fn seed(&self, config: &Config) -> anyhow::Result<()> {
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
    pub(crate) fn replace(&self, mut table: OwnershipTable) -> anyhow::Result<()> {
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
    pub(crate) fn refresh(&self) -> anyhow::Result<()> {
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
    pub(crate) fn promote(
        &self,
        partitions: &[String],
        to: &str,
        terms: &Terms<'_>,
    ) -> anyhow::Result<Vec<PromotionRecord>> {
        let mut t = self
            .table
            .lock()
            .map_err(|_| anyhow::anyhow!("ownership lock poisoned"))?;
        let mut next = t.clone();
        let records = next.promote(partitions, to, terms, switchyard_oplog::unix_ms());
        next.version = VERSION;
        self.write(&next)?;
        *t = next;
        Ok(records)
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
