//! The router's op log: every write's intent before it is forwarded and its
//! outcome after, and every promotion, appended by one writer thread to the
//! segmented log in `state_dir/oplog`.
//!
//! Requests hand records over a bounded queue: when it is full a write waits
//! for room (back-pressure; no record is ever dropped), while reads never
//! touch the log. The writer drains whatever is queued, appends it, and
//! commits the group: with `fsync: always` it syncs before it acknowledges,
//! and a write is forwarded only once its intent is acknowledged; with
//! `batch` it syncs every [`BATCH_SYNC`]; with `off` the kernel decides.
//! With `batch` and `off` it lingers [`LINGER`] after each group, so that a
//! busy router's records gather rather than wake it one by one. A `batch`
//! sync runs on a blocking thread while the writer goes on writing what
//! arrives: a disk that takes hundreds of milliseconds to sync (it happens)
//! would otherwise stop the writer, fill the queue, and hold every write
//! behind it. One sync runs at a time; what arrives meanwhile is in the next.
//! If the disk fails, the log says so and writes are refused until it works
//! again, rather than forwarded unlogged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use switchyard_config::Fsync;
use switchyard_oplog::{EncodedRecord, Options, Record, RecordKind, SyncTicket, Writer};
use tokio::sync::{mpsc, oneshot};

/// How often `fsync: batch` makes the log durable while records arrive.
pub(crate) const BATCH_SYNC: Duration = Duration::from_millis(10);
/// Records appended between two looks at the clock and the queue.
const MAX_GROUP: usize = 4096;
/// With `fsync: batch` or `off`, how long the writer lets records gather
/// after appending a group. While it lingers a request queues its record
/// without waking this thread: under load the writer wakes about once per
/// linger for a whole group, not once per record (each wake a context
/// switch and a system call on the request's worker). Records still reach
/// the disk within `BATCH_SYNC` plus this; `fsync: always` does not linger.
const LINGER: Duration = Duration::from_millis(1);

enum Msg {
    /// A record; a sender holding `ack` waits until it is written and synced.
    Append {
        record: EncodedRecord,
        ack: Option<oneshot::Sender<Result<u64, String>>>,
    },
    /// Write and sync everything queued before it.
    Flush(oneshot::Sender<()>),
}

pub struct OpLog {
    tx: mpsc::Sender<Msg>,
    fsync: Fsync,
    pub(crate) edge_id: String,
    pub(crate) dir: PathBuf,
    /// The first sequence number the NATS sink has not forwarded; segments
    /// from it on are kept. `u64::MAX` without a sink.
    pub(crate) forwarded: Arc<AtomicU64>,
    /// The sequence number the next record gets (shared by the writer).
    pub(crate) next_seq: Arc<AtomicU64>,
    /// Set while the disk refuses writes.
    failing: Arc<AtomicBool>,
    capacity: usize,
}

/// `record` encoded for the log's queue (see [`EncodedRecord`]).
pub(crate) fn encode(record: &Record) -> Result<EncodedRecord, String> {
    EncodedRecord::of(record).map_err(|e| format!("the record could not be encoded: {e}"))
}

/// The folder of the log under `state_dir`.
pub(crate) fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("oplog")
}

