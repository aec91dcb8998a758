//! The appending side: one writer per log folder. Records are encoded into a
//! buffer; `flush` writes it, `sync` makes it durable. Segments rotate at a
//! size; sealed segments are deleted by age or total size, but never one
//! holding records a sink has not forwarded yet. On open, a torn tail of the
//! newest segment (the partial record a crash leaves) is cut off.
//!
//! When the disk fails, no record is written twice and none is written late:
//! - a failed write may leave part of the buffer in the file: the file is cut
//!   back to where the last whole write ended (before anything more is
//!   written, however long the disk takes to heal); records appended with
//!   [`Writer::append_or_forget`] (whose senders are told the write failed)
//!   leave the buffer, the others stay and are written once the disk works,
//!   under the sequence numbers they then get;
//! - a failed sync leaves unknown which written pages reached the disk, and
//!   a later sync may report success for pages the kernel dropped. The file
//!   is cut back to what the last good sync made durable and the writer
//!   refuses everything from then on: a restart reopens the log from what is
//!   on disk.
//!
//! A sync may also run off the writer's thread ([`Writer::begin_sync`], then
//! [`Writer::end_sync`] with its result), so that records go on being
//! written while a slow disk syncs: the sync covers what was written when it
//! began, and its failure is handled as above.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::codec;
use crate::encoded::EncodedRecord;
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
    /// How long `open` waits for another writer of the folder to let go.
    pub lock_wait: Duration,
    /// The most bytes of sealed segments kept for a sink that has not
    /// forwarded them; past it the oldest go and [`Writer::take_gap`] says
    /// which records they held. `None`: kept however many.
    pub max_backlog_bytes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            retain_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retain_bytes: None,
            lock_wait: LOCK_WAIT,
            max_backlog_bytes: None,
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
    /// Held while the writer lives: one writer per folder.
    _lock: File,
    dir: PathBuf,
    file: File,
    path: PathBuf,
    /// What the current segment's frames are checked with.
    salt: u64,
    pending: Vec<u8>,
    /// The records in `pending`, in order.
    pending_records: Vec<Pending>,
    /// Sequence numbers `append_or_forget` answered with whose records a
    /// failed write has since dropped: their senders must hear so, even
    /// when a later write and sync succeed (see [`Writer::take_forgotten`]).
    forgotten: Vec<u64>,
    /// Bytes of the segment written by whole writes (durable or not).
    written_len: u64,
    /// Bytes of the segment the last good sync made durable.
    synced_len: u64,
    /// The sequence number after the last record made durable.
    synced_seq: u64,
    /// The file may hold part of a failed write past `written_len`.
    damaged: bool,
    /// Why the writer refuses everything (a failed sync).
    poisoned: Option<String>,
    #[cfg(test)]
    pub(crate) faults: Faults,
    next_seq: u64,
    /// Records below this are forwarded by every sink: deletable. Shared,
    /// so a sink moves it without a word to the writer.
    retain_floor: Arc<AtomicU64>,
    opts: Options,
    /// Records deleted before the sink had them, not yet told.
    gaps: Vec<GapSpan>,
    /// Gaps told, with the sequence number of the record telling each, until
    /// the sink has that record: one deleted unforwarded is told again.
    told: Vec<(GapSpan, u64)>,
}

/// Records `from_seq..to_seq`, `bytes` of segments, deleted unforwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapSpan {
    pub from_seq: u64,
    pub to_seq: u64,
    pub bytes: u64,
}

/// Flushes the buffer once it is this large, even between syncs.
pub(crate) const FLUSH_AT: usize = 1 << 20;

/// Failures a test makes the writer meet, one at a time.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The next write puts this many bytes in the file, then fails.
    pub(crate) short_write: Option<usize>,
    /// The next sync fails.
    pub(crate) sync_fails: bool,
    /// This many cut-backs fail.
    pub(crate) cut_back_fails: u32,
}

