//! What the op log holds: a write's intent (before it is forwarded), its
//! outcome (after), and promotions. An intent and its outcome share the op id.

use serde::{Deserialize, Serialize};

use crate::encoded::BodyRef;

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Intent(Intent),
    Outcome(Outcome),
    Promotion(Promotion),
    /// Records deleted before a sink forwarded them.
    Gap(Gap),
}

impl Record {
    /// The op id for intents and outcomes.
    pub fn op_id(&self) -> Option<OpId> {
        match self {
            Record::Intent(i) => Some(i.op_id),
            Record::Outcome(o) => Some(o.op_id),
            Record::Promotion(_) | Record::Gap(_) => None,
        }
    }

    /// A name unique to this record across every edge's log: the message id
    /// a sink deduplicates on.
    pub fn dedup_id(&self) -> String {
        match self {
            Record::Intent(i) => format!("{}.intent", i.op_id),
            Record::Outcome(o) => format!("{}.outcome", o.op_id),
            Record::Promotion(p) => format!("promotion.{}.{}", p.partition, p.to_epoch),
            Record::Gap(g) => format!("gap.{}.{}", g.edge_id, g.from_seq),
        }
    }
}

/// Records `from_seq..to_seq` of an edge's log were deleted before its
/// sink (NATS) had them: the backlog passed `oplog.max_backlog_bytes` while
/// the sink was away. Whoever reads only the sink never sees those writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub edge_id: String,
    /// Unix milliseconds when the records were deleted.
    pub at_ms: u64,
    pub from_seq: u64,
    /// The first record after the gap.
    pub to_seq: u64,
    /// The bytes of the deleted segments.
    pub bytes: u64,
}

/// A write's id: a UUID (v7, so ids sort by time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpId(pub [u8; 16]);

impl OpId {
    pub fn new() -> Self {
        OpId(*uuid::Uuid::now_v7().as_bytes())
    }

    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::parse_str(s).ok().map(|u| OpId(*u.as_bytes()))
    }
}

impl Default for OpId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

/// A write as the router is about to forward it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub op_id: OpId,
    pub edge_id: String,
    /// Unix milliseconds when the router took the write.
    pub at_ms: u64,
    /// The request's partition key (`default` when it has none).
    pub partition: String,
    /// The ownership entry that decided the owner: the partition, or `default`.
    pub owner_entry: String,
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    pub idempotency_key: Option<String>,
    /// Headers kept for a replay (content type and the like; never credentials).
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// The owner the write was sent to, and its fencing token.
    pub owner: String,
    pub epoch: u64,
}

impl Intent {
    /// The path without its query: what a conflict is judged on.
    pub fn resource(&self) -> &str {
        resource_of(&self.path)
    }

    /// The resource as a region would resolve it (RFC 3986 §6.2.2): repeated
    /// slashes as one, `.` and `..` segments resolved, percent-encoded
    /// unreserved characters decoded; `/kv//a`, `/kv/./a` and `/kv/%61` are
    /// all `/kv/a`. Writes compare by it.
    pub fn normalized_resource(&self) -> String {
        normalize_path(self.resource())
    }

    /// For a write the router replayed on a read after a failover: the op it
    /// replayed (named by the kept header [`REPLAY_OF`]).
    pub fn replay_of(&self) -> Option<OpId> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(REPLAY_OF))
            .and_then(|(_, v)| OpId::parse(v))
    }
}

/// A path and query's path: the resource a write is to.
pub fn resource_of(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// The header a replayed write carries (to the region, and kept in its
/// intent): the op id of the write it replays.
pub const REPLAY_OF: &str = "x-switchyard-replay";

/// See [`Intent::normalized_resource`].
pub fn normalize_path(path: &str) -> String {
    let mut segments: Vec<String> = Vec::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        // Escapes first: `%2e` is a dot, and a dot segment is resolved.
        let seg = decode_unreserved(seg);
        match seg.as_str() {
            "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(seg),
        }
    }
    let trailing = path.ends_with('/') && !segments.is_empty();
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

/// Decodes `%XX` where it stands for an unreserved character (letters,
/// digits, `-._~`); other escapes stay, with their hex in upper case.
fn decode_unreserved(seg: &str) -> String {
    let b = seg.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(v) if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => out.push(v),
            Some(v) => out.extend_from_slice(format!("%{v:02X}").as_bytes()),
            None => {
                out.push(b[i]);
                i += 1;
                continue;
            }
        }
        i += 3;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod path_tests {
    use super::normalize_path;

    #[test]
    fn equivalent_paths_normalize_alike() {
        for p in [
            "/kv/a",
            "/kv//a",
            "//kv/a",
            "/kv/./a",
            "/kv/x/../a",
            "/kv/%61",
            "/kv/%2e/a",
        ] {
            assert_eq!(normalize_path(p), "/kv/a", "{p}");
        }
        assert_eq!(normalize_path("/kv/a/"), "/kv/a/");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/../../a"), "/a");
        // Reserved characters stay escaped (a slash inside a name is not a separator).
        assert_eq!(normalize_path("/kv/a%2fb"), "/kv/a%2Fb");
        assert_ne!(normalize_path("/kv/a%2Fb"), normalize_path("/kv/a/b"));
        assert_eq!(normalize_path("/kv/%zz"), "/kv/%zz");
        assert_eq!(normalize_path("/kv/%4"), "/kv/%4");
    }
}

/// A write's body as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// The whole body.
    Inline(Vec<u8>),
    /// Streamed to the region; the outcome record says what it was.
    InOutcome,
    /// Over the size limit: only its length and SHA-256. Not replayable.
    Hashed { len: u64, sha256: [u8; 32] },
}

impl Body {
    /// The logged form of `bytes` under `max` bytes.
    pub fn of(bytes: &[u8], max: usize) -> Body {
        match BodyRef::of(bytes, max) {
            BodyRef::Inline(b) => Body::Inline(b.to_vec()),
            BodyRef::InOutcome => Body::InOutcome,
            BodyRef::Hashed { len, sha256 } => Body::Hashed { len, sha256 },
        }
    }

    pub fn len(&self) -> Option<u64> {
        match self {
            Body::Inline(b) => Some(b.len() as u64),
            Body::InOutcome => None,
            Body::Hashed { len, .. } => Some(*len),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// How a write ended, as far as the router knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeKind {
    /// The region answered 2xx.
    Acked,
    /// The region answered 4xx (fenced, bad request, …): it did not apply it.
    Rejected,
    /// Never reached the region, or it answered 5xx.
    Failed,
    /// Sent, but no answer: the region may or may not have applied it.
    Unknown,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Acked => "acked",
            OutcomeKind::Rejected => "rejected",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Unknown => "unknown",
        }
    }
}

/// A write's end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub op_id: OpId,
    /// Unix milliseconds when the answer was in (or the attempt ended).
    pub at_ms: u64,
    /// The region's status; 0 when there was none.
    pub status: u16,
    pub outcome: OutcomeKind,
    /// The region's `X-Commit-Position`, when it sent one.
    pub commit_position: Option<u64>,
    /// The body, for intents logged with [`Body::InOutcome`].
    pub body: Option<Body>,
}

/// A change of a partition's owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    pub at_ms: u64,
    pub edge_id: String,
    pub partition: String,
    pub from: String,
    pub to: String,
    pub from_epoch: u64,
    pub to_epoch: u64,
    /// The new owner's applied position when it was promoted.
    pub applied_position: u64,
    pub forced: bool,
    pub reason: String,
}

/// Wall-clock time as Unix milliseconds: the clock every record's `at_ms`
/// and every read-your-writes time mark uses.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