impl OpLog {
    /// Opens (and recovers) the log and starts its writer thread. With
    /// `takeover`, another process (the one this one replaces) still writes
    /// the log: the writer opens it once that process has synced its last
    /// record and let go, waiting up to `takeover`; records queue meanwhile,
    /// and writes wait for their intents as they always do.
    pub fn start(
        state_dir: &Path,
        cfg: &switchyard_config::Oplog,
        edge_id: String,
        takeover: Option<Duration>,
    ) -> anyhow::Result<Arc<OpLog>> {
        let dir = dir(state_dir);
        let opts = Options {
            segment_bytes: cfg.segment_bytes,
            retain_age: cfg.retain_age,
            retain_bytes: cfg.retain_bytes,
            lock_wait: takeover.unwrap_or(Options::default().lock_wait),
            // Only a sink leaves records unforwarded.
            max_backlog_bytes: cfg.nats.is_some().then_some(cfg.max_backlog_bytes),
        };
        // The sink moves the floor up as it forwards.
        let forwarded = Arc::new(AtomicU64::new(if cfg.nats.is_some() {
            crate::store::oplog_nats::cursor(&dir)
        } else {
            u64::MAX
        }));
        let next_seq = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(cfg.queue);
        let failing = Arc::new(AtomicBool::new(false));
        let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel(1);
        let writer = WriterThread {
            edge_id: edge_id.clone(),
            dir: dir.clone(),
            opts,
            fsync: cfg.fsync,
            failing: failing.clone(),
            next_seq: next_seq.clone(),
            forwarded: forwarded.clone(),
        };
        std::thread::Builder::new()
            .name("switchyard-oplog".into())
            .spawn(move || writer.run(rx, opened_tx))
            .context("oplog: cannot start the writer thread")?;
        if takeover.is_none() {
            opened_rx
                .recv()
                .context("oplog: the writer thread stopped while opening the log")??;
        }
        Ok(Arc::new(OpLog {
            tx,
            fsync: cfg.fsync,
            edge_id,
            dir,
            forwarded,
            next_seq,
            failing,
            capacity: cfg.queue,
        }))
    }

    /// Why writes cannot be logged now, if they cannot.
    pub(crate) fn unavailable(&self) -> Option<&'static str> {
        self.failing
            .load(Ordering::Relaxed)
            .then_some("the op log cannot write to its disk; writes are refused until it can")
    }

    /// Logs a write's intent: returns once it may be forwarded (durable with
    /// `fsync: always`, queued otherwise).
    pub async fn intent(&self, record: EncodedRecord) -> Result<(), String> {
        if let Some(why) = self.unavailable() {
            return Err(why.into());
        }
        if self.fsync == Fsync::Always {
            self.append_acked(record).await.map(|_| ())
        } else {
            self.send(record).await
        }
    }

    /// Logs an outcome (waits only for room in the queue).
    pub async fn outcome(&self, record: EncodedRecord) -> Result<(), String> {
        self.send(record).await
    }

    /// Queues a write's intent at once when that is all it takes: the log
    /// is writable, `fsync` is not `always`, and the queue has room. `None`
    /// when it is queued; otherwise the record comes back, for
    /// [`Self::intent`], which waits or says why not.
    ///
    /// A write's records go through here rather than straight to the async
    /// calls: their futures carry the queue's wait, and each was moved into
    /// place, for every write, before it was polled once.
    pub fn intent_now(&self, record: EncodedRecord) -> Option<EncodedRecord> {
        if self.fsync == Fsync::Always || self.unavailable().is_some() {
            return Some(record);
        }
        self.queue_now(record)
    }

    /// Queues an outcome at once if the queue has room (`None`); otherwise
    /// the record comes back, for [`Self::outcome`].
    pub fn outcome_now(&self, record: EncodedRecord) -> Option<EncodedRecord> {
        self.queue_now(record)
    }

    fn queue_now(&self, record: EncodedRecord) -> Option<EncodedRecord> {
        let refused = self.tx.try_send(Msg::Append { record, ack: None }).err()?;
        match refused.into_inner() {
            Msg::Append { record, .. } => Some(record),
            Msg::Flush(_) => unreachable!("only a record was offered"),
        }
    }

    /// Logs `record` and waits until it is on disk, whatever the fsync mode.
    pub async fn durable(&self, record: EncodedRecord) -> Result<u64, String> {
        self.append_acked(record).await
    }

    /// Writes and syncs everything queued so far (at shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Records waiting for the writer.
    pub(crate) fn queued(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    /// The log's part of `GET /admin/v1/status`.
    pub(crate) fn status_json(&self, cfg: &switchyard_config::Oplog) -> serde_json::Value {
        let queued = self.queued();
        serde_json::json!({
            "dir": self.dir.display().to_string(),
            "edge_id": self.edge_id,
            "fsync": format!("{:?}", self.fsync).to_lowercase(),
            "queued": queued,
            "queue": self.capacity,
            "writable": self.unavailable().is_none(),
            "nats": cfg.nats.as_ref().map(|n| serde_json::json!({
                "url": n.url,
                "stream": n.stream,
                "forwarded_before_seq": self.forwarded.load(Ordering::Relaxed),
                "backlog_records": self.nats_backlog_records(),
                "backlog_bytes": self.nats_backlog_bytes(),
            })),
        })
    }

    /// Records appended but not yet forwarded to NATS.
    pub(crate) fn nats_backlog_records(&self) -> u64 {
        self.next_seq
            .load(Ordering::Relaxed)
            .saturating_sub(self.forwarded.load(Ordering::Relaxed))
    }

    /// Bytes of the segments kept on disk for records not yet forwarded
    /// (0 without a backlog).
    pub(crate) fn nats_backlog_bytes(&self) -> u64 {
        if self.nats_backlog_records() == 0 {
            return 0;
        }
        switchyard_oplog::bytes_from(&self.dir, self.forwarded.load(Ordering::Relaxed)).unwrap_or(0)
    }

    async fn send(&self, record: EncodedRecord) -> Result<(), String> {
        let msg = Msg::Append { record, ack: None };
        self.tx
            .send(msg)
            .await
            .map_err(|_| "the op log writer has stopped".to_string())
    }

    /// Sends `record` and waits until it is on disk.
    async fn append_acked(&self, record: EncodedRecord) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        let msg = Msg::Append {
            record,
            ack: Some(tx),
        };
        self.tx
            .send(msg)
            .await
            .map_err(|_| "the op log writer has stopped".to_string())?;
        rx.await
            .map_err(|_| "the op log writer has stopped".to_string())?
    }
}

