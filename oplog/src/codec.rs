//! The on-disk frame of one record:
//!
//! ```text
//! magic 0xA5 0x5A | version u8 | length u32 LE | crc32 u32 LE | payload
//! ```
//!
//! The payload is the record in postcard; the CRC-32 covers the segment's
//! salt, the version byte, the length and the payload. The magic lets a
//! reader find the next frame after a damaged one; the version lets a reader
//! refuse records from a newer format by name instead of misreading them.
//!
//! The salt is a random number in each segment's header. A client's write
//! body is logged inside a record, and it may hold bytes that look like a
//! whole frame with a right CRC; after damage, a reader looking for the
//! next frame could take those for a record. Without the segment's salt
//! (which no client sees) such a frame does not check. Segments of format 1
//! have no salt ([`NO_SALT`]): their frames are checked as they were written.

use crate::record::Record;

/// The frame format this build writes and reads.
pub const VERSION: u8 = 1;
pub const MAGIC: [u8; 2] = [0xA5, 0x5A];
pub const HEADER: usize = 2 + 1 + 4 + 4;
/// No record is this large; a length beyond it is damage.
pub const MAX_PAYLOAD: usize = 64 << 20;
/// The salt of a segment written before segments had one.
pub const NO_SALT: u64 = 0;

/// Appends `record`'s frame, checked with `salt`, to `out`.
pub fn encode(record: &Record, salt: u64, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    let start = open_frame(out);
    let mut out_vec = std::mem::take(out);
    out_vec = postcard::to_extend(record, out_vec)?;
    *out = out_vec;
    seal_frame(out, start, salt);
    Ok(())
}

/// Appends the frame of a record already encoded (`payload`, as
/// [`crate::EncodedRecord`] holds it), checked with `salt`, to `out`.
pub fn frame(payload: &[u8], salt: u64, out: &mut Vec<u8>) {
    let start = open_frame(out);
    out.extend_from_slice(payload);
    seal_frame(out, start, salt);
}

/// Appends a frame header whose length and checksum [`seal_frame`] fills
/// in once the payload follows it; where the frame starts.
fn open_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 8]);
    start
}

fn seal_frame(out: &mut [u8], start: usize, salt: u64) {
    let payload_at = start + HEADER;
    let len = ((out.len() - payload_at) as u32).to_le_bytes();
    out[start + 3..start + 7].copy_from_slice(&len);
    let crc = checksum(salt, VERSION, len, &out[payload_at..]);
    out[start + 7..start + 11].copy_from_slice(&crc.to_le_bytes());
}

/// What the bytes at the start of a buffer hold.
// Returned by value and taken apart at once: boxing the record would cost
// an allocation per record read, for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A whole record, `len` bytes long with its header.
    Record { record: Record, len: usize },
    /// The buffer ends inside a frame (a write cut short, or one in progress).
    Partial,
    /// Not a frame here: a damaged header or payload.
    Damaged(&'static str),
    /// A whole frame, checksum right, from a newer format.
    Newer { version: u8, len: usize },
}

/// Reads the frame at the start of `buf`, written with `salt`.
pub fn decode(buf: &[u8], salt: u64) -> Frame {
    if buf.len() < HEADER {
        return if MAGIC.starts_with(&buf[..buf.len().min(2)]) {
            Frame::Partial
        } else {
            Frame::Damaged("bad magic")
        };
    }
    if buf[..2] != MAGIC {
        return Frame::Damaged("bad magic");
    }
    let version = buf[2];
    let len_bytes = [buf[3], buf[4], buf[5], buf[6]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes([buf[7], buf[8], buf[9], buf[10]]);
    if len > MAX_PAYLOAD {
        return Frame::Damaged("length beyond any record");
    }
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Frame::Partial;
    };
    if checksum(salt, version, len_bytes, payload) != crc {
        return Frame::Damaged("checksum mismatch");
    }
    if version > VERSION {
        return Frame::Newer {
            version,
            len: HEADER + len,
        };
    }
    match postcard::from_bytes::<Record>(payload) {
        Ok(record) => Frame::Record {
            record,
            len: HEADER + len,
        },
        Err(_) => Frame::Damaged("checksum right but the record does not decode"),
    }
}

fn checksum(salt: u64, version: u8, len: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    if salt != NO_SALT {
        h.update(&salt.to_le_bytes());
    }
    h.update(&[version]);
    h.update(&len);
    h.update(payload);
    h.finalize()
}

/// Where the next frame that decodes with `salt` starts after damage at
/// `buf[0]`, if any.
pub fn resync(buf: &[u8], salt: u64) -> Option<usize> {
    let mut at = 1;
    while at + 1 < buf.len() {
        match buf[at..].windows(2).position(|w| w == MAGIC) {
            None => return None,
            Some(i) => {
                at += i;
                if matches!(
                    decode(&buf[at..], salt),
                    Frame::Record { .. } | Frame::Newer { .. }
                ) {
                    return Some(at);
                }
                at += 1;
            }
        }
    }
    None
}
