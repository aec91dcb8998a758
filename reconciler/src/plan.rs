//! Planning: each promotion is a failover; the writes its old owner took
//! under the old epoch that were acknowledged (or whose end is unknown) are
//! its window. Each gets a verdict before anything is sent:
//!
//! - `already_present`: the region's commit position is at or below the new
//!   owner's applied position at promotion (it had replicated it);
//! - `conflict`: the new owner has since taken a write to the same resource:
//!   both are reported, neither is replayed;
//! - `not_replayable`: no idempotency key (a replay could apply it twice) or
//!   only the body's hash was logged;
//! - `replayed_on_read`: a router already replayed it to the new owner when
//!   the client that wrote it read after the failover (repair on read); the
//!   replay is in the logs, marked with the op it replays;
//! - `replay`: safe to send to the partition's current owner with its
//!   original key and the current fencing token.

use serde::Serialize;
use std::collections::BTreeMap;

use switchyard_oplog::{Body, OpId, OutcomeKind, Promotion};

use crate::source::{by_resource, Logs, Op};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    AlreadyPresent,
    /// To be replayed (a dry run leaves it here).
    Replay,
    Replayed,
    /// A router replayed it to the new owner on the client's read.
    ReplayedOnRead,
    Conflict,
    /// A replay was tried and did not take.
    Failed,
    NotReplayable,
    /// Not sent: the partition's current owner is not the one the logs end
    /// with (a promotion missing from the logs given, or owners unknown).
    StaleTarget,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::AlreadyPresent => "already_present",
            Verdict::Replay => "replay",
            Verdict::Replayed => "replayed",
            Verdict::ReplayedOnRead => "replayed_on_read",
            Verdict::Conflict => "conflict",
            Verdict::Failed => "failed",
            Verdict::NotReplayable => "not_replayable",
            Verdict::StaleTarget => "stale_target",
        }
    }

    /// Whether the op still needs a human (or another run).
    pub fn unresolved(self) -> bool {
        !matches!(
            self,
            Verdict::AlreadyPresent | Verdict::Replayed | Verdict::ReplayedOnRead
        )
    }
}

/// One failover and where its lost writes go now.
#[derive(Debug, Clone)]
pub struct Failover {
    pub promotion: Promotion,
    /// The partition's owner now (after any later promotions) and its epoch.
    pub target: String,
    pub target_epoch: u64,
}

/// A write in a failover's window, with its verdict.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub op: Op,
    /// Index into [`Plan::failovers`].
    pub failover: usize,
    pub verdict: Verdict,
    pub reason: String,
    /// For a conflict: the new owner's write to the same resource.
    pub conflict_with: Option<Op>,
    /// For a replay sent: the new owner's status and commit position.
    pub replay_status: Option<u16>,
    pub replay_position: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub failovers: Vec<Failover>,
    pub candidates: Vec<Candidate>,
}

impl Plan {
    /// The candidates with `verdict`, in plan order.
    pub fn with_verdict(&self, verdict: Verdict) -> impl Iterator<Item = &Candidate> {
        self.candidates.iter().filter(move |c| c.verdict == verdict)
    }
}

fn outcome_of(op: &Op) -> OutcomeKind {
    op.outcome
        .as_ref()
        .map_or(OutcomeKind::Unknown, |o| o.outcome)
}

/// The body a replay would send, if the log has it whole.
pub fn replay_body(op: &Op) -> Option<&[u8]> {
    match &op.intent.body {
        Body::Inline(b) => Some(b),
        Body::InOutcome => match op.outcome.as_ref().and_then(|o| o.body.as_ref()) {
            Some(Body::Inline(b)) => Some(b),
            _ => None,
        },
        Body::Hashed { .. } => None,
    }
}