/// What the writer thread opens the log with and shares with the router.
struct WriterThread {
    edge_id: String,
    dir: PathBuf,
    opts: Options,
    fsync: Fsync,
    failing: Arc<AtomicBool>,
    next_seq: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
}

impl WriterThread {
    /// Opens the log, says how that went on `opened`, then group-commits
    /// until every sender is gone.
    fn run(self, rx: mpsc::Receiver<Msg>, opened: std::sync::mpsc::SyncSender<anyhow::Result<()>>) {
        let writer = match self.open() {
            Ok(w) => {
                let _ = opened.send(Ok(()));
                w
            }
            Err(e) => {
                tracing::error!("{e:#}; writes are refused");
                self.failing.store(true, Ordering::Relaxed);
                let _ = opened.send(Err(e));
                return;
            }
        };
        run_writer(
            writer,
            rx,
            self.fsync,
            self.failing,
            self.next_seq,
            self.edge_id,
        );
    }

    fn open(&self) -> anyhow::Result<Writer> {
        let dir = &self.dir;
        let (mut writer, recovery) = Writer::open(dir, self.opts.clone())
            .with_context(|| format!("oplog: cannot open {}", dir.display()))?;
        for p in &recovery.problems {
            tracing::warn!("op log recovery: {p}");
        }
        if recovery.truncated > 0 {
            tracing::warn!(
                bytes = recovery.truncated,
                "op log recovered from a torn tail: cut {} bytes of an incomplete record; every whole record kept",
                recovery.truncated
            );
        }
        tracing::info!(
            dir = %dir.display(),
            segments = recovery.segments,
            next_seq = writer.next_seq(),
            "op log open"
        );
        writer.share_retain_floor(self.forwarded.clone());
        self.next_seq.store(writer.next_seq(), Ordering::Relaxed);
        Ok(writer)
    }
}

