//! Repair on read. After a promotion, a client whose read-your-writes token
//! was issued under the old epoch, for a write the new owner had not applied
//! when it was promoted, is a client whose own write may be missing. With
//! `consistency.repair_on_read: replay` the router sends that write to the
//! new owner again from the op log (its idempotency key, its body, the
//! current fencing token), logs the replay as a write marked with the op it
//! replays, and serves the read from the owner; with `flag` it serves the
//! read marked `X-Switchyard-Write-Pending: <op id>`.
//!
//! Each failover's window (the writes its new owner lacked) is read from the
//! op log once, on the first read that needs it, and kept: later repairs are
//! lookups. Only ops in that window are ever replayed, so neither memory nor
//! work grows with what clients send (tokens are signed, and a token for a
//! write outside the window changes nothing). Each op is replayed once, by
//! whichever read asks first; concurrent reads for it wait for that replay.
//!
//! A write is never replayed over a newer one: if the new owner has taken a
//! write to the same resource since the promotion, the read is served marked
//! and the reconciler reports the conflict.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pingora::http::RequestHeader;
use switchyard_config::RepairOnRead;
use switchyard_oplog::{unix_ms, Body, Intent, OpId, Outcome, OutcomeKind, Record, REPLAY_OF};
use tokio::sync::OnceCell;

use crate::control::{region_client, RouterState};
use crate::route::headers::{COMMIT_POSITION, FENCING_TOKEN};
use crate::route::ryw::Mark;
use crate::route::topology::Topology;
use crate::store::oplog;
use crate::store::oplog_scan::{self, FailoverWindow, Stranded};

/// How long one replay may take before the read is served marked instead.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);
/// A replay's connection is kept for the next one this long.
const REPLAY_IDLE: Duration = Duration::from_secs(30);

/// A read that may need repair: its token was issued under an older epoch.
#[derive(Debug, Clone)]
pub(crate) struct Suspect {
    /// The ownership entry (the partition, or `default`).
    pub(crate) entry: String,
    pub(crate) partition: String,
    pub(crate) token_epoch: u64,
    pub(crate) op: Option<OpId>,
    pub(crate) mark: Mark,
}

/// What repair on read did for one read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Repair {
    /// Nothing of the reader's is missing.
    NotNeeded,
    /// The reader's write is on the owner now: serve from the owner.
    Replayed {
        op: OpId,
        /// The replay's own op id (what the reader's new token names).
        replay: OpId,
        /// The owner's commit position for the replay, and its epoch: the
        /// reader's new token.
        position: Option<u64>,
        epoch: u64,
    },
    /// The write may be missing and was not replayed: serve marked.
    Pending { op: Option<OpId>, why: String },
}

/// A failover's window, read from the log once.
struct Window {
    failover: FailoverWindow,
    stranded: HashMap<OpId, Stranded>,
    /// Resources written on the new owner since (from the log, then as
    /// writes arrive): a replay there is left to the reconciler.
    written_since: Mutex<HashSet<String>>,
    /// Ops an earlier run of this router replayed on a read.
    replayed: HashSet<OpId>,
}

type WindowCell = Arc<OnceCell<Result<Arc<Window>, String>>>;

/// Counts for status.
#[derive(Default)]
pub(crate) struct RepairCounts {
    pub(crate) replayed: AtomicU64,
    pub(crate) flagged: AtomicU64,
    pub(crate) failed: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Repairs {
    /// By (ownership entry, old epoch).
    windows: Mutex<HashMap<(String, u64), WindowCell>>,
    /// One replay per op: later reads of it wait for (or reuse) its result.
    replays: Mutex<HashMap<OpId, Arc<OnceCell<Repair>>>>,
    pub(crate) counts: RepairCounts,
}

impl Repairs {
    /// A write was just logged for `entry` under `epoch`: a window whose new
    /// owner this is must not replay over it.
    pub(crate) fn note_write(&self, entry: &str, epoch: u64, resource: &str) {
        let Ok(windows) = self.windows.lock() else {
            return;
        };
        if windows.is_empty() {
            return;
        }
        for ((e, _), cell) in windows.iter() {
            if e != entry {
                continue;
            }
            if let Some(Ok(w)) = cell.get() {
                if epoch >= w.failover.new_epoch {
                    if let Ok(mut since) = w.written_since.lock() {
                        since.insert(switchyard_oplog::normalize_path(resource));
                    }
                }
            }
        }
    }