/// A sync begun with [`Writer::begin_sync`]: run [`SyncTicket::sync`] on any
/// thread, then hand the ticket and the result to [`Writer::end_sync`].
#[derive(Debug)]
pub struct SyncTicket {
    file: File,
    /// The segment it syncs.
    path: PathBuf,
    /// The segment's written length, and the next sequence number, when it began.
    len: u64,
    seq: u64,
    #[cfg(test)]
    fails: bool,
}

impl SyncTicket {
    /// Makes what was written when the sync began durable: blocks for as
    /// long as the disk takes.
    pub fn sync(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.fails {
            return Err(io::Error::other("injected: sync failed"));
        }
        self.file.sync_data()
    }
}

/// A record in the buffer: where its frame ends, and whether a failed write
/// drops it (its sender is told) or keeps it for the next try.
#[derive(Debug, Clone, Copy)]
struct Pending {
    end: usize,
    forget_on_failure: bool,
    /// The sequence number `append` answered with.
    seq: u64,
}

impl Writer {
    /// Opens the log in `dir` (created if missing), recovering the newest segment.
    pub fn open(dir: &Path, opts: Options) -> io::Result<(Writer, Recovery)> {
        std::fs::create_dir_all(dir)?;
        let lock = lock_folder(dir, opts.lock_wait)?;
        let segments = segment::list(dir)?;
        let mut recovery = Recovery {
            segments: segments.len(),
            ..Recovery::default()
        };
        let (path, next_seq, segment_len, salt) = match segments.last() {
            None => {
                let path = dir.join(segment::file_name(0));
                let salt = segment::new_salt();
                create_segment(&path, 0, salt)?;
                sync_dir(dir)?;
                recovery.segments = 1;
                (path, 0, segment::HEADER as u64, salt)
            }
            Some((name_seq, path)) => {
                let bytes = std::fs::read(path)?;
                if segment::check_header(path, &bytes).is_err()
                    && bytes.len() < segment::HEADER
                    && segment::MAGIC.starts_with(&bytes[..bytes.len().min(8)])
                {
                    // Created, but the crash came before its header was whole.
                    std::fs::remove_file(path)?;
                    create_segment(path, *name_seq, segment::new_salt())?;
                    sync_dir(dir)?;
                    recovery.truncated = bytes.len() as u64;
                }
                let bytes = if recovery.truncated > 0 {
                    std::fs::read(path)?
                } else {
                    bytes
                };
                let header = segment::check_header(path, &bytes)
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
                (
                    path.clone(),
                    header.first_seq + scan.frames,
                    scan.valid_end,
                    header.salt,
                )
            }
        };
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok((
            Writer {
                _lock: lock,
                dir: dir.to_path_buf(),
                file,
                path,
                salt,
                pending: Vec::with_capacity(FLUSH_AT + 4096),
                pending_records: Vec::new(),
                forgotten: Vec::new(),
                written_len: segment_len,
                synced_len: segment_len,
                synced_seq: next_seq,
                damaged: false,
                poisoned: None,
                #[cfg(test)]
                faults: Faults::default(),
                next_seq,
                retain_floor: Arc::new(AtomicU64::new(u64::MAX)),
                opts,
                gaps: Vec::new(),
                told: Vec::new(),
            },
            recovery,
        ))
    }

    /// Buffers `record`; its sequence number. If a write fails, the record
    /// stays buffered and is written when the disk works again.
    pub fn append(&mut self, record: &Record) -> io::Result<u64> {
        self.buffer(record, false)
    }

    /// Buffers `record` whose sender waits to hear it is durable: if the
    /// write fails the sender is told so, and the record is dropped rather
    /// than written later.
    pub fn append_or_forget(&mut self, record: &Record) -> io::Result<u64> {
        self.buffer(record, true)
    }

    /// Buffers a record encoded elsewhere (see [`EncodedRecord`]), as
    /// [`Self::append`] does an owned one.
    pub fn append_encoded(&mut self, record: &EncodedRecord) -> io::Result<u64> {
        self.buffer_encoded(record, false)
    }

    /// [`Self::append_or_forget`], for a record encoded elsewhere.
    pub fn append_encoded_or_forget(&mut self, record: &EncodedRecord) -> io::Result<u64> {
        self.buffer_encoded(record, true)
    }

