//! Operator state that must survive a restart: dials set through the admin
//! API, drained regions, and ramp progress. One JSON file in `state_dir`,
//! replaced atomically (write, fsync, rename, fsync the folder) on every change.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::ramp::RampRun;

const FILE: &str = "traffic.json";
const VERSION: u32 = 1;

/// A dial an operator set, and the config's dial at the time: a later config
/// change to that region's dial wins over it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct DialOverride {
    pub tenths: u16,
    pub config_tenths: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrafficState {
    pub version: u32,
    #[serde(default)]
    pub dials: BTreeMap<String, DialOverride>,
    #[serde(default)]
    pub drained: BTreeSet<String>,
    #[serde(default)]
    pub ramps: BTreeMap<String, RampRun>,
}

/// The file and its content; every change goes through [`TrafficStore::update`].
pub struct TrafficStore {
    path: Option<PathBuf>,
    state: Mutex<TrafficState>,
}

impl TrafficStore {
    /// Reads `state_dir/traffic.json`, or starts empty when there is none.
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let s: TrafficState = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{}: not a traffic state file", path.display()))?;
                if s.version > VERSION {
                    anyhow::bail!(
                        "{}: written by a newer switchyard (format {}, this one reads {VERSION})",
                        path.display(),
                        s.version
                    );
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TrafficState {
                version: VERSION,
                ..TrafficState::default()
            },
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(TrafficStore {
            path: Some(path),
            state: Mutex::new(state),
        })
    }

    /// A store that keeps nothing on disk (tests, explain tools).
    pub fn in_memory() -> Self {
        TrafficStore {
            path: None,
            state: Mutex::new(TrafficState::default()),
        }
    }

    pub fn snapshot(&self) -> TrafficState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Applies `change` and writes the result before returning. A failed write
    /// leaves the change in memory and reports the error.
    pub fn update<T>(&self, change: impl FnOnce(&mut TrafficState) -> T) -> anyhow::Result<T> {
        self.update_if(|s| (change(s), true))
    }

    /// Like [`TrafficStore::update`], writing only when `change` says it changed something.
    pub fn update_if<T>(
        &self,
        change: impl FnOnce(&mut TrafficState) -> (T, bool),
    ) -> anyhow::Result<T> {
        let mut s = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("traffic state lock poisoned"))?;
        let (out, changed) = change(&mut s);
        s.version = VERSION;
        if let (Some(path), true) = (&self.path, changed) {
            write_atomically(path, &serde_json::to_vec_pretty(&*s)?)?;
        }
        Ok(out)
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new file, whole.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("sy-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = TrafficStore::open(&dir).expect("open");
        store
            .update(|s| {
                s.drained.insert("eu".into());
                s.dials.insert(
                    "eu".into(),
                    DialOverride {
                        tenths: 125,
                        config_tenths: 1000,
                    },
                );
            })
            .expect("update");
        let again = TrafficStore::open(&dir).expect("reopen").snapshot();
        assert!(again.drained.contains("eu"));
        assert_eq!(again.dials["eu"].tenths, 125);
        std::fs::write(dir.join(FILE), b"{\"version\": 99}").expect("write");
        let err = TrafficStore::open(&dir)
            .err()
            .expect("newer format refused");
        assert!(err.to_string().contains("newer switchyard"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