    /// Counts what was done for one read.
    pub(crate) fn count(&self, done: &Repair, mode: RepairOnRead) {
        let result = match done {
            Repair::NotNeeded => return,
            Repair::Replayed { .. } => {
                self.counts.replayed.fetch_add(1, Ordering::Relaxed);
                "replayed"
            }
            Repair::Pending { .. } if mode == RepairOnRead::Flag => {
                self.counts.flagged.fetch_add(1, Ordering::Relaxed);
                "flagged"
            }
            Repair::Pending { op, why } => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                let op = op.map(|o| o.to_string());
                tracing::warn!(op = ?op, reason = %why, "repair on read: not replayed; the read is served marked");
                "failed"
            }
        };
        crate::metrics::repair_on_read(result);
    }

    pub(crate) fn status_json(&self, mode: RepairOnRead) -> serde_json::Value {
        serde_json::json!({
            "mode": mode.as_str(),
            "replayed": self.counts.replayed.load(Ordering::Relaxed),
            "flagged": self.counts.flagged.load(Ordering::Relaxed),
            "failed": self.counts.failed.load(Ordering::Relaxed),
        })
    }
}

/// Whether `partition`'s read carrying a token from `token_epoch` may need
/// repair: its epoch is older than the partition's now.
pub(crate) fn suspect(
    topo: &Topology,
    partition: Option<&str>,
    origin: crate::route::ryw::Origin,
    mark: Mark,
) -> Option<Suspect> {
    if topo.config.consistency.repair_on_read == RepairOnRead::Off {
        return None;
    }
    let (_, epoch) = topo.owner_and_epoch(partition)?;
    if origin.epoch >= epoch {
        return None;
    }
    let partition = partition.unwrap_or(crate::route::owners::DEFAULT);
    Some(Suspect {
        entry: topo.owner_entry(partition).to_string(),
        partition: partition.to_string(),
        token_epoch: origin.epoch,
        op: origin.op,
        mark,
    })
}

/// Judges (and in `replay` mode repairs) a suspect read. Never fails the
/// read: whatever goes wrong, it is served, marked.
pub(crate) async fn repair(state: &RouterState, topo: &Topology, s: Suspect) -> Repair {
    let mode = topo.config.consistency.repair_on_read;
    let table = state.ownership.snapshot();
    let Some(promotion) = table
        .promotions
        .iter()
        .filter(|p| p.partition == s.entry && p.from_epoch == s.token_epoch)
        .min_by_key(|p| p.to_epoch)
        .cloned()
    else {
        return Repair::Pending {
            op: s.op,
            why: format!(
                "no record of the promotion after epoch {} of {}",
                s.token_epoch, s.entry
            ),
        };
    };
    if let Mark::Position(p) = s.mark {
        if p <= promotion.applied_position {
            return Repair::NotNeeded;
        }
    }
    let (Some(log), Some(op)) = (state.oplog.as_ref(), s.op) else {
        // Without the log only the position can tell.
        return match s.mark {
            Mark::Position(_) => Repair::Pending {
                op: s.op,
                why: "the new owner had not applied it when promoted; no op log to replay from"
                    .into(),
            },
            Mark::Time(_) => Repair::NotNeeded,
        };
    };
    let failover = FailoverWindow {
        entry: s.entry.clone(),
        old_owner: promotion.from.clone(),
        old_epoch: promotion.from_epoch,
        applied_position: promotion.applied_position,
        new_epoch: promotion.to_epoch,
    };
    let window = match window(state, log, failover).await {
        Ok(w) => w,
        Err(why) => return Repair::Pending { op: Some(op), why },
    };
    let Some(stranded) = window.stranded.get(&op) else {
        // A position past the promotion's proves it missing; a write this
        // log does not hold was taken through another edge (fleet mode).
        return match s.mark {
            Mark::Position(_) if !window.replayed.contains(&op) => Repair::Pending {
                op: Some(op),
                why: "not in this router's op log (taken through another edge): left to the reconciler".into(),
            },
            _ => Repair::NotNeeded,
        };
    };
    if mode == RepairOnRead::Flag {
        return Repair::Pending {
            op: Some(op),
            why: "repair_on_read: flag".into(),
        };
    }
    let cell = {
        let Ok(mut replays) = state.repairs.replays.lock() else {
            return Repair::Pending {
                op: Some(op),
                why: "repair state unavailable".into(),
            };
        };
        replays.entry(op).or_default().clone()
    };
    let result = cell
        .get_or_init(|| replay(topo, log, &window, &s, stranded))
        .await
        .clone();
    if matches!(result, Repair::Pending { .. }) {
        // Not settled: a later read may try again.
        if let Ok(mut replays) = state.repairs.replays.lock() {
            replays.remove(&op);
        }
    }
    result
}