/// Group commits until every sender is gone.
fn run_writer(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Msg>,
    fsync: Fsync,
    failing: Arc<AtomicBool>,
    next_seq: Arc<AtomicU64>,
    edge_id: String,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .thread_name("switchyard-oplog-sync")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "op log writer cannot start");
            failing.store(true, Ordering::Relaxed);
            return;
        }
    };
    rt.block_on(async move {
        let meters = WriterMetrics::new();
        let mut unsynced = false;
        let mut last_sync = Instant::now();
        let mut acks: Vec<(oneshot::Sender<Result<u64, String>>, u64)> = Vec::new();
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        // The `batch` sync running on a blocking thread, if one is.
        let mut syncing: Option<BackgroundSync> = None;
        loop {
            let failed = failing.load(Ordering::Relaxed);
            // A failing disk is tried again each second, so writes resume when it heals.
            let wait = if failed {
                Duration::from_secs(1)
            } else {
                BATCH_SYNC
            };
            let timer = (unsynced && fsync == Fsync::Batch) || failed;
            let first = tokio::select! {
                m = rx.recv() => m,
                () = tokio::time::sleep_until((last_sync + wait).into()), if timer => {
                    if failed {
                        commit(&mut writer, true, &failing, &meters, &mut acks, &mut flushes);
                        unsynced = false;
                    } else {
                        unsynced = !begin_sync(&mut writer, &mut syncing, &failing, &meters);
                    }
                    last_sync = Instant::now();
                    continue;
                }
                done = async { (&mut syncing.as_mut().expect("a sync is running").done).await }, if syncing.is_some() => {
                    syncing = None;
                    end_sync(&mut writer, done.ok(), &failing, &meters);
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut must_sync = fsync == Fsync::Always;
            let mut next = Some(first);
            let mut n = 0;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Append { record, ack } => {
                        must_sync |= ack.is_some();
                        meters.record(record.kind()).increment(1);
                        // A sender waiting for durability hears of a failure
                        // and its record is dropped; one already forwarded
                        // (`batch`, `off`) stays buffered for the next try.
                        let appended = if ack.is_some() {
                            writer.append_encoded_or_forget(&record)
                        } else {
                            writer.append_encoded(&record)
                        };
                        match appended {
                            Ok(seq) => {
                                if let Some(ack) = ack {
                                    acks.push((ack, seq));
                                }
                            }
                            Err(e) => {
                                // The record is not in the log: nobody may think it is.
                                tracing::error!(error = %e, "op log append failed");
                                failing.store(true, Ordering::Relaxed);
                                meters.errors.increment(1);
                                let why = format!("op log append failed: {e}");
                                if let Some(ack) = ack {
                                    let _ = ack.send(Err(why.clone()));
                                }
                                // Nor are the waiting records buffered before
                                // it, which the failed write dropped too.
                                fail_forgotten(&mut writer, &mut acks, &why);
                            }
                        }
                    }
                    Msg::Flush(done) => {
                        must_sync = true;
                        flushes.push(done);
                    }
                }
                n += 1;
                if n < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            let batch_due = fsync == Fsync::Batch && last_sync.elapsed() >= BATCH_SYNC;
            for gap in writer.take_gaps() {
                log_gap(&mut writer, &edge_id, gap);
            }
            // A sender waiting for durability (`always`, a promotion, a
            // flush) is answered after a sync here; a `batch` sync that is
            // due runs beside the writer.
            commit(
                &mut writer,
                must_sync,
                &failing,
                &meters,
                &mut acks,
                &mut flushes,
            );
            if must_sync {
                unsynced = false;
                last_sync = Instant::now();
            } else if batch_due {
                unsynced = !begin_sync(&mut writer, &mut syncing, &failing, &meters);
                last_sync = Instant::now();
            } else {
                unsynced = true;
            }
            next_seq.store(writer.next_seq(), Ordering::Relaxed);
            meters.next_seq.set(writer.next_seq() as f64);
            meters.queued.set(rx.len() as f64);
            if fsync != Fsync::Always {
                tokio::time::sleep(LINGER).await;
            }
        }
        if let Some(running) = syncing.take() {
            end_sync(&mut writer, running.done.await.ok(), &failing, &meters);
        }
        commit(
            &mut writer,
            true,
            &failing,
            &meters,
            &mut acks,
            &mut flushes,
        );
        tracing::info!("op log writer stopped; every record written");
    });
}

/// Says in the log itself which records its sink will never have, so a
/// reconciler reading only the sink reports them.
fn log_gap(writer: &mut Writer, edge_id: &str, gap: switchyard_oplog::GapSpan) {
    tracing::error!(
        from_seq = gap.from_seq,
        to_seq = gap.to_seq,
        bytes = gap.bytes,
        "op log: records deleted before NATS had them (oplog.max_backlog_bytes); a gap record says so"
    );
    metrics::counter!("switchyard_oplog_gap_records_total").increment(gap.to_seq - gap.from_seq);
    let record = Record::Gap(switchyard_oplog::Gap {
        edge_id: edge_id.to_string(),
        at_ms: switchyard_oplog::unix_ms(),
        from_seq: gap.from_seq,
        to_seq: gap.to_seq,
        bytes: gap.bytes,
    });
    match writer.append(&record) {
        Ok(seq) => writer.gap_told(gap, seq),
        Err(e) => tracing::error!(error = %e, "op log: cannot log the gap record"),
    }
}

