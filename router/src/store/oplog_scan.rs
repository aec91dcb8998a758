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

/// Gathers acknowledged writes from records fed in any number of sources
/// (the stream, then this edge's log): a record seen twice counts once.
pub struct AckedScanner {
    wanted: Wanted,
    /// Intents waiting for their outcome: only those of the wanted groups.
    open: HashMap<OpId, (String, u64, bool)>,
    /// Ops whose outcome was seen (an intent seen again is not reopened).
    closed: std::collections::HashSet<OpId>,
    out: HashMap<String, Vec<Acked>>,
}

impl AckedScanner {
    pub fn new(wanted: Wanted) -> Self {
        AckedScanner {
            wanted,
            open: HashMap::new(),
            closed: std::collections::HashSet::new(),
            out: HashMap::new(),
        }
    }

    pub fn add(&mut self, record: Record) {
        match record {
            Record::Intent(i) => {
                let wanted_here = self
                    .wanted
                    .get(&i.owner_entry)
                    .is_some_and(|(owner, epoch)| *owner == i.owner && *epoch == i.epoch);
                if wanted_here && !self.closed.contains(&i.op_id) {
                    let kept = matches!(i.body, Body::Inline(_) | Body::InOutcome);
                    let replayable = kept && i.idempotency_key.is_some();
                    self.open
                        .insert(i.op_id, (i.owner_entry, i.at_ms, replayable));
                }
            }
            Record::Outcome(o) => {
                if let Some((entry, at_ms, replayable)) = self.open.remove(&o.op_id) {
                    self.closed.insert(o.op_id);
                    if o.outcome == OutcomeKind::Acked {
                        // A streamed body is replayable only if it was kept whole.
                        let replayable = replayable && !matches!(o.body, Some(Body::Hashed { .. }));
                        self.out.entry(entry).or_default().push(Acked {
                            op_id: o.op_id,
                            at_ms,
                            position: o.commit_position,
                            replayable,
                        });
                    }
                }
            }
            Record::Promotion(_) | Record::Gap(_) => {}
        }
    }

    /// The acknowledged writes by entry, in the order fed, then those sent
    /// and not answered: the owner may have taken them, so they count, with
    /// no position, after the answered ones.
    pub fn finish(mut self) -> HashMap<String, Vec<Acked>> {
        let mut unanswered: Vec<_> = self.open.into_iter().collect();
        unanswered.sort_by_key(|(_, (_, at_ms, _))| *at_ms);
        for (op_id, (entry, at_ms, replayable)) in unanswered {
            self.out.entry(entry).or_default().push(Acked {
                op_id,
                at_ms,
                position: None,
                replayable,
            });
        }
        self.out
    }

    /// Feeds every record of the log in `dir`; the problems met reading.
    pub fn read_dir(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let problems = switchyard_oplog::read::read_dir(dir, 0, |_, record| self.add(record))?;
        Ok(problems.iter().map(ToString::to_string).collect())
    }
}

/// Every acknowledged write in `dir` to an entry of `wanted`, under that
/// entry's owner and epoch, in log order, then those sent and not yet
/// answered; and the problems met reading.
pub fn acked_writes(dir: &Path, wanted: &Wanted) -> io::Result<AckedScan> {
    let mut scanner = AckedScanner::new(wanted.clone());
    let problems = scanner.read_dir(dir)?;
    Ok((scanner.finish(), problems))
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

/// The most body bytes a failover's window holds in memory for replays;
/// writes past it are left to the reconciler.
pub(crate) const WINDOW_BODY_BUDGET: usize = 64 << 20;

/// A write the new owner lacked at promotion, as a replay needs it.
#[derive(Debug, Clone)]
pub(crate) struct Stranded {
    pub intent: switchyard_oplog::Intent,
    /// The body to send again; `Err` says why there is none.
    pub body: Result<Vec<u8>, &'static str>,
}

impl Stranded {
    /// Takes the body from the intent (or, for one that streamed, its
    /// outcome), within what `budget` has left.
    fn new(
        mut intent: switchyard_oplog::Intent,
        outcome_body: Option<Body>,
        budget: &mut usize,
    ) -> Stranded {
        let whole = match (
            std::mem::replace(&mut intent.body, Body::InOutcome),
            outcome_body,
        ) {
            (Body::Inline(b), _) | (Body::InOutcome, Some(Body::Inline(b))) => Some(b),
            _ => None,
        };
        let body = match whole {
            None => Err("only the body's hash was logged"),
            Some(b) if b.len() > *budget => {
                Err("past the bodies a failover's window holds in memory (64 MiB)")
            }
            Some(b) => {
                *budget -= b.len();
                Ok(b)
            }
        };
        Stranded { intent, body }
    }
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
    let mut budget = WINDOW_BODY_BUDGET;
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
                let stranded = Stranded::new(intent, o.body, &mut budget);
                out.stranded.insert(o.op_id, stranded);
            }
        }
        _ => {}
    })?;
    // Sent and never answered in the log: the old owner may have taken them.
    for (op_id, intent) in open {
        out.stranded
            .insert(op_id, Stranded::new(intent, None, &mut budget));
    }
    out.problems = problems.iter().map(ToString::to_string).collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_oplog::{Intent, Outcome};

    fn intent(id: OpId) -> Record {
        Record::Intent(Intent {
            op_id: id,
            edge_id: "e".into(),
            at_ms: 1,
            partition: "default".into(),
            owner_entry: "default".into(),
            method: "PUT".into(),
            path: "/kv/a".into(),
            idempotency_key: Some("k".into()),
            headers: vec![],
            body: Body::Inline(b"v".to_vec()),
            owner: "a".into(),
            epoch: 1,
        })
    }

    fn outcome(id: OpId, position: u64) -> Record {
        Record::Outcome(Outcome {
            op_id: id,
            at_ms: 2,
            status: 201,
            outcome: OutcomeKind::Acked,
            commit_position: Some(position),
            body: None,
        })
    }

    #[test]
    fn a_write_seen_in_the_stream_and_the_local_log_counts_once() {
        let wanted: Wanted = [("default".to_string(), ("a".to_string(), 1))].into();
        let (seen_twice, only_local, unanswered_in_stream) =
            (OpId::new(), OpId::new(), OpId::new());
        let mut s = AckedScanner::new(wanted);
        // The stream: one whole write, and one whose outcome was not forwarded yet.
        for r in [
            intent(seen_twice),
            outcome(seen_twice, 5),
            intent(unanswered_in_stream),
        ] {
            s.add(r);
        }
        // This edge's log: all three whole.
        for r in [
            intent(seen_twice),
            outcome(seen_twice, 5),
            intent(unanswered_in_stream),
            outcome(unanswered_in_stream, 6),
            intent(only_local),
            outcome(only_local, 7),
        ] {
            s.add(r);
        }
        let writes = s.finish();
        let positions: Vec<Option<u64>> = writes["default"].iter().map(|w| w.position).collect();
        assert_eq!(positions, vec![Some(5), Some(6), Some(7)]);
    }
}
