//! The access log: one JSON line per request, written by its own thread so
//! that a slow disk never slows a request. Requests hand their entry over a
//! bounded queue; when it is full the entry is dropped and counted
//! (`switchyard_access_log_dropped_total`), never waited for. `reopen` (on
//! `SIGUSR1`) makes the writer open the path again, for logrotate.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use switchyard_config::{AccessLog, AccessLogTarget};

/// How often the writer drains the queue: at most this much of the log is
/// in memory only, and `buffer` lines must cover a tick's worth of requests.
const TICK: Duration = Duration::from_millis(20);

/// One request, as logged. Field names are the log's contract.
#[derive(Debug, Serialize)]
pub(crate) struct AccessEntry {
    /// RFC 3339, milliseconds, UTC.
    pub(crate) time: String,
    pub(crate) request_id: Option<String>,
    pub(crate) trace_id: Option<String>,
    pub(crate) client: IpAddr,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) protocol: &'static str,
    pub(crate) status: u16,
    pub(crate) bytes_in: usize,
    pub(crate) bytes_out: usize,
    pub(crate) duration_ms: f64,
    pub(crate) upstream_ms: Option<f64>,
    #[serde(serialize_with = "optional_str")]
    pub(crate) region: Option<Arc<str>>,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) class: &'static str,
    pub(crate) freshness_ms: Option<u64>,
    pub(crate) partition: Option<String>,
    pub(crate) epoch: Option<u64>,
    pub(crate) decision: Decision,
    pub(crate) idempotency: Option<&'static str>,
    pub(crate) grpc_status: Option<u16>,
    pub(crate) error: Option<String>,
}

fn optional_str<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(text) => s.serialize_str(text),
        None => s.serialize_none(),
    }
}

/// How the router chose (or refused).
#[derive(Debug, Serialize)]
pub(crate) struct Decision {
    /// `owner` (a write, pinned), the read policy's name, or `refused`.
    pub(crate) rule: &'static str,
    /// A read's freshness fallback when it was used: `stale` or `wait`.
    pub(crate) fallback: Option<&'static str>,
    pub(crate) retries: u8,
    pub(crate) synthetic: bool,
    /// A read-your-writes token steered the read.
    pub(crate) ryw: bool,
    /// The router's own answer's reason, when it answered itself.
    pub(crate) reason: Option<String>,
}

enum Msg {
    Entry(Box<AccessEntry>),
    /// Everything before it is written and flushed; then the sender hears.
    Flush(mpsc::Sender<()>),
}

/// The handle requests log through.
pub(crate) struct AccessLogWriter {
    tx: SyncSender<Msg>,
    reopen: Arc<AtomicBool>,
    pub(crate) include_query: bool,
}

impl AccessLogWriter {
    /// Opens the log (failing if the file cannot be opened now) and starts its writer.
    pub(crate) fn start(cfg: &AccessLog) -> anyhow::Result<AccessLogWriter> {
        let out = open(&cfg.target)?;
        Self::start_on(cfg, out)
    }

    fn start_on(cfg: &AccessLog, out: Box<dyn Write + Send>) -> anyhow::Result<AccessLogWriter> {
        let (tx, rx) = mpsc::sync_channel(cfg.buffer);
        let reopen = Arc::new(AtomicBool::new(false));
        let target = cfg.target.clone();
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, out, &target, &flag))?;
        Ok(AccessLogWriter {
            tx,
            reopen,
            include_query: cfg.include_query,
        })
    }

    /// Queues an entry; a full queue drops it (counted). Whether it was queued.
    pub(crate) fn log(&self, entry: AccessEntry) -> bool {
        match self.tx.try_send(Msg::Entry(Box::new(entry))) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                crate::metrics::access_log_dropped("queue_full");
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                crate::metrics::access_log_dropped("writer_stopped");
                false
            }
        }
    }

    /// Asks the writer to open the path again (after logrotate moved it).
    pub(crate) fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Waits (up to `limit`) until every entry queued so far is written.
    pub(crate) fn flush(&self, limit: Duration) {
        let (done, heard) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = heard.recv_timeout(limit);
        }
    }
}