    fn buffer(&mut self, record: &Record, forget_on_failure: bool) -> io::Result<u64> {
        self.buffer_with(forget_on_failure, |salt, pending| {
            codec::encode(record, salt, pending)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        })
    }

    fn buffer_encoded(
        &mut self,
        record: &EncodedRecord,
        forget_on_failure: bool,
    ) -> io::Result<u64> {
        self.buffer_with(forget_on_failure, |salt, pending| {
            codec::frame(record.payload(), salt, pending);
            Ok(())
        })
    }

    /// Buffers the frame `write` appends to the pending bytes (given the
    /// segment's salt); its sequence number.
    fn buffer_with(
        &mut self,
        forget_on_failure: bool,
        write: impl FnOnce(u64, &mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<u64> {
        self.refuse_if_poisoned()?;
        if self.segment_len() >= self.opts.segment_bytes {
            self.rotate()?;
        }
        let before = self.pending.len();
        if let Err(e) = write(self.salt, &mut self.pending) {
            self.pending.truncate(before);
            return Err(e);
        }
        let seq = self.next_seq;
        self.pending_records.push(Pending {
            end: self.pending.len(),
            forget_on_failure,
            seq,
        });
        self.next_seq += 1;
        if self.pending.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(seq)
    }

    fn segment_len(&self) -> u64 {
        self.written_len + self.pending.len() as u64
    }

    fn refuse_if_poisoned(&self) -> io::Result<()> {
        match &self.poisoned {
            Some(why) => Err(io::Error::other(why.clone())),
            None => Ok(()),
        }
    }

    /// Writes the buffered records to the file (not yet durable).
    pub fn flush(&mut self) -> io::Result<()> {
        self.refuse_if_poisoned()?;
        if self.damaged {
            self.cut_back(self.written_len)?;
            self.damaged = false;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.write_pending() {
            Ok(()) => {
                self.written_len += self.pending.len() as u64;
                self.pending.clear();
                self.pending_records.clear();
                Ok(())
            }
            Err(e) => {
                // Part of the buffer may be in the file: cut it off now if
                // the disk lets us, else before the next write.
                self.damaged = true;
                if self.cut_back(self.written_len).is_ok() {
                    self.damaged = false;
                }
                self.forget_failed();
                Err(e)
            }
        }
    }

    /// After a failed write: keeps the records that wait for the next try,
    /// drops those whose senders are told it failed, and numbers the rest
    /// from where the file ends.
    fn forget_failed(&mut self) {
        let mut kept = Vec::with_capacity(self.pending.len());
        let mut records = Vec::with_capacity(self.pending_records.len());
        let mut start = 0;
        let first_seq = self.next_seq - self.pending_records.len() as u64;
        for r in &self.pending_records {
            if r.forget_on_failure {
                self.forgotten.push(r.seq);
            } else {
                kept.extend_from_slice(&self.pending[start..r.end]);
                records.push(Pending {
                    end: kept.len(),
                    forget_on_failure: false,
                    seq: first_seq + records.len() as u64,
                });
            }
            start = r.end;
        }
        let dropped = (self.pending_records.len() - records.len()) as u64;
        self.next_seq -= dropped;
        self.pending = kept;
        self.pending_records = records;
    }

    fn cut_back(&mut self, len: u64) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.cut_back_fails > 0 {
            self.faults.cut_back_fails -= 1;
            return Err(io::Error::other("injected: cut back failed"));
        }
        self.file.set_len(len)
    }

    fn write_pending(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(part) = self.faults.short_write.take() {
            // A write that got part of the buffer to the file, then failed.
            let part = part.min(self.pending.len());
            self.file.write_all(&self.pending[..part])?;
            return Err(io::Error::other("injected: write failed part way"));
        }
        self.file.write_all(&self.pending)
    }

    fn sync_file(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.sync_fails {
            self.faults.sync_fails = false;
            return Err(io::Error::other("injected: sync failed"));
        }
        self.file.sync_data()
    }

    /// Writes and makes durable everything appended so far.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        if self.synced_len == self.written_len {
            return Ok(());
        }
        match self.sync_file() {
            Ok(()) => {
                self.synced_len = self.written_len;
                self.synced_seq = self.next_seq - self.pending_records.len() as u64;
                Ok(())
            }
            Err(e) => Err(self.sync_failed(&e)),
        }
    }

