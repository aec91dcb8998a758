//! Records in their encoded form, made where the record's fields are at hand.
//!
//! The router's workers hand records to the op log's writer thread. As an
//! owned [`Record`], a write's intent cost its worker about ten allocations
//! (each field copied out of the request into a `String`) and the writer
//! as many frees of memory another thread allocated, the slowest kind.
//! Encoded on the worker straight from the request's own fields, a record
//! is one buffer; the writer frames it with its segment's salt and appends
//! it ([`crate::Writer::append_encoded`]).

use serde::Serialize;

use crate::record::{OpId, Record};

/// What a record is, known without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Intent,
    Outcome,
    Promotion,
    Gap,
}

/// A record's payload as the log stores it (postcard), and its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRecord {
    kind: RecordKind,
    payload: Vec<u8>,
}

impl EncodedRecord {
    pub fn of(record: &Record) -> Result<Self, postcard::Error> {
        let kind = match record {
            Record::Intent(_) => RecordKind::Intent,
            Record::Outcome(_) => RecordKind::Outcome,
            Record::Promotion(_) => RecordKind::Promotion,
            Record::Gap(_) => RecordKind::Gap,
        };
        // Room for any record but an intent or outcome with a body, so
        // that encoding does not grow the buffer step by step.
        let payload = Vec::with_capacity(128);
        Ok(EncodedRecord {
            kind,
            payload: postcard::to_extend(record, payload)?,
        })
    }

    /// The intent `intent` describes, encoded exactly as the owned
    /// `Record::Intent` with the same fields would be.
    pub fn intent(intent: &IntentRef<'_>) -> Result<Self, postcard::Error> {
        let payload = Vec::with_capacity(intent.encoded_len_hint());
        Ok(EncodedRecord {
            kind: RecordKind::Intent,
            payload: postcard::to_extend(&RecordRef::Intent(intent), payload)?,
        })
    }

    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The record back, as a reader of the log would have it.
    pub fn decode(&self) -> Result<Record, postcard::Error> {
        postcard::from_bytes(&self.payload)
    }
}

/// A write's intent with every field borrowed from the request it
/// describes: the fields of [`crate::Intent`], in its order and encoding.
#[derive(Debug, Serialize)]
#[serde(rename = "Intent")]
pub struct IntentRef<'a> {
    pub op_id: OpId,
    pub edge_id: &'a str,
    pub at_ms: u64,
    pub partition: &'a str,
    pub owner_entry: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: BodyRef<'a>,
    pub owner: &'a str,
    pub epoch: u64,
}

impl IntentRef<'_> {
    /// [`crate::Intent::resource`].
    pub fn resource(&self) -> &str {
        crate::record::resource_of(self.path)
    }

    /// About how long the encoded intent is: its strings and body, plus
    /// room for the numbers and lengths around them.
    fn encoded_len_hint(&self) -> usize {
        let strings = self.edge_id.len()
            + self.partition.len()
            + self.owner_entry.len()
            + self.method.len()
            + self.path.len()
            + self.idempotency_key.map_or(0, str::len)
            + self.owner.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>();
        let body = match self.body {
            BodyRef::Inline(b) => b.len() + 5,
            BodyRef::InOutcome => 1,
            BodyRef::Hashed { .. } => 44,
        };
        64 + strings + body
    }
}

/// [`crate::Body`], borrowed.
#[derive(Debug, Serialize)]
#[serde(rename = "Body")]
pub enum BodyRef<'a> {
    Inline(&'a [u8]),
    InOutcome,
    Hashed { len: u64, sha256: [u8; 32] },
}

impl BodyRef<'_> {
    /// `bytes` kept whole when at most `max` long, else by length and hash
    /// (as [`crate::Body::of`]).
    pub fn of(bytes: &[u8], max: usize) -> BodyRef<'_> {
        if bytes.len() <= max {
            BodyRef::Inline(bytes)
        } else {
            BodyRef::Hashed {
                len: bytes.len() as u64,
                sha256: crate::record::sha256(bytes),
            }
        }
    }
}

/// [`Record`], for the variants encoded from borrowed fields.
#[derive(Serialize)]
#[serde(rename = "Record")]
enum RecordRef<'r, 'a> {
    Intent(&'r IntentRef<'a>),
}