/// A `batch` sync running on a blocking thread, which sends back its
/// ticket, its result and how long it took.
struct BackgroundSync {
    done: oneshot::Receiver<(SyncTicket, std::io::Result<()>, Duration)>,
}

/// Writes what is buffered and starts a sync of it on a blocking thread,
/// unless one is running. True once what is written is durable or being
/// made so; false when it waits for the next sync.
fn begin_sync(
    writer: &mut Writer,
    syncing: &mut Option<BackgroundSync>,
    failing: &AtomicBool,
    meters: &WriterMetrics,
) -> bool {
    if syncing.is_some() {
        return false;
    }
    match writer.begin_sync() {
        Ok(None) => true,
        Ok(Some(ticket)) => {
            let (tx, done) = oneshot::channel();
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let result = ticket.sync();
                let _ = tx.send((ticket, result, started.elapsed()));
            });
            *syncing = Some(BackgroundSync { done });
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "op log write failed");
            meters.errors.increment(1);
            failing.store(true, Ordering::Relaxed);
            false
        }
    }
}

/// Takes a background sync's result: what it covered is durable, or the
/// log is cut back and refuses writes (as after any failed sync).
fn end_sync(
    writer: &mut Writer,
    done: Option<(SyncTicket, std::io::Result<()>, Duration)>,
    failing: &AtomicBool,
    meters: &WriterMetrics,
) {
    let Some((ticket, result, took)) = done else {
        // Its thread ended without a word: nothing was marked durable, so
        // the next sync covers its records.
        tracing::error!("op log: a background sync ended without its result");
        return;
    };
    meters.sync_seconds.record(took.as_secs_f64());
    if let Err(e) = writer.end_sync(ticket, result) {
        tracing::error!(error = %e, "op log sync failed");
        meters.errors.increment(1);
        failing.store(true, Ordering::Relaxed);
    }
}

/// Writes what is buffered (and syncs when asked), then answers the waiters.
/// Tells the senders of records a failed write dropped that they failed,
/// and forgets their acks: a later sync that succeeds is not theirs.
fn fail_forgotten(
    writer: &mut Writer,
    acks: &mut Vec<(oneshot::Sender<Result<u64, String>>, u64)>,
    why: &str,
) {
    let forgotten = writer.take_forgotten();
    if forgotten.is_empty() {
        return;
    }
    let (dropped, kept): (Vec<_>, Vec<_>) = std::mem::take(acks)
        .into_iter()
        .partition(|(_, seq)| forgotten.contains(seq));
    *acks = kept;
    for (ack, _) in dropped {
        let _ = ack.send(Err(why.to_string()));
    }
}

fn commit(
    writer: &mut Writer,
    sync: bool,
    failing: &AtomicBool,
    meters: &WriterMetrics,
    acks: &mut Vec<(oneshot::Sender<Result<u64, String>>, u64)>,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    let started = Instant::now();
    let result = if sync { writer.sync() } else { writer.flush() };
    if sync {
        meters.sync_seconds.record(started.elapsed().as_secs_f64());
    }
    match &result {
        Ok(()) => {
            if failing.swap(false, Ordering::Relaxed) {
                tracing::warn!("op log writes again");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "op log write failed");
            meters.errors.increment(1);
            failing.store(true, Ordering::Relaxed);
        }
    }
    // Records a failed write dropped on the way (this one, or one while
    // buffering) are not made durable by a sync that then succeeds.
    fail_forgotten(writer, acks, "op log write failed: the record was dropped");
    for (ack, seq) in acks.drain(..) {
        let _ = ack.send(
            result
                .as_ref()
                .map(|()| seq)
                .map_err(|e| format!("op log write failed: {e}")),
        );
    }
    for done in flushes.drain(..) {
        let _ = done.send(());
    }
}

/// The writer's metrics, taken once (the recorder is installed before the
/// log starts): the macros look a metric up by name and labels per call.
struct WriterMetrics {
    /// `switchyard_oplog_records_total`, one counter per record kind.
    intent: metrics::Counter,
    outcome: metrics::Counter,
    promotion: metrics::Counter,
    gap: metrics::Counter,
    errors: metrics::Counter,
    sync_seconds: metrics::Histogram,
    next_seq: metrics::Gauge,
    queued: metrics::Gauge,
}

