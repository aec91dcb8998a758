//! Writes at risk: the acknowledged writes a promotion would strand. The op
//! log knows every write the current owner acknowledged under its epoch,
//! with its commit position; each candidate's health reports say how far it
//! has applied. The writes above a candidate's applied position are the ones
//! it lacks, by id, before anyone presses the button.
//!
//! This router's own log is read (flushed first, then scanned on a blocking
//! thread). When the log is published to JetStream, the stream is read first:
//! every edge's writes count, and this edge's records not yet forwarded come
//! from its own log; a record seen in both counts once. If the stream cannot
//! be read, the count covers this edge alone and the answer says so
//! (`scope`, `problems`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::control::error::ControlError;
use crate::control::RouterState;
use crate::route::topology::{RegionIdx, Topology};
use crate::store::oplog_scan::{Acked, AckedScanner, Wanted};

/// The longest a dry run waits to read the JetStream stream.
const STREAM_READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Op ids a preview names per partition; the count covers the rest.
const OPS_NAMED: usize = 5;

/// What promoting one partition to one target would strand.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Exposure {
    pub(crate) partition: String,
    pub(crate) from: String,
    pub(crate) from_epoch: u64,
    pub(crate) to: String,
    pub(crate) target_applied_position: u64,
    /// Acknowledged writes above the target's applied position (and those
    /// whose position the owner never said).
    pub(crate) writes_at_risk: u64,
    /// Of them, writes without a commit position: the owner sent none, or has
    /// not answered yet.
    pub(crate) position_unknown: u64,
    pub(crate) replayable: u64,
    pub(crate) not_replayable: u64,
    pub(crate) oldest_ms: Option<u64>,
    pub(crate) newest_ms: Option<u64>,
    /// The first few (oldest) op ids.
    pub(crate) ops: Vec<String>,
}

/// The acknowledged writes of each partition's current owner under its
/// current epoch, from this router's op log.
pub(crate) struct OwnerWrites {
    /// Partition → (owner, epoch).
    owners: Wanted,
    writes: HashMap<String, Vec<Acked>>,
    pub(crate) problems: Vec<String>,
    /// Whose writes were counted.
    pub(crate) scope: String,
}

impl OwnerWrites {
    /// Reads the log for `partitions` (each resolved to its ownership entry).
    pub(crate) async fn read(
        state: &RouterState,
        partitions: &[String],
    ) -> Result<OwnerWrites, ControlError> {
        let Some(log) = state.oplog.clone() else {
            return Err(ControlError::Unavailable(
                "this router keeps no op log: writes at risk cannot be counted".into(),
            ));
        };
        let table = state.ownership.snapshot();
        let mut owners = Wanted::new();
        for p in partitions {
            if let Some((entry, owner)) = table.owner(Some(p)) {
                owners.insert(entry.to_string(), (owner.region.clone(), owner.epoch));
            }
        }
        let mut scanner = AckedScanner::new(owners.clone());
        let mut problems = Vec::new();
        let mut scope = "this edge's op log".to_string();
        if let Some(nats) = &state.topology.load().config.oplog.nats {
            let read = tokio::time::timeout(
                STREAM_READ_LIMIT,
                crate::store::oplog_nats::read_stream(nats, |r| scanner.add(r)),
            )
            .await;
            match read {
                Ok(Ok(unreadable)) => {
                    scope = format!(
                        "every edge: JetStream stream {} and this edge's op log",
                        nats.stream
                    );
                    if unreadable > 0 {
                        problems.push(format!(
                            "stream {}: {unreadable} messages are not whole records",
                            nats.stream
                        ));
                    }
                }
                Ok(Err(e)) => problems.push(format!(
                    "cannot read stream {} at {} ({e:#}): only this edge's writes are counted",
                    nats.stream, nats.url
                )),
                Err(_) => problems.push(format!(
                    "stream {} at {} took over {}s to read: only this edge's writes are counted",
                    nats.stream,
                    nats.url,
                    STREAM_READ_LIMIT.as_secs()
                )),
            }
        } else if state.fleet.is_none() {
            scope = "op log".into();
        }
        // Everything acknowledged so far is on disk before it is read.
        log.flush().await;
        let dir = log.dir.clone();
        let (scanner, local) = tokio::task::spawn_blocking(move || {
            let read = scanner.read_dir(&dir);
            (scanner, read)
        })
        .await
        .map_err(|e| ControlError::Internal(format!("op log scan: {e}")))?;
        problems.extend(
            local.map_err(|e| ControlError::Unavailable(format!("cannot read the op log: {e}")))?,
        );
        Ok(OwnerWrites {
            owners,
            writes: scanner.finish(),
            problems,
            scope,
        })
    }

    /// What promoting `partition` to `to` would strand; `None` for a
    /// partition with no owner.
    pub(crate) fn exposure(
        &self,
        topo: &Topology,
        partition: &str,
        to: RegionIdx,
    ) -> Option<Exposure> {
        let table_entry = if self.owners.contains_key(partition) {
            partition
        } else {
            crate::route::owners::DEFAULT
        };
        let (from, from_epoch) = self.owners.get(table_entry)?;
        let target = &topo.regions[to as usize];
        let applied = target.live.applied_position.load(Ordering::Relaxed);
        let mut e = Exposure {
            partition: partition.to_string(),
            from: from.clone(),
            from_epoch: *from_epoch,
            to: target.spec.name.to_string(),
            target_applied_position: applied,
            writes_at_risk: 0,
            position_unknown: 0,
            replayable: 0,
            not_replayable: 0,
            oldest_ms: None,
            newest_ms: None,
            ops: Vec::new(),
        };
        for w in self.writes.get(table_entry).into_iter().flatten() {
            let lacks = w.position.is_none_or(|p| p > applied);
            if !lacks {
                continue;
            }
            e.writes_at_risk += 1;
            e.position_unknown += u64::from(w.position.is_none());
            if w.replayable {
                e.replayable += 1;
            } else {
                e.not_replayable += 1;
            }
            e.oldest_ms = Some(e.oldest_ms.map_or(w.at_ms, |m| m.min(w.at_ms)));
            e.newest_ms = Some(e.newest_ms.map_or(w.at_ms, |m| m.max(w.at_ms)));
            if e.ops.len() < OPS_NAMED {
                e.ops.push(w.op_id.to_string());
            }
        }
        Some(e)
    }

    /// The most any of `partitions` would strand on `to`.
    pub(crate) fn worst(&self, topo: &Topology, partitions: &[String], to: RegionIdx) -> u64 {
        partitions
            .iter()
            .filter_map(|p| self.exposure(topo, p, to))
            .map(|e| e.writes_at_risk)
            .max()
            .unwrap_or(0)
    }
}
