//! Segment files: `{first_seq:020}.seg` in the log's folder, each a header
//! (magic, format version, the sequence number of its first record and,
//! from format 2, the salt its frames are checked with) followed by frames.
//! Records are numbered by their place in the log.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::codec::{self, Frame};
use crate::record::Record;

pub const MAGIC: &[u8; 8] = b"SYWDOPLG";
/// The segment header format this build writes; it reads this and format 1.
pub const VERSION: u16 = 2;
/// Bytes of a format 2 header: magic, version, reserved, first seq, salt.
pub const HEADER: usize = 8 + 2 + 2 + 8 + 8;
/// Bytes of a format 1 header (no salt).
const HEADER_V1: usize = 8 + 2 + 2 + 8;

/// A new segment's header.
pub fn header(first_seq: u64, salt: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_seq.to_le_bytes());
    h[20..28].copy_from_slice(&salt.to_le_bytes());
    h
}

/// A fresh salt for a new segment: random, never [`codec::NO_SALT`].
pub fn new_salt() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 | 1
}

/// What a segment's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub first_seq: u64,
    pub salt: u64,
    /// Where its first frame starts.
    pub len: usize,
}

pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The segments in `dir`, oldest first, by the sequence in their names.
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Something a reader met in a segment that was not a whole record.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// The file does not start with a segment header this build reads.
    BadHeader { segment: PathBuf, why: String },
    /// Damaged bytes with whole records after them; reading resumed there.
    Damaged {
        segment: PathBuf,
        offset: u64,
        bytes: u64,
        what: &'static str,
    },
    /// A whole record in a newer format.
    Newer {
        segment: PathBuf,
        offset: u64,
        version: u8,
    },
    /// Bytes after the last whole record that are not one (a torn write).
    TornTail {
        segment: PathBuf,
        offset: u64,
        bytes: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadHeader { segment, why } => {
                write!(f, "{}: not an op log segment: {why}", segment.display())
            }
            Problem::Damaged {
                segment,
                offset,
                bytes,
                what,
            } => write!(
                f,
                "{}: offset {offset}: {bytes} damaged bytes ({what}); reading resumed after them",
                segment.display()
            ),
            Problem::Newer {
                segment,
                offset,
                version,
            } => write!(
                f,
                "{}: offset {offset}: a record in format {version}, newer than this build reads ({}); upgrade to read it",
                segment.display(),
                codec::VERSION
            ),
            Problem::TornTail {
                segment,
                offset,
                bytes,
            } => write!(
                f,
                "{}: offset {offset}: {bytes} bytes of an incomplete record at the end (a write cut short)",
                segment.display()
            ),
        }
    }
}

/// What reading one segment found besides its records.
#[derive(Debug, Default)]
pub struct Scan {
    /// Whole frames read (records and newer-format ones): the next sequence
    /// number is the segment's first plus this.
    pub frames: u64,
    /// Where the last whole frame ends.
    pub valid_end: u64,
    pub problems: Vec<Problem>,
}

/// Checks a segment's header and reads it.
pub fn check_header(path: &Path, bytes: &[u8]) -> Result<Header, Problem> {
    let bad = |why: String| Problem::BadHeader {
        segment: path.to_path_buf(),
        why,
    };
    if bytes.len() < HEADER_V1 || &bytes[..8] != MAGIC {
        return Err(bad("no segment header".into()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > VERSION {
        return Err(bad(format!(
            "segment format {version}, newer than this build reads ({VERSION})"
        )));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if version < 2 {
        return Ok(Header {
            first_seq: u64_at(12),
            salt: codec::NO_SALT,
            len: HEADER_V1,
        });
    }
    if bytes.len() < HEADER {
        return Err(bad("segment header cut short".into()));
    }
    Ok(Header {
        first_seq: u64_at(12),
        salt: u64_at(20),
        len: HEADER,
    })
}

/// Reads every frame of a segment's bytes, handing each record with its
/// sequence number to `each`; damage is skipped to the next whole frame and
/// reported, never silently.
pub fn scan(path: &Path, bytes: &[u8], mut each: impl FnMut(u64, Record)) -> Scan {
    let mut out = Scan::default();
    let (first, salt, mut at) = match check_header(path, bytes) {
        Ok(h) => (h.first_seq, h.salt, h.len),
        Err(p) => {
            out.problems.push(p);
            return out;
        }
    };
    out.valid_end = at as u64;
    while at < bytes.len() {
        match codec::decode(&bytes[at..], salt) {
            Frame::Record { record, len } => {
                each(first + out.frames, record);
                out.frames += 1;
                at += len;
                out.valid_end = at as u64;
            }
            Frame::Newer { version, len } => {
                out.problems.push(Problem::Newer {
                    segment: path.to_path_buf(),
                    offset: at as u64,
                    version,
                });
                out.frames += 1;
                at += len;
                out.valid_end = at as u64;
            }
            Frame::Partial | Frame::Damaged(_) => {
                let what = match codec::decode(&bytes[at..], salt) {
                    Frame::Damaged(w) => w,
                    _ => "a frame longer than the rest of the file",
                };
                match codec::resync(&bytes[at..], salt) {
                    Some(skip) => {
                        out.problems.push(Problem::Damaged {
                            segment: path.to_path_buf(),
                            offset: at as u64,
                            bytes: skip as u64,
                            what,
                        });
                        at += skip;
                    }
                    None => {
                        out.problems.push(Problem::TornTail {
                            segment: path.to_path_buf(),
                            offset: at as u64,
                            bytes: (bytes.len() - at) as u64,
                        });
                        break;
                    }
                }
            }
        }
    }
    out
}