impl WriterMetrics {
    fn new() -> Self {
        let of = |kind: &'static str| metrics::counter!("switchyard_oplog_records_total", "kind" => kind);
        WriterMetrics {
            intent: of("intent"),
            outcome: of("outcome"),
            promotion: of("promotion"),
            gap: of("gap"),
            errors: metrics::counter!("switchyard_oplog_errors_total"),
            sync_seconds: metrics::histogram!("switchyard_oplog_sync_seconds"),
            next_seq: metrics::gauge!("switchyard_oplog_next_seq"),
            queued: metrics::gauge!("switchyard_oplog_queued"),
        }
    }

    fn record(&self, kind: RecordKind) -> &metrics::Counter {
        match kind {
            RecordKind::Intent => &self.intent,
            RecordKind::Outcome => &self.outcome,
            RecordKind::Promotion => &self.promotion,
            RecordKind::Gap => &self.gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_oplog::{OpId, Outcome, OutcomeKind};

    /// A record for test `i`: an outcome that says when by `i`.
    fn outcome(i: u64) -> EncodedRecord {
        EncodedRecord::of(&Record::Outcome(Outcome {
            op_id: OpId::new(),
            at_ms: i,
            status: 201,
            outcome: OutcomeKind::Acked,
            commit_position: Some(i),
            body: None,
        }))
        .expect("encode")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_makes_writers_wait_and_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("sy-oplog-queue-{}", OpId::new()));
        let cfg = switchyard_config::Oplog {
            queue: 1,
            fsync: Fsync::Always,
            ..Default::default()
        };
        let log = OpLog::start(&dir, &cfg, "edge-t".into(), None).expect("start");
        let mut tasks = Vec::new();
        for i in 0..300u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let r = outcome(i);
                if i % 2 == 0 {
                    log.intent(r).await
                } else {
                    log.outcome(r).await
                }
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("logged");
        }
        log.flush().await;
        let mut n = 0;
        let problems =
            switchyard_oplog::read_dir(&dir.join("oplog"), 0, |_, _| n += 1).expect("read");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(n, 300);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Records offered at once either go in the queue or come back whole;
    /// sent on the waiting way, those that came back are logged too, and
    /// with `fsync: always` every intent comes back to wait for the disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_offered_at_once_are_queued_or_given_back_never_lost() {
        let dir = std::env::temp_dir().join(format!("sy-oplog-now-{}", OpId::new()));
        let cfg = switchyard_config::Oplog {
            queue: 1,
            fsync: Fsync::Batch,
            ..Default::default()
        };
        let log = OpLog::start(&dir, &cfg, "edge-t".into(), None).expect("start");
        let mut given_back = 0;
        for i in 0..500u64 {
            let offered = if i % 2 == 0 {
                log.intent_now(outcome(i))
            } else {
                log.outcome_now(outcome(i))
            };
            if let Some(record) = offered {
                given_back += 1;
                assert!(matches!(record.decode(), Ok(Record::Outcome(o)) if o.at_ms == i));
                log.outcome(record).await.expect("logged");
            }
        }
        log.flush().await;
        let mut at = Vec::new();
        let problems = switchyard_oplog::read_dir(&dir.join("oplog"), 0, |_, r| {
            if let Record::Outcome(o) = r {
                at.push(o.at_ms);
            }
        })
        .expect("read");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(at, (0..500).collect::<Vec<_>>(), "{given_back} given back");
        assert!(given_back > 0, "a queue of one never filled");
        let _ = std::fs::remove_dir_all(&dir);

        let dir = std::env::temp_dir().join(format!("sy-oplog-now-always-{}", OpId::new()));
        let cfg = switchyard_config::Oplog {
            fsync: Fsync::Always,
            ..Default::default()
        };
        let log = OpLog::start(&dir, &cfg, "edge-t".into(), None).expect("start");
        assert!(log.intent_now(outcome(1)).is_some());
        assert!(log.outcome_now(outcome(2)).is_none());
        log.flush().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
