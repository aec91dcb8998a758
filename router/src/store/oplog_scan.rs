//! Reading this router's op log back: the acknowledged writes an owner took
//! under its current epoch (what a promotion would strand above the
//! target's applied position).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use switchyard_oplog::{Body, OpId, OutcomeKind, Record};

/// One acknowledged write, or one sent whose outcome is not logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Acked {
    pub op_id: OpId,
    pub at_ms: u64,
    /// The owner's commit position; `None` when it sent none or has not
    /// answered yet (then nobody can tell whether a replica has it).
    pub position: Option<u64>,
    /// Kept whole with an idempotency key: the reconciler could replay it.
    pub replayable: bool,
}

/// The owner and epoch whose writes are wanted, per ownership entry.
pub type Wanted = HashMap<String, (String, u64)>;

/// Acknowledged writes by ownership entry, and the problems met reading.
pub type AckedScan = (HashMap<String, Vec<Acked>>, Vec<String>);

/// Every acknowledged write in `dir` to an entry of `wanted`, under that
/// entry's owner and epoch, in log order, then those sent and not yet
/// answered; and the problems met reading.
pub fn acked_writes(dir: &Path, wanted: &Wanted) -> io::Result<AckedScan> {
    // Intents waiting for their outcome: only those of the wanted groups.
    let mut open: HashMap<OpId, (String, u64, bool)> = HashMap::new();
    let mut out: HashMap<String, Vec<Acked>> = HashMap::new();
    let problems = switchyard_oplog::read::read_dir(dir, 0, |_, record| match record {
        Record::Intent(i) => {
            let wanted_here = wanted
                .get(&i.owner_entry)
                .is_some_and(|(owner, epoch)| *owner == i.owner && *epoch == i.epoch);
            if wanted_here {
                let kept = matches!(i.body, Body::Inline(_) | Body::InOutcome);
                let replayable = kept && i.idempotency_key.is_some();
                open.insert(i.op_id, (i.owner_entry, i.at_ms, replayable));
            }
        }
        Record::Outcome(o) => {
            if let Some((entry, at_ms, replayable)) = open.remove(&o.op_id) {
                if o.outcome == OutcomeKind::Acked {
                    // A streamed body is replayable only if it was kept whole.
                    let replayable = replayable && !matches!(o.body, Some(Body::Hashed { .. }));
                    out.entry(entry).or_default().push(Acked {
                        op_id: o.op_id,
                        at_ms,
                        position: o.commit_position,
                        replayable,
                    });
                }
            }
        }
        Record::Promotion(_) | Record::Gap(_) => {}
    })?;
    // Sent with no outcome logged yet (in flight, or the router stopped
    // before it knew): the owner may have taken them, so they count, with
    // no position, after the answered ones.
    let mut unanswered: Vec<_> = open.into_iter().collect();
    unanswered.sort_by_key(|(_, (_, at_ms, _))| *at_ms);
    for (op_id, (entry, at_ms, replayable)) in unanswered {
        out.entry(entry).or_default().push(Acked {
            op_id,
            at_ms,
            position: None,
            replayable,
        });
    }
    Ok((out, problems.iter().map(ToString::to_string).collect()))
}

/// One failover as repair on read sees it: whose writes under which epoch,
/// and how far the new owner had applied when it was promoted.
#[derive(Debug, Clone)]
pub(crate) struct FailoverWindow {
    pub entry: String,
    pub old_owner: String,
    pub old_epoch: u64,
    pub applied_position: u64,
    pub new_epoch: u64,
}

/// A write the new owner lacked at promotion, whole, as a replay needs it.
#[derive(Debug, Clone)]
pub(crate) struct Stranded {
    pub intent: switchyard_oplog::Intent,
    /// The body to send again; `None` when only its hash was kept.
    pub body: Option<Vec<u8>>,
}

/// What the log says about a failover's window.
#[derive(Debug, Default)]
pub(crate) struct StrandedScan {
    /// Acknowledged (or unanswered) writes of the old owner under the old
    /// epoch above the new owner's applied position, by op id.
    pub stranded: HashMap<OpId, Stranded>,
    /// Resources (normalized) the new owner has taken writes to since: a
    /// replay there could overwrite a newer value.
    pub written_since: std::collections::HashSet<String>,
    /// Ops already replayed on a read (by an earlier run of this router).
    pub replayed: std::collections::HashSet<OpId>,
    pub problems: Vec<String>,
}

/// Reads `dir` for `window`: the writes it stranded, and what happened since.
pub(crate) fn stranded_writes(dir: &Path, window: &FailoverWindow) -> io::Result<StrandedScan> {
    let mut open: HashMap<OpId, switchyard_oplog::Intent> = HashMap::new();
    let mut out = StrandedScan::default();
    let problems = switchyard_oplog::read::read_dir(dir, 0, |_, record| match record {
        Record::Intent(i) if i.owner_entry == window.entry => {
            if i.epoch >= window.new_epoch {
                // Since the promotion: a replay made on a read, or a new write.
                match i.replay_of() {
                    Some(of) => {
                        out.replayed.insert(of);
                    }
                    None => {
                        out.written_since.insert(i.normalized_resource());
                    }
                }
            } else if i.owner == window.old_owner && i.epoch == window.old_epoch {
                open.insert(i.op_id, i);
            }
        }
        Record::Outcome(o) => {
            let Some(intent) = open.remove(&o.op_id) else {
                return;
            };
            let above = o
                .commit_position
                .is_none_or(|p| p > window.applied_position);
            if o.outcome == OutcomeKind::Acked && above {
                let body = match (&intent.body, &o.body) {
                    (Body::Inline(b), _) | (Body::InOutcome, Some(Body::Inline(b))) => {
                        Some(b.clone())
                    }
                    _ => None,
                };
                out.stranded.insert(
                    o.op_id,
                    Stranded { intent, body },
                );
            }
        }
        _ => {}
    })?;
    // Sent and never answered in the log: the old owner may have taken them.
    for (op_id, intent) in open {
        let body = match &intent.body {
            Body::Inline(b) => Some(b.clone()),
            _ => None,
        };
        out.stranded.insert(
            op_id,
            Stranded { intent, body },
        );
    }
    out.problems = problems.iter().map(ToString::to_string).collect();
    Ok(out)
}
