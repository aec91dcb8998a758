//! Operator state that must survive a restart: dials set through the admin
//! API, drained regions, and ramp progress. One JSON file in `state_dir`,
//! replaced atomically (write, fsync, rename, fsync the folder) on every change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::store::write_atomically;

const FILE: &str = "traffic.json";
const VERSION: u32 = 1;

/// A dial an operator set, and the config's dial at the time: a later config
/// change to that region's dial wins over it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub(crate) struct DialOverride {
    pub(crate) tenths: u16,
    pub(crate) config_tenths: u16,
}

/// Every state a ramp can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RampState {
    /// Declared, never started.
    #[default]
    Pending,
    Running,
    Paused,
    /// A gate was breached.
    Halted,
    /// An operator stopped it.
    Aborted,
    Completed,
}

impl RampState {
    /// Every state's name, for the one-hot state gauge.
    pub(crate) const NAMES: &'static [&'static str] = &[
        "pending",
        "running",
        "paused",
        "halted",
        "aborted",
        "completed",
    ];

    pub(crate) fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// One line of a ramp's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RampEvent {
    /// Unix time, milliseconds.
    pub(crate) at_ms: u64,
    pub(crate) what: String,
}

/// A ramp's progress as saved (and shared through etcd in fleet mode). The
/// running step's clock and gate baseline are the controller's, not saved:
/// a restart restarts the hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RampRecord {
    pub(crate) state: RampState,
    pub(crate) step: usize,
    pub(crate) reason: Option<String>,
    /// Stepping the dial down after a halt or an abort.
    pub(crate) stepping_down: bool,
    pub(crate) history: Vec<RampEvent>,
}

impl RampRecord {
    /// Whether the ramp sets its region's dial now.
    pub(crate) fn in_control(&self) -> bool {
        matches!(self.state, RampState::Running | RampState::Paused) || self.stepping_down
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TrafficState {
    pub(crate) version: u32,
    #[serde(default)]
    pub(crate) dials: BTreeMap<String, DialOverride>,
    #[serde(default)]
    pub(crate) drained: BTreeSet<String>,
    #[serde(default)]
    pub(crate) ramps: BTreeMap<String, RampRecord>,
}

/// The file and its content; every change goes through [`TrafficStore::update`].
pub(crate) struct TrafficStore {
    path: Option<PathBuf>,
    state: Mutex<TrafficState>,
}

impl TrafficStore {
    /// Reads `state_dir/traffic.json`, or starts empty when there is none.
    pub(crate) fn open(state_dir: &Path) -> anyhow::Result<Self> {
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

    pub(crate) fn snapshot(&self) -> TrafficState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Applies `change` and writes the result before returning. A failed write
    /// leaves the change in memory and reports the error.
    pub(crate) fn update<T>(
        &self,
        change: impl FnOnce(&mut TrafficState) -> T,
    ) -> anyhow::Result<T> {
        self.update_if(|s| (change(s), true))
    }

    /// Like [`TrafficStore::update`], writing only when `change` says it changed something.
    pub(crate) fn update_if<T>(
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

#[cfg(test)]
mod state_names {
    use super::RampState;

    #[test]
    fn each_state_names_itself() {
        for (s, name) in [
            (RampState::Pending, "pending"),
            (RampState::Running, "running"),
            (RampState::Paused, "paused"),
            (RampState::Halted, "halted"),
            (RampState::Aborted, "aborted"),
            (RampState::Completed, "completed"),
        ] {
            assert_eq!(s.as_str(), name);
            let json = serde_json::to_string(&s).expect("json");
            assert_eq!(json, format!("\"{name}\""));
        }
    }
}
