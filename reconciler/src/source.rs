//! Reading op logs: one or more router folders, or a JetStream stream. The
//! records of every edge are joined by op id (an intent and its outcome),
//! promotions are kept once each, and everything that could not be read is
//! a named problem, never a silent skip.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use switchyard_oplog::{codec, read_dir, Gap, Intent, OpId, Outcome, Problem, Promotion, Record};

/// A write as the logs tell it.
#[derive(Debug, Clone)]
pub struct Op {
    pub intent: Intent,
    /// `None`: the router never logged how it ended (it stopped first).
    pub outcome: Option<Outcome>,
}

/// Everything read, joined.
#[derive(Debug, Default)]
pub struct Logs {
    pub ops: BTreeMap<OpId, Op>,
    /// Promotions by (partition, new epoch): the same one seen from several
    /// sources is kept once.
    pub promotions: BTreeMap<(String, u64), Promotion>,
    /// Records seen twice (the same op's intent from two sources, say).
    pub duplicates: u64,
    /// What could not be read: damage, newer formats, torn tails.
    pub problems: Vec<String>,
    /// How many of the problems may hide a record (damage, newer formats).
    pub unreadable: u64,
    /// Outcomes whose intent was not found.
    pub orphans: Vec<Outcome>,
    /// Records an edge deleted before its sink had them, by (edge, first seq).
    pub gaps: BTreeMap<(String, u64), Gap>,
}

impl Logs {
    /// How many records the gaps hold: writes nobody can replay from these logs.
    pub fn lost_records(&self) -> u64 {
        self.gaps.values().map(|g| g.to_seq - g.from_seq).sum()
    }
}

impl Logs {
    fn add(&mut self, r: Record) {
        match r {
            Record::Intent(i) => match self.ops.get_mut(&i.op_id) {
                Some(_) => self.duplicates += 1,
                None => {
                    self.ops.insert(
                        i.op_id,
                        Op {
                            intent: i,
                            outcome: None,
                        },
                    );
                }
            },
            Record::Outcome(o) => match self.ops.get_mut(&o.op_id) {
                Some(op) if op.outcome.is_some() => self.duplicates += 1,
                Some(op) => op.outcome = Some(o),
                None => self.orphans.push(o),
            },
            Record::Promotion(p) => {
                let key = (p.partition.clone(), p.to_epoch);
                if self.promotions.insert(key, p).is_some() {
                    self.duplicates += 1;
                }
            }
            Record::Gap(g) => {
                let key = (g.edge_id.clone(), g.from_seq);
                if self.gaps.contains_key(&key) {
                    self.duplicates += 1;
                    return;
                }
                self.problems.push(format!(
                    "edge {}: records {}..{} ({} bytes of log) were deleted before NATS had them (the backlog passed oplog.max_backlog_bytes while NATS was away); the writes among them cannot be checked or replayed from the stream",
                    g.edge_id, g.from_seq, g.to_seq, g.bytes
                ));
                self.gaps.insert(key, g);
            }
        }
    }

    /// Joins outcomes read before their intents (several sources, any order).
    fn settle(&mut self) {
        let orphans = std::mem::take(&mut self.orphans);
        for o in orphans {
            match self.ops.get_mut(&o.op_id) {
                Some(op) if op.outcome.is_none() => op.outcome = Some(o),
                Some(_) => self.duplicates += 1,
                None => self.orphans.push(o),
            }
        }
    }

    fn problem(&mut self, p: &Problem) {
        if !matches!(p, Problem::TornTail { .. }) {
            self.unreadable += 1;
        }
        self.problems.push(p.to_string());
    }
}

/// The op log folder for `dir`: the folder itself, or its `oplog/` when it
/// is a router's state directory.
pub fn oplog_dir(dir: &Path) -> PathBuf {
    let inner = dir.join("oplog");
    if inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

/// Reads every record of every folder.
pub fn read_dirs(dirs: &[PathBuf]) -> anyhow::Result<Logs> {
    let mut logs = Logs::default();
    for dir in dirs {
        let dir = oplog_dir(dir);
        let segments = switchyard_oplog::segment::list(&dir)
            .with_context(|| format!("--oplog {}: cannot list", dir.display()))?;
        if segments.is_empty() {
            anyhow::bail!("--oplog {}: no op log segments (*.seg) here", dir.display());
        }
        let problems = read_dir(&dir, 0, |_, r| logs.add(r))
            .with_context(|| format!("--oplog {}: cannot read", dir.display()))?;
        for p in &problems {
            logs.problem(p);
        }
    }
    logs.settle();
    Ok(logs)
}

/// Reads every record in a JetStream stream, from its first message to the
/// last one there when reading began.
pub async fn read_stream(url: &str, stream: &str) -> anyhow::Result<Logs> {
    let mut logs = Logs::default();
    switchyard_oplog::stream::read(url, stream, |seq, frame| match frame {
        codec::Frame::Record { record, .. } => logs.add(record),
        codec::Frame::Newer { version, .. } => {
            logs.unreadable += 1;
            logs.problems.push(format!(
                "stream {stream} message {seq}: a record in format {version}, newer than this build reads ({}); upgrade to read it",
                codec::VERSION
            ));
        }
        codec::Frame::Partial | codec::Frame::Damaged(_) => {
            logs.unreadable += 1;
            logs.problems.push(format!(
                "stream {stream} message {seq}: not a whole op log record"
            ));
        }
    })
    .await
    .with_context(|| format!("--nats {url} --stream {stream}"))?;
    logs.settle();
    Ok(logs)
}

/// Per-op index by resource, for the conflict check.
pub fn by_resource(logs: &Logs) -> HashMap<String, Vec<&Op>> {
    let mut out: HashMap<String, Vec<&Op>> = HashMap::new();
    for op in logs.ops.values() {
        out.entry(op.intent.normalized_resource())
            .or_default()
            .push(op);
    }
    out
}