pub fn plan(logs: &Logs) -> Plan {
    let mut out = Plan::default();
    let resources = by_resource(logs);
    // Replays routers made on reads, by the op they replay: the taken ones.
    let replayed_on_read: BTreeMap<OpId, &Op> = logs
        .ops
        .values()
        .filter(|o| outcome_of(o) == OutcomeKind::Acked)
        .filter_map(|o| Some((o.intent.replay_of()?, o)))
        .collect();
    let mut promotions: Vec<&Promotion> = logs.promotions.values().collect();
    promotions.sort_by_key(|p| (p.at_ms, p.to_epoch));
    for p in &promotions {
        let last = logs
            .promotions
            .range((p.partition.clone(), 0)..=(p.partition.clone(), u64::MAX))
            .next_back()
            .map(|(_, last)| last)
            .unwrap_or(p);
        let index = out.failovers.len();
        out.failovers.push(Failover {
            promotion: (*p).clone(),
            target: last.to.clone(),
            target_epoch: last.to_epoch,
        });
        for op in logs.ops.values() {
            let i = &op.intent;
            let under_old_owner =
                i.owner == p.from && i.epoch == p.from_epoch && i.owner_entry == p.partition;
            if !under_old_owner
                || !matches!(outcome_of(op), OutcomeKind::Acked | OutcomeKind::Unknown)
            {
                continue;
            }
            let (verdict, reason, conflict_with) = match replayed_on_read.get(&op.intent.op_id) {
                Some(replay) => (
                    Verdict::ReplayedOnRead,
                    format!(
                        "replayed to {} (epoch {}) by edge {} when its client read after the failover (op {}, status {}); not sent again",
                        replay.intent.owner,
                        replay.intent.epoch,
                        replay.intent.edge_id,
                        replay.intent.op_id,
                        replay.outcome.as_ref().map_or(0, |o| o.status)
                    ),
                    None,
                ),
                None => judge(op, p, &resources),
            };
            out.candidates.push(Candidate {
                op: op.clone(),
                failover: index,
                verdict,
                reason,
                conflict_with: conflict_with.cloned(),
                replay_status: None,
                replay_position: None,
            });
        }
    }
    // Replays go partition by partition in the order the old owner committed
    // them (positions first; writes without one after, in the order they came).
    out.candidates.sort_by_key(|c| {
        let i = &c.op.intent;
        let position = c.op.outcome.as_ref().and_then(|o| o.commit_position);
        (
            c.failover,
            i.partition.clone(),
            position.unwrap_or(u64::MAX),
            i.at_ms,
            i.op_id,
        )
    });
    out
}

/// Each partition's owner and epoch now, as the routers' shared truth says.
#[derive(Debug, Clone, Default)]
pub struct CurrentOwners {
    /// Where they were read: the ownership file or etcd.
    pub source: String,
    pub partitions: BTreeMap<String, (String, u64)>,
}

/// Holds back every replay whose target is not the partition's owner now.
/// The target comes from the last promotion in the logs given; a promotion
/// missing from them (another edge's log left out) would send the writes to
/// a demoted region with a stale fencing token. `current` is `Err` when the
/// owners could not be read: nothing is sent then.
pub fn check_targets(plan: &mut Plan, current: &Result<CurrentOwners, String>) {
    for (index, f) in plan.failovers.iter().enumerate() {
        let partition = &f.promotion.partition;
        let why = match current {
            Err(e) => Some(format!(
                "the current owners could not be read ({e}): a replay might reach a demoted owner"
            )),
            Ok(c) => match c.partitions.get(partition) {
                Some((region, epoch)) if *region == f.target && *epoch == f.target_epoch => None,
                Some((region, epoch)) if *epoch > f.target_epoch => Some(format!(
                    "{} says partition {partition} is owned by {region} at epoch {epoch}, but the logs given end with {} at epoch {}: a later promotion is missing from them (give every edge's log)",
                    c.source, f.target, f.target_epoch
                )),
                Some((region, epoch)) => Some(format!(
                    "{} says partition {partition} is owned by {region} at epoch {epoch}, but the logs given end with {} at epoch {}",
                    c.source, f.target, f.target_epoch
                )),
                None => Some(format!(
                    "{} has no owner for partition {partition}",
                    c.source
                )),
            },
        };
        let Some(why) = why else { continue };
        for c in plan
            .candidates
            .iter_mut()
            .filter(|c| c.failover == index && c.verdict == Verdict::Replay)
        {
            c.verdict = Verdict::StaleTarget;
            c.reason = why.clone();
        }
    }
}

fn judge<'a>(
    op: &Op,
    p: &Promotion,
    resources: &std::collections::HashMap<String, Vec<&'a Op>>,
) -> (Verdict, String, Option<&'a Op>) {
    let position = op.outcome.as_ref().and_then(|o| o.commit_position);
    if let Some(pos) = position {
        if p.applied_position > 0 && pos <= p.applied_position {
            return (
                Verdict::AlreadyPresent,
                format!(
                    "commit position {pos} is at or below {}'s applied position {} at promotion",
                    p.to, p.applied_position
                ),
                None,
            );
        }
    }
    let newer = resources
        .get(&op.intent.normalized_resource())
        .and_then(|ops| {
            ops.iter()
                .filter(|o| {
                    o.intent.epoch >= p.to_epoch
                        && o.intent.owner_entry == p.partition
                        // A replay of a lost write is that write, not a newer one.
                        && o.intent.replay_of().is_none()
                        && matches!(outcome_of(o), OutcomeKind::Acked | OutcomeKind::Unknown)
                })
                .min_by_key(|o| o.intent.at_ms)
                .copied()
        });
    if let Some(newer) = newer {
        return (
            Verdict::Conflict,
            format!(
                "{} has since taken a write to {} (op {}, epoch {}): both versions reported, neither replayed",
                newer.intent.owner,
                op.intent.resource(),
                newer.intent.op_id,
                newer.intent.epoch
            ),
            Some(newer),
        );
    }
    if op.intent.idempotency_key.is_none() {
        return (
            Verdict::NotReplayable,
            "no Idempotency-Key: a replay could apply it twice".into(),
            None,
        );
    }
    if replay_body(op).is_none() {
        return (
            Verdict::NotReplayable,
            "the body was over oplog.max_body_bytes; only its hash was logged".into(),
            None,
        );
    }
    let why = match (position, outcome_of(op)) {
        (Some(pos), _) => format!(
            "commit position {pos} is past {}'s applied position {} at promotion",
            p.to, p.applied_position
        ),
        (None, OutcomeKind::Unknown) => {
            "the old owner's answer never came: it may or may not have applied it".into()
        }
        (None, _) => "acknowledged without a commit position: the new owner is asked".into(),
    };
    (Verdict::Replay, why, None)
}