    /// Writes what is buffered and returns a sync of it to run elsewhere
    /// (`None`: everything written is durable already). Records appended
    /// meanwhile are written as usual; they are durable after the next sync.
    pub fn begin_sync(&mut self) -> io::Result<Option<SyncTicket>> {
        self.flush()?;
        if self.synced_len == self.written_len {
            return Ok(None);
        }
        let ticket = SyncTicket {
            file: self.file.try_clone()?,
            path: self.path.clone(),
            len: self.written_len,
            seq: self.next_seq - self.pending_records.len() as u64,
            #[cfg(test)]
            fails: std::mem::take(&mut self.faults.sync_fails),
        };
        Ok(Some(ticket))
    }

    /// Takes the result of a sync begun with [`Writer::begin_sync`]. A
    /// success makes what the ticket covers durable; a failure is handled
    /// as [`Writer::sync`]'s (cut back to the last good sync, records
    /// written since the ticket included, and everything refused after).
    pub fn end_sync(&mut self, ticket: SyncTicket, result: io::Result<()>) -> io::Result<()> {
        if ticket.path != self.path {
            // The segment was sealed since, and sealing synced it whole.
            // A failure still means a page may be lost that the sealing
            // sync reported durable: nothing more is written on top.
            return result.map_err(|e| {
                let why = format!(
                    "op log sync of the sealed segment {} failed ({e}); its records may not all be on disk; restart to write again",
                    ticket.path.display()
                );
                self.poisoned = Some(why.clone());
                io::Error::other(why)
            });
        }
        match result {
            Ok(()) => {
                if ticket.len > self.synced_len {
                    self.synced_len = ticket.len;
                    self.synced_seq = ticket.seq;
                }
                Ok(())
            }
            Err(e) => Err(self.sync_failed(&e)),
        }
    }

    /// After a failed sync: cut back to what the last good one made durable,
    /// and refuse everything from then on.
    fn sync_failed(&mut self, e: &io::Error) -> io::Error {
        let cut = self
            .cut_back(self.synced_len)
            .and_then(|()| self.file.sync_data());
        let why = match cut {
            Ok(()) => format!(
                "op log sync failed ({e}): records from {} on were cut back, as a crash would; restart to write again",
                self.synced_seq
            ),
            Err(cut) => format!(
                "op log sync failed ({e}) and records from {} on could not be cut back ({cut}); restart to write again",
                self.synced_seq
            ),
        };
        self.written_len = self.synced_len;
        self.next_seq = self.synced_seq;
        self.pending.clear();
        self.pending_records.clear();
        self.poisoned = Some(why.clone());
        io::Error::other(why)
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

    /// Takes `floor` (and its value) as the retention floor: for a sink
    /// started before the writer could open.
    pub fn share_retain_floor(&mut self, floor: Arc<AtomicU64>) {
        self.retain_floor = floor;
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let path = self.dir.join(segment::file_name(self.next_seq));
        let salt = segment::new_salt();
        create_segment(&path, self.next_seq, salt)?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new().append(true).open(&path)?;
        self.path = path;
        self.salt = salt;
        self.written_len = segment::HEADER as u64;
        self.synced_len = self.written_len;
        if let Err(e) = self.retain() {
            tracing::warn!(error = %e, dir = %self.dir.display(), "op log retention failed");
        }
        Ok(())
    }

    /// The sequence numbers, as `append_or_forget` answered them, of records
    /// a failed write dropped since the last call. A failure while
    /// buffering one record (the buffer was full and its write failed) drops
    /// every such record still buffered, not only that one: whoever waits
    /// on them must be told they failed, even if the next sync succeeds.
    /// Take them right after the failing call: the numbers are given out
    /// again to the next records.
    pub fn take_forgotten(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten)
    }