/// The failover's window, read from the log on first use.
async fn window(
    state: &RouterState,
    log: &Arc<crate::store::oplog::OpLog>,
    failover: FailoverWindow,
) -> Result<Arc<Window>, String> {
    let key = (failover.entry.clone(), failover.old_epoch);
    let cell = state
        .repairs
        .windows
        .lock()
        .map_err(|_| "repair state unavailable".to_string())?
        .entry(key.clone())
        .or_default()
        .clone();
    let result = cell
        .get_or_init(|| async {
            log.flush().await;
            let dir = log.dir.clone();
            let scanned = tokio::task::spawn_blocking(move || {
                oplog_scan::stranded_writes(&dir, &failover).map(|scan| (failover, scan))
            })
            .await;
            match scanned {
                Ok(Ok((failover, scan))) => {
                    for p in &scan.problems {
                        tracing::warn!(problem = %p, "repair on read: op log damage");
                    }
                    let mut stranded = scan.stranded;
                    // Replayed by an earlier run of this router: not again.
                    stranded.retain(|op, _| !scan.replayed.contains(op));
                    let replayed = scan.replayed;
                    tracing::info!(
                        entry = %failover.entry,
                        old_epoch = failover.old_epoch,
                        stranded = stranded.len(),
                        "repair on read: failover window read from the op log"
                    );
                    Ok(Arc::new(Window {
                        failover,
                        stranded,
                        written_since: Mutex::new(scan.written_since),
                        replayed,
                    }))
                }
                Ok(Err(e)) => Err(format!("cannot read the op log: {e}")),
                Err(e) => Err(format!("op log scan: {e}")),
            }
        })
        .await
        .clone();
    if result.is_err() {
        // A failed read is tried again by the next read that needs it.
        if let Ok(mut windows) = state.repairs.windows.lock() {
            windows.remove(&key);
        }
    }
    result
}