/// Counts for the report's summary.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub ops_scanned: u64,
    pub in_window: u64,
    pub already_present: u64,
    pub replayed: u64,
    /// Replayed by a router on the client's read (repair on read).
    pub replayed_on_read: u64,
    pub conflicts: u64,
    pub failed: u64,
    pub unresolved: u64,
    /// Left to replay (a dry run).
    pub to_replay: u64,
    pub not_replayable: u64,
    /// Held back: the current owner is not the one the logs end with.
    pub stale_target: u64,
    /// Records that could not be read (damage, newer formats).
    pub unreadable_records: u64,
    /// Records an edge deleted before its sink had them (gap records).
    pub lost_records: u64,
}

pub fn summarize(logs: &Logs, plan: &Plan) -> Summary {
    let mut s = Summary {
        ops_scanned: logs.ops.len() as u64,
        in_window: plan.candidates.len() as u64,
        unreadable_records: logs.unreadable,
        lost_records: logs.lost_records(),
        ..Summary::default()
    };
    for c in &plan.candidates {
        match c.verdict {
            Verdict::AlreadyPresent => s.already_present += 1,
            Verdict::Replay => s.to_replay += 1,
            Verdict::Replayed => s.replayed += 1,
            Verdict::ReplayedOnRead => s.replayed_on_read += 1,
            Verdict::Conflict => s.conflicts += 1,
            Verdict::Failed => s.failed += 1,
            Verdict::NotReplayable => s.not_replayable += 1,
            Verdict::StaleTarget => s.stale_target += 1,
        }
        if c.verdict.unresolved() {
            s.unresolved += 1;
        }
    }
    s.unresolved += logs.unreadable + s.lost_records;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_oplog::{Intent, OpId, Outcome, Record};

    fn write(n: u64, owner: &str, epoch: u64, pos: Option<u64>, kind: OutcomeKind) -> Vec<Record> {
        let id = OpId::new();
        vec![
            Record::Intent(Intent {
                op_id: id,
                edge_id: "e1".into(),
                at_ms: 1000 + n,
                partition: "default".into(),
                owner_entry: "default".into(),
                method: "PUT".into(),
                path: format!("/kv/k{n}"),
                idempotency_key: Some(format!("key-{n}")),
                headers: vec![],
                body: Body::Inline(format!("v{n}").into_bytes()),
                owner: owner.into(),
                epoch,
            }),
            Record::Outcome(Outcome {
                op_id: id,
                at_ms: 1001 + n,
                status: 201,
                outcome: kind,
                commit_position: pos,
                body: None,
            }),
        ]
    }

    fn promotion() -> Record {
        Record::Promotion(Promotion {
            at_ms: 5000,
            edge_id: "e1".into(),
            partition: "default".into(),
            from: "a".into(),
            to: "b".into(),
            from_epoch: 1,
            to_epoch: 2,
            applied_position: 8,
            forced: true,
            reason: "manual".into(),
        })
    }

    fn logs(records: Vec<Record>) -> Logs {
        let dir = std::env::temp_dir().join(format!("sy-plan-{}", OpId::new()));
        let (mut w, _) = switchyard_oplog::Writer::open(&dir, Default::default()).expect("open");
        for r in &records {
            w.append(r).expect("append");
        }
        drop(w);
        let l = crate::source::read_dirs(std::slice::from_ref(&dir)).expect("read");
        let _ = std::fs::remove_dir_all(&dir);
        l
    }

    #[test]
    fn verdicts_follow_position_conflict_and_keys() {
        let mut r = Vec::new();
        for n in 1..=10 {
            r.extend(write(n, "a", 1, Some(n), OutcomeKind::Acked));
        }
        // Refused by the old owner: not in the window at all.
        r.extend(write(11, "a", 1, None, OutcomeKind::Rejected));
        // Never answered.
        r.extend(write(12, "a", 1, None, OutcomeKind::Unknown));
        r.push(promotion());
        // The new owner takes a write to k10's resource.
        r.extend(write(10, "b", 2, Some(9), OutcomeKind::Acked));
        let l = logs(r);
        let p = plan(&l);
        let s = summarize(&l, &p);
        assert_eq!(p.failovers.len(), 1);
        assert_eq!(p.failovers[0].target, "b");
        assert_eq!(s.ops_scanned, 13);
        assert_eq!(s.in_window, 11, "{s:?}");
        assert_eq!(s.already_present, 8);
        assert_eq!(s.conflicts, 1);
        assert_eq!(s.to_replay, 2, "k9 and the unanswered k12");
        assert_eq!(s.unresolved, 3);
        let conflict = p.with_verdict(Verdict::Conflict).next().expect("conflict");
        assert_eq!(conflict.op.intent.path, "/kv/k10");
        assert_eq!(
            conflict.conflict_with.as_ref().map(|o| o.intent.epoch),
            Some(2)
        );
    }

    #[test]
    fn a_write_replayed_on_read_is_not_replayed_again_nor_a_conflict() {
        let mut r = Vec::new();
        for n in 1..=10 {
            r.extend(write(n, "a", 1, Some(n), OutcomeKind::Acked));
        }
        r.push(promotion());
        // A router replayed k9 to b on its client's read; k10's replay was refused.
        for (n, kind) in [(9, OutcomeKind::Acked), (10, OutcomeKind::Rejected)] {
            let original = r
                .iter()
                .find_map(|rec| match rec {
                    Record::Intent(i) if i.path == format!("/kv/k{n}") => Some(i.op_id),
                    _ => None,
                })
                .expect("written");
            let mut replay = write(n, "b", 2, Some(20 + n), kind);
            if let Record::Intent(i) = &mut replay[0] {
                i.headers
                    .push((switchyard_oplog::REPLAY_OF.into(), original.to_string()));
            }
            r.extend(replay);
        }
        let l = logs(r);
        let p = plan(&l);
        let s = summarize(&l, &p);
        assert_eq!(
            (s.replayed_on_read, s.to_replay, s.conflicts),
            (1, 1, 0),
            "{s:?}"
        );
        let on_read = p.with_verdict(Verdict::ReplayedOnRead).next().expect("k9");
        assert_eq!(on_read.op.intent.path, "/kv/k9");
        assert!(
            on_read.reason.contains("not sent again"),
            "{}",
            on_read.reason
        );
        assert_eq!(s.unresolved, 1, "only k10 is left");
    }

    #[test]
    fn the_report_page_keeps_the_promotion_label_inside_its_chart() {
        // The promotion is the last thing on the timeline: its label must
        // run leftwards from the line, not off the chart's right edge.
        let mut r = Vec::new();
        for n in 1..=10 {
            r.extend(write(n, "a", 1, Some(n), OutcomeKind::Acked));
        }
        r.push(promotion());
        let l = logs(r);
        let p = plan(&l);
        let s = summarize(&l, &p);
        let run = crate::report::Run {
            mode: "dry_run",
            sources: vec![],
            generated_at_ms: 0,
        };
        let page = crate::report::html(&run, &l, &p, &s);
        assert!(
            page.contains(r#"text-anchor="end">promotion a → b (epoch 2)"#),
            "{page}"
        );
        assert!(page.contains("8 writes already present"), "{page}");
    }

    #[test]
    fn a_conflict_is_found_whatever_spelling_the_path_had() {
        let mut r = Vec::new();
        r.extend(write(20, "a", 1, Some(20), OutcomeKind::Acked));
        r.push(promotion());
        let mut newer = write(20, "b", 2, Some(9), OutcomeKind::Acked);
        if let Record::Intent(i) = &mut newer[0] {
            i.path = "/kv//./k20?x=1".into();
        }
        r.extend(newer);
        let p = plan(&logs(r));
        assert_eq!(p.with_verdict(Verdict::Conflict).count(), 1);
    }

    #[test]
    fn replays_go_in_commit_order() {
        let mut r = Vec::new();
        // Logged in one order, committed by the old owner in another.
        for (n, pos) in [(31, 40), (32, 35), (33, 50), (34, 30)] {
            r.extend(write(n, "a", 1, Some(pos), OutcomeKind::Acked));
        }
        r.extend(write(35, "a", 1, None, OutcomeKind::Unknown));
        r.push(promotion());
        let p = plan(&logs(r));
        let order: Vec<&str> = p
            .with_verdict(Verdict::Replay)
            .map(|c| c.op.intent.path.as_str())
            .collect();
        assert_eq!(
            order,
            ["/kv/k34", "/kv/k32", "/kv/k31", "/kv/k33", "/kv/k35"]
        );
    }
}
