//! The appending side: one writer per log folder. Records are encoded into a
//! buffer; `flush` writes it, `sync` makes it durable. Segments rotate at a
//! size; sealed segments are deleted by age or total size, but never one
//! holding records a sink has not forwarded yet. On open, a torn tail of the
//! newest segment (the partial record a crash leaves) is cut off.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::codec;
use crate::record::Record;
use crate::segment::{self, Problem};

#[derive(Debug, Clone)]
pub struct Options {
    /// A segment is sealed once it is this large.
    pub segment_bytes: u64,
    /// Sealed segments older than this are deleted.
    pub retain_age: Option<Duration>,
    /// Sealed segments beyond this total are deleted, oldest first.
    pub retain_bytes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            retain_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retain_bytes: None,
        }
    }
}

/// What opening the log found.
#[derive(Debug, Default)]
pub struct Recovery {
    pub segments: usize,
    /// Whole records in the newest segment.
    pub records_in_last: u64,
    /// Bytes cut off the newest segment's tail.
    pub truncated: u64,
    /// Every problem seen in the newest segment (the torn tail included).
    pub problems: Vec<Problem>,
}

pub struct Writer {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    pending: Vec<u8>,
    /// Bytes of the segment on disk plus pending.
    segment_len: u64,
    next_seq: u64,
    /// Records below this are forwarded by every sink: deletable. Shared,
    /// so a sink moves it without a word to the writer.
    retain_floor: Arc<AtomicU64>,
    opts: Options,
}

/// Flushes the buffer once it is this large, even between syncs.
const FLUSH_AT: usize = 1 << 20;

impl Writer {
    /// Opens the log in `dir` (created if missing), recovering the newest segment.
    pub fn open(dir: &Path, opts: Options) -> io::Result<(Writer, Recovery)> {
        std::fs::create_dir_all(dir)?;
        let segments = segment::list(dir)?;
        let mut recovery = Recovery {
            segments: segments.len(),
            ..Recovery::default()
        };
        let (path, next_seq, segment_len) = match segments.last() {
            None => {
                let path = dir.join(segment::file_name(0));
                create_segment(&path, 0)?;
                sync_dir(dir)?;
                recovery.segments = 1;
                (path, 0, segment::HEADER as u64)
            }
            Some((name_seq, path)) => {
                let bytes = std::fs::read(path)?;
                if bytes.len() < segment::HEADER {
                    // Created, but the crash came before its header was whole.
                    std::fs::remove_file(path)?;
                    create_segment(path, *name_seq)?;
                    sync_dir(dir)?;
                    recovery.truncated = bytes.len() as u64;
                }
                let bytes = if recovery.truncated > 0 {
                    std::fs::read(path)?
                } else {
                    bytes
                };
                let first = segment::check_header(path, &bytes)
                    .map_err(|p| io::Error::new(io::ErrorKind::InvalidData, p.to_string()))?;
                let scan = segment::scan(path, &bytes, |_, _| {});
                recovery.records_in_last = scan.frames;
                recovery.problems = scan.problems;
                let len = bytes.len() as u64;
                if scan.valid_end < len {
                    let f = OpenOptions::new().write(true).open(path)?;
                    f.set_len(scan.valid_end)?;
                    f.sync_all()?;
                    recovery.truncated = len - scan.valid_end;
                }
                (path.clone(), first + scan.frames, scan.valid_end)
            }
        };
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok((
            Writer {
                dir: dir.to_path_buf(),
                file,
                path,
                pending: Vec::with_capacity(FLUSH_AT + 4096),
                segment_len,
                next_seq,
                retain_floor: Arc::new(AtomicU64::new(u64::MAX)),
                opts,
            },
            recovery,
        ))
    }

    /// Buffers `record`; its sequence number.
    pub fn append(&mut self, record: &Record) -> io::Result<u64> {
        if self.segment_len >= self.opts.segment_bytes {
            self.rotate()?;
        }
        let before = self.pending.len();
        codec::encode(record, &mut self.pending)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.segment_len += (self.pending.len() - before) as u64;
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.pending.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(seq)
    }

    /// Writes the buffered records to the file (not yet durable).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes and makes durable everything appended so far.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Keeps every segment holding records at or after `seq`.
    pub fn set_retain_floor(&mut self, seq: u64) {
        self.retain_floor.store(seq, Ordering::Relaxed);
    }

    /// The retention floor, for a sink to raise as it forwards (read at each rotation).
    pub fn retain_floor(&self) -> Arc<AtomicU64> {
        self.retain_floor.clone()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let path = self.dir.join(segment::file_name(self.next_seq));
        create_segment(&path, self.next_seq)?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new().append(true).open(&path)?;
        self.path = path;
        self.segment_len = segment::HEADER as u64;
        if let Err(e) = self.retain() {
            tracing::warn!(error = %e, dir = %self.dir.display(), "op log retention failed");
        }
        Ok(())
    }

    /// Deletes sealed segments past the age or size bound.
    fn retain(&self) -> io::Result<()> {
        let segments = segment::list(&self.dir)?;
        let floor = self.retain_floor.load(Ordering::Relaxed);
        let mut sealed: Vec<(u64, PathBuf, u64, SystemTime)> = Vec::new();
        for (i, (first, path)) in segments.iter().enumerate() {
            if *path == self.path {
                continue;
            }
            // A segment ends where the next begins; keep it while a sink needs any of it.
            let end = segments.get(i + 1).map_or(u64::MAX, |(s, _)| *s);
            if end > floor {
                continue;
            }
            let meta = std::fs::metadata(path)?;
            sealed.push((*first, path.clone(), meta.len(), meta.modified()?));
        }
        let mut total: u64 = sealed.iter().map(|s| s.2).sum();
        let now = SystemTime::now();
        for (_, path, len, modified) in &sealed {
            let too_old = self
                .opts
                .retain_age
                .is_some_and(|age| now.duration_since(*modified).unwrap_or_default() > age);
            let too_big = self.opts.retain_bytes.is_some_and(|max| total > max);
            if too_old || too_big {
                std::fs::remove_file(path)?;
                total -= len;
                tracing::info!(segment = %path.display(), "op log segment deleted by retention");
            }
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "op log: cannot write its last records");
        }
    }
}

fn create_segment(path: &Path, first_seq: u64) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(&segment::header(first_seq))?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