fn open(target: &AccessLogTarget) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(match target {
        AccessLogTarget::Stdout => Box::new(BufWriter::new(std::io::stdout())),
        AccessLogTarget::File(path) => {
            let file: File = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    anyhow::anyhow!("access_log.path: cannot open {}: {e}", path.display())
                })?;
            Box::new(BufWriter::with_capacity(64 * 1024, file))
        }
    })
}

fn write_loop(
    rx: Receiver<Msg>,
    mut out: Box<dyn Write + Send>,
    target: &AccessLogTarget,
    reopen: &AtomicBool,
) {
    let mut broken = false;
    loop {
        // The writer never blocks on the queue: a request that queues a line
        // must not pay for waking it (a futex call and a context switch per
        // line). It wakes on its own, drains what came, and sleeps again.
        std::thread::sleep(TICK);
        let mut waiting = Vec::new();
        let mut written = 0usize;
        let mut stop = false;
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    stop = true;
                    break;
                }
            };
            match msg {
                Msg::Entry(entry) => {
                    let result = serde_json::to_writer(&mut out, &entry)
                        .map_err(std::io::Error::from)
                        .and_then(|()| out.write_all(b"\n"));
                    if let Err(e) = result {
                        crate::metrics::access_log_dropped("write_failed");
                        if !broken {
                            tracing::error!(error = %e, "cannot write the access log; lines are dropped until it works again");
                            broken = true;
                        }
                    }
                    written += 1;
                }
                Msg::Flush(done) => waiting.push(done),
            }
        }
        if out.flush().is_ok() && written > 0 && broken {
            broken = false;
        }
        for done in waiting {
            let _ = done.send(());
        }
        if stop {
            return;
        }
        if reopen.swap(false, Ordering::Relaxed) {
            match open(target) {
                Ok(fresh) => {
                    out = fresh;
                    tracing::info!("access log reopened");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the access log; still writing the old file")
                }
            }
        }
    }
}

/// RFC 3339 UTC with milliseconds, from Unix milliseconds.
pub(crate) fn rfc3339_ms(unix_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u16) -> AccessEntry {
        AccessEntry {
            time: rfc3339_ms(0),
            request_id: None,
            trace_id: None,
            client: IpAddr::from([127, 0, 0, 1]),
            method: "GET".into(),
            path: "/".into(),
            protocol: "HTTP/1.1",
            status: n,
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0.0,
            upstream_ms: None,
            region: Some(Arc::from("a")),
            endpoint: None,
            class: "read",
            freshness_ms: None,
            partition: None,
            epoch: None,
            decision: Decision {
                rule: "weighted",
                fallback: None,
                retries: 0,
                synthetic: false,
                ryw: false,
                reason: None,
            },
            idempotency: None,
            grpc_status: None,
            error: None,
        }
    }

    /// A sink that takes nothing until told to, like a stalled disk.
    struct Stalled(mpsc::Receiver<()>, Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            self.1.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_drops_lines_instead_of_blocking_requests() {
        let cfg = AccessLog {
            target: AccessLogTarget::Stdout,
            include_query: false,
            buffer: 16,
        };
        let (go, wait) = mpsc::channel();
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = AccessLogWriter::start_on(&cfg, Box::new(Stalled(wait, written.clone())))
            .expect("starts");
        let started = std::time::Instant::now();
        let queued = (0..200).filter(|i| log.log(entry(*i))).count();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "logging never waits"
        );
        assert!((16..=18).contains(&queued), "queued {queued} of 200");
        drop(go);
        log.flush(Duration::from_secs(5));
        let text = String::from_utf8(written.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), queued);
        assert_eq!(lines[0]["status"], 0);
        assert_eq!(lines[0]["region"], "a");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_796_000_000_000), "2026-11-30T00:53:20.000Z");
    }
}