    /// Records deleted before the sink forwarded them: the caller logs a
    /// gap record for each span, and says so with [`Writer::gap_told`].
    pub fn take_gaps(&mut self) -> Vec<GapSpan> {
        std::mem::take(&mut self.gaps)
    }

    /// The gap record for `gap` went into the log as record `seq`.
    pub fn gap_told(&mut self, gap: GapSpan, seq: u64) {
        self.told.push((gap, seq));
    }

    /// Deletes sealed segments past the age or size bound, and unforwarded
    /// ones past the backlog bound.
    fn retain(&mut self) -> io::Result<()> {
        let segments = segment::list(&self.dir)?;
        let floor = self.retain_floor.load(Ordering::Relaxed);
        // The sink has these gap records: told for good.
        self.told.retain(|(_, seq)| *seq >= floor);
        let mut sealed: Vec<(u64, PathBuf, u64, SystemTime)> = Vec::new();
        let mut unforwarded: Vec<(u64, u64, PathBuf, u64)> = Vec::new();
        for (i, (first, path)) in segments.iter().enumerate() {
            if *path == self.path {
                continue;
            }
            // A segment ends where the next begins; keep it while a sink needs any of it.
            let end = segments.get(i + 1).map_or(u64::MAX, |(s, _)| *s);
            if end > floor {
                unforwarded.push((*first, end, path.clone(), std::fs::metadata(path)?.len()));
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
        if let Some(max) = self.opts.max_backlog_bytes {
            let mut backlog: u64 = unforwarded.iter().map(|u| u.3).sum();
            for (first, end, path, len) in &unforwarded {
                if backlog <= max {
                    break;
                }
                std::fs::remove_file(path)?;
                backlog -= len;
                // The sink skips what is gone; retention no longer waits for it.
                self.retain_floor.fetch_max(*end, Ordering::Relaxed);
                // Gap records deleted with them are told again.
                let (lost_told, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.told)
                    .into_iter()
                    .partition(|(_, seq)| (*first..*end).contains(seq));
                self.told = kept;
                self.gaps.extend(lost_told.into_iter().map(|(g, _)| g));
                match self.gaps.last_mut() {
                    Some(g) if g.to_seq == *first => {
                        g.to_seq = *end;
                        g.bytes += len;
                    }
                    _ => self.gaps.push(GapSpan {
                        from_seq: *first,
                        to_seq: *end,
                        bytes: *len,
                    }),
                }
                tracing::error!(
                    segment = %path.display(),
                    records = end - first,
                    "op log backlog past max_backlog_bytes: an unforwarded segment was deleted"
                );
            }
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "op log: cannot write its last records");
        }
    }
}

/// How long `open` waits for another writer of the folder to let go (a
/// process being replaced, syncing its last records).
const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_FILE: &str = "writer.lock";

/// Takes the folder's writer lock (an advisory lock on `writer.lock`, which
/// names the holder's pid), waiting up to `wait` for a holder to let go. Two
/// writers of one folder would each number records from where they found
/// the log and interleave frames; the second is refused instead.
pub(crate) fn lock_folder(dir: &Path, wait: Duration) -> io::Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another writer (pid {}); one process writes an op log folder at a time",
                        dir.display(),
                        holder.trim()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    file.set_len(0)?;
    file.write_all(std::process::id().to_string().as_bytes())?;
    Ok(file)
}

/// The pid of the process writing the log in `dir`, if one holds its lock.
pub fn writer_pid(dir: &Path) -> io::Result<Option<u32>> {
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        // Nobody holds it (the shared lock goes with the file).
        Ok(()) => Ok(None),
        Err(std::fs::TryLockError::WouldBlock) => {
            // The holder writes its pid just after taking the lock: an empty
            // file is one caught in between, read again for a moment.
            let mut text = std::fs::read_to_string(&path)?;
            for _ in 0..100 {
                if !text.trim().is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
                text = std::fs::read_to_string(&path)?;
            }
            text.trim().parse().map(Some).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} names no pid: {:?}", path.display(), text.trim()),
                )
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn create_segment(path: &Path, first_seq: u64, salt: u64) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(&segment::header(first_seq, salt))?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
