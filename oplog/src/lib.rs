//! The Switchyard operation log, shared by the router (which writes it) and
//! the reconciler (which reads it): records, the checksummed and versioned
//! frame codec, segment files, the writer with group commit, rotation,
//! retention and torn-tail recovery, and the reader.

pub mod codec;
pub mod encoded;
pub mod read;
pub mod record;
pub mod segment;
#[cfg(feature = "nats")]
pub mod stream;
pub mod writer;

pub use encoded::{BodyRef, EncodedRecord, IntentRef, RecordKind};
pub use read::{bytes_from, read_dir, Tail};
pub use record::{
    normalize_path, unix_ms, Body, Gap, Intent, OpId, Outcome, OutcomeKind, Promotion, Record,
    REPLAY_OF,
};
pub use segment::Problem;
pub use writer::{writer_pid, GapSpan, Options, Recovery, SyncTicket, Writer};

#[cfg(test)]
mod tests;
