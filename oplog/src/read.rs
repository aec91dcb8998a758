//! The reading side: every record of a log folder in order, with every
//! problem met on the way (damage, newer formats, a torn tail) reported.

use std::io;
use std::path::Path;

use crate::record::Record;
use crate::segment::{self, Problem};

/// Reads every record in `dir` with a sequence number at or after `from`,
/// oldest first. A missing folder is an error; damage is a [`Problem`].
pub fn read_dir(
    dir: &Path,
    from: u64,
    mut each: impl FnMut(u64, Record),
) -> io::Result<Vec<Problem>> {
    let segments = segment::list(dir)?;
    let mut problems = Vec::new();
    for (i, (_, path)) in segments.iter().enumerate() {
        // Wholly before `from`: the next segment starts at or before it.
        if segments.get(i + 1).is_some_and(|(next, _)| *next <= from) {
            continue;
        }
        let bytes = std::fs::read(path)?;
        let scan = segment::scan(path, &bytes, |seq, r| {
            if seq >= from {
                each(seq, r)
            }
        });
        problems.extend(scan.problems);
    }
    Ok(problems)
}

/// The most of a segment one read takes (more only for a larger frame).
const READ_CHUNK: usize = 1 << 20;

/// Bytes of the segments that hold records at or after `seq`: what a sink
/// that has forwarded up to `seq` keeps on disk for itself.
pub fn bytes_from(dir: &Path, seq: u64) -> io::Result<u64> {
    let segments = segment::list(dir)?;
    let mut total = 0;
    for (i, (_, path)) in segments.iter().enumerate() {
        if segments.get(i + 1).is_some_and(|(next, _)| *next <= seq) {
            continue;
        }
        total += std::fs::metadata(path).map_or(0, |m| m.len());
    }
    Ok(total)
}

/// Follows a log as it grows: each [`Tail::poll`] hands over the whole
/// records appended since the last one, reading only the new bytes (a sink
/// forwarding the log calls it in a loop). Segments are followed across
/// rotation; one deleted by retention before it was read is a problem.
pub struct Tail {
    dir: std::path::PathBuf,
    /// The next sequence number to hand over.
    next: u64,
    at: Option<Position>,
}

struct Position {
    path: std::path::PathBuf,
    offset: u64,
    /// The sequence number of the frame at `offset`.
    seq: u64,
    /// What the segment's frames are checked with.
    salt: u64,
}

/// The start of segment `path`'s frames; `None` while its header is not
/// whole yet (the writer is creating it).
fn start_of(path: &Path) -> io::Result<Option<Position>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(segment::HEADER);
    std::fs::File::open(path)?
        .take(segment::HEADER as u64)
        .read_to_end(&mut head)?;
    match segment::check_header(path, &head) {
        Ok(h) => Ok(Some(Position {
            path: path.to_path_buf(),
            offset: h.len as u64,
            seq: h.first_seq,
            salt: h.salt,
        })),
        Err(_) if head.len() < segment::HEADER => Ok(None),
        Err(p) => Err(io::Error::new(io::ErrorKind::InvalidData, p.to_string())),
    }
}

impl Tail {
    pub fn new(dir: &Path, from: u64) -> Tail {
        Tail {
            dir: dir.to_path_buf(),
            next: from,
            at: None,
        }
    }

    /// The next sequence number this tail will hand over.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Hands over up to `max` new records.
    pub fn poll(
        &mut self,
        max: usize,
        mut each: impl FnMut(u64, Record),
    ) -> io::Result<Vec<Problem>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut problems = Vec::new();
        let mut handed = 0;
        loop {
            let segments = segment::list(&self.dir)?;
            if self.at.is_none() {
                // The segment holding `next`: the last that starts at or before it.
                let Some((first, path)) = segments
                    .iter()
                    .rev()
                    .find(|(first, _)| *first <= self.next)
                    .or_else(|| segments.first())
                else {
                    return Ok(problems);
                };
                if *first > self.next {
                    problems.push(Problem::BadHeader {
                        segment: path.clone(),
                        why: format!(
                            "records {}..{first} were deleted before they were read",
                            self.next
                        ),
                    });
                    self.next = *first;
                }
                match start_of(path) {
                    Ok(Some(at)) => self.at = Some(at),
                    Ok(None) => return Ok(problems),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            let Some(at) = self.at.as_mut() else {
                return Ok(problems);
            };
            let mut f = match std::fs::File::open(&at.path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.at = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A bounded piece of the segment, grown only when one frame is
            // larger: a long backlog is never read into memory whole.
            let mut want = READ_CHUNK;
            let mut buf = Vec::new();
            let reached_end = loop {
                buf.clear();
                f.seek(SeekFrom::Start(at.offset))?;
                (&mut f).take(want as u64).read_to_end(&mut buf)?;
                if buf.len() < want {
                    break true;
                }
                let first_is_partial = matches!(
                    crate::codec::decode(&buf, at.salt),
                    crate::codec::Frame::Partial
                );
                if !first_is_partial || want > crate::codec::MAX_PAYLOAD {
                    break false;
                }
                want *= 2;
            };
            let mut used = 0;
            while used < buf.len() && handed < max {
                match crate::codec::decode(&buf[used..], at.salt) {
                    crate::codec::Frame::Record { record, len } => {
                        if at.seq >= self.next {
                            each(at.seq, record);
                            handed += 1;
                            self.next = at.seq + 1;
                        }
                        at.seq += 1;
                        used += len;
                    }
                    crate::codec::Frame::Newer { version, len } => {
                        problems.push(Problem::Newer {
                            segment: at.path.clone(),
                            offset: at.offset + used as u64,
                            version,
                        });
                        at.seq += 1;
                        self.next = self.next.max(at.seq);
                        used += len;
                    }
                    // A record still being written: wait for the rest.
                    crate::codec::Frame::Partial => break,
                    crate::codec::Frame::Damaged(what) => {
                        match crate::codec::resync(&buf[used..], at.salt) {
                            Some(skip) => {
                                problems.push(Problem::Damaged {
                                    segment: at.path.clone(),
                                    offset: at.offset + used as u64,
                                    bytes: skip as u64,
                                    what,
                                });
                                used += skip;
                            }
                            None => break,
                        }
                    }
                }
            }
            if !reached_end && used == 0 && handed < max {
                // A whole piece of damage with no frame in it: skip all but
                // its last frame header's worth, where a frame may begin.
                let skip = buf.len() - crate::codec::HEADER;
                problems.push(Problem::Damaged {
                    segment: at.path.clone(),
                    offset: at.offset,
                    bytes: skip as u64,
                    what: "no frame in this part of the segment",
                });
                used = skip;
            }
            at.offset += used as u64;
            if handed >= max {
                return Ok(problems);
            }
            if !reached_end {
                // More of this segment than one piece: read on.
                continue;
            }
            // A segment with a newer one after it is sealed: whole, and done
            // once read (the listing came before the read).
            let after = segments
                .iter()
                .position(|(_, p)| *p == at.path)
                .and_then(|i| segments.get(i + 1));
            match after {
                Some((_, path)) => {
                    if used < buf.len() {
                        problems.push(Problem::TornTail {
                            segment: at.path.clone(),
                            offset: at.offset,
                            bytes: (buf.len() - used) as u64,
                        });
                    }
                    match start_of(path)? {
                        Some(next) => *at = next,
                        None => return Ok(problems),
                    }
                }
                _ => return Ok(problems),
            }
        }
    }
}