/// Sends `stranded` to the partition's current owner, logged as a write
/// that replays it.
async fn replay(
    topo: &Topology,
    log: &Arc<crate::store::oplog::OpLog>,
    window: &Window,
    s: &Suspect,
    stranded: &Stranded,
) -> Repair {
    let original = &stranded.intent;
    let op = original.op_id;
    let pending = |why: String| Repair::Pending { op: Some(op), why };
    let Some(key) = &original.idempotency_key else {
        return pending("no idempotency key: a replay could apply it twice".into());
    };
    let body = match &stranded.body {
        Ok(b) => b,
        Err(why) => return pending(format!("not replayable here: {why}")),
    };
    let resource = original.normalized_resource();
    if window
        .written_since
        .lock()
        .map_or(true, |since| since.contains(&resource))
    {
        return pending(format!(
            "the new owner has taken a write to {} since the promotion; left to the reconciler",
            original.resource()
        ));
    }
    let Some((owner, epoch)) = topo.owner_and_epoch(Some(&s.partition)) else {
        return pending("the partition has no owner".into());
    };
    let region = &topo.regions[owner as usize];
    let Some((addr, endpoint)) = region.endpoints.pick_endpoint(None) else {
        return pending(format!("no endpoint of {} is up", region.spec.name));
    };
    let mut headers = original.headers.clone();
    headers.push((REPLAY_OF.to_string(), op.to_string()));
    let intent = Intent {
        op_id: OpId::new(),
        edge_id: log.edge_id.clone(),
        at_ms: unix_ms(),
        partition: original.partition.clone(),
        owner_entry: original.owner_entry.clone(),
        method: original.method.clone(),
        path: original.path.clone(),
        idempotency_key: Some(key.clone()),
        headers,
        body: Body::of(body, topo.config.oplog.max_body_bytes),
        owner: region.spec.name.to_string(),
        epoch,
    };
    let replay_id = intent.op_id;
    let logged = async {
        log.intent(oplog::encode(&Record::Intent(intent.clone()))?)
            .await
    };
    if let Err(why) = logged.await {
        return pending(format!("the replay could not be logged: {why}"));
    }
    let peer = region.transport.peer(
        addr,
        &endpoint.spec,
        REPLAY_TIMEOUT,
        Some(REPLAY_TIMEOUT),
        REPLAY_IDLE,
    );
    let sent = tokio::time::timeout(
        REPLAY_TIMEOUT,
        send(&peer, &endpoint.spec, topo, &intent, body),
    )
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    let (status, position) = match &sent {
        Ok((status, position)) => (*status, *position),
        Err(_) => (0, None),
    };
    let outcome = match status {
        0 => OutcomeKind::Unknown,
        200..=299 => OutcomeKind::Acked,
        400..=499 => OutcomeKind::Rejected,
        _ => OutcomeKind::Failed,
    };
    let record = Record::Outcome(Outcome {
        op_id: replay_id,
        at_ms: unix_ms(),
        status,
        outcome,
        commit_position: position,
        body: None,
    });
    let logged = async { log.outcome(oplog::encode(&record)?).await };
    if let Err(e) = logged.await {
        tracing::error!(op = %replay_id, error = %e, "replay outcome not logged");
    }
    match sent {
        Ok((200..=299, position)) => {
            tracing::info!(op = %op, replay = %replay_id, owner = %region.spec.name, "repair on read: replayed");
            Repair::Replayed {
                op,
                replay: replay_id,
                position,
                epoch,
            }
        }
        Ok((status, _)) => pending(format!(
            "{} answered the replay with {status}",
            region.spec.name
        )),
        Err(why) => pending(format!("the replay to {} failed: {why}", region.spec.name)),
    }
}

/// The replay itself: the write again, with the current fencing token.
async fn send(
    peer: &pingora::upstreams::peer::HttpPeer,
    endpoint: &switchyard_config::Endpoint,
    topo: &Topology,
    intent: &Intent,
    body: &[u8],
) -> Result<(u16, Option<u64>), String> {
    let method = http::Method::from_bytes(intent.method.as_bytes())
        .map_err(|_| format!("the logged method {:?} is not HTTP", intent.method))?;
    let mut req = RequestHeader::build(method, intent.path.as_bytes(), None)
        .map_err(|e| format!("the logged path cannot be sent: {e}"))?;
    let mut set = |name: &str, value: &str| {
        req.insert_header(name.to_string(), value)
            .map_err(|e| format!("header {name}: {e}"))
    };
    for (name, value) in &intent.headers {
        set(name, value)?;
    }
    set(FENCING_TOKEN.as_str(), &intent.epoch.to_string())?;
    if let Some(key) = &intent.idempotency_key {
        set(crate::control::idempotency::HEADER.as_str(), key)?;
    }
    if let Some(h) = &topo.config.consistency.partition.header {
        if intent.partition != crate::route::owners::DEFAULT {
            set(h, &intent.partition)?;
        }
    }
    set("content-length", &body.len().to_string())?;
    let mut session =
        region_client::send_with_body(peer, endpoint, req, Bytes::copy_from_slice(body))
            .await
            .map_err(|e| e.to_string())?;
    let (status, position) = session
        .response_header()
        .map(|r| {
            (
                r.status.as_u16(),
                r.headers
                    .get(COMMIT_POSITION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            )
        })
        .unwrap_or((502, None));
    while let Ok(Some(_)) = session.read_response_body().await {}
    region_client::release(session, peer, REPLAY_IDLE).await;
    Ok((status, position))
}
