//! The fleet sink: forwards the local op log to NATS JetStream. Each record
//! is published as its frame (the same bytes as on disk, checksum included)
//! with `Nats-Msg-Id` set to its dedup id, so the server drops a record sent
//! twice (after a reconnect, or by a restarted router). The local log stays
//! the source: the sink remembers the sequence number it has forwarded up to
//! (`nats.cursor` beside the segments, and the writer's retention floor,
//! so every segment past it is kept), and an unreachable server only delays forwarding.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use switchyard_config::Nats;
use switchyard_oplog::{codec, Record, Tail};

const CURSOR: &str = "nats.cursor";
/// How often the sink looks for new records.
const POLL: Duration = Duration::from_millis(100);
/// Records published before their acknowledgements are awaited.
const WINDOW: usize = 256;
/// How long the server remembers message ids: covers a router restarting
/// and re-sending what it had published but not yet counted as forwarded.
const DEDUP_WINDOW: Duration = Duration::from_secs(30 * 60);

/// The first sequence number not yet forwarded (0 when nothing was).
pub(crate) fn cursor(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(CURSOR))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn save_cursor(dir: &Path, seq: u64) -> anyhow::Result<()> {
    crate::store::write_atomically(&dir.join(CURSOR), seq.to_string().as_bytes())
}

/// The stream's definition; created when missing.
pub(crate) fn stream_config(nats: &Nats) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: nats.stream.clone(),
        subjects: vec![nats.subject()],
        duplicate_window: DEDUP_WINDOW,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    }
}

/// Forwards records forever, reconnecting as needed. Runs on the control runtime.
pub(crate) async fn run(dir: PathBuf, nats: Nats, edge_id: String, forwarded: Arc<AtomicU64>) {
    loop {
        match forward(&dir, &nats, &edge_id, &forwarded).await {
            Ok(()) => {}
            Err(e) => {
                metrics::counter!("switchyard_oplog_nats_errors_total").increment(1);
                tracing::warn!(url = %nats.url, error = %format!("{e:#}"), "op log: cannot forward to NATS; records stay in the local log");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn forward(
    dir: &Path,
    nats: &Nats,
    edge_id: &str,
    forwarded: &AtomicU64,
) -> anyhow::Result<()> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(nats.url.as_str())
        .await?;
    let js = jetstream::new(client);
    js.get_or_create_stream(stream_config(nats)).await?;
    tracing::info!(url = %nats.url, stream = %nats.stream, "op log forwarding to NATS");
    let subject = nats.subject();
    // Reads each new byte of the log once, from where forwarding stopped.
    let mut tail = Tail::new(dir, cursor(dir));
    loop {
        // One window at a time: a backlog built while NATS was away is read
        // from disk as it is sent, never into memory whole.
        let mut batch: Vec<(u64, Record)> = Vec::with_capacity(WINDOW);
        for p in tail.poll(WINDOW, |seq, r| batch.push((seq, r)))? {
            tracing::warn!("op log forwarding: {p}");
        }
        let full = batch.len() == WINDOW;
        for chunk in batch.chunks(WINDOW) {
            let mut acks = Vec::with_capacity(chunk.len());
            for (seq, record) in chunk {
                let mut frame = Vec::new();
                // One frame per message: nothing to resync across, so no salt.
                codec::encode(record, codec::NO_SALT, &mut frame)?;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", record.dedup_id().as_str());
                headers.insert("Switchyard-Edge", edge_id);
                headers.insert("Switchyard-Seq", seq.to_string().as_str());
                acks.push(
                    js.publish_with_headers(subject.clone(), headers, frame.into())
                        .await?,
                );
            }
            for ack in acks {
                ack.await?;
            }
            if let Some((last, _)) = chunk.last() {
                save_cursor(dir, last + 1)?;
                forwarded.store(last + 1, Ordering::Relaxed);
                metrics::counter!("switchyard_oplog_nats_forwarded_total")
                    .increment(chunk.len() as u64);
            }
        }
        if !full {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Keeps the backlog gauges current, whether or not NATS answers: records
/// not yet forwarded, and the bytes of the segments kept on disk for them.
pub(crate) async fn watch_backlog(log: Arc<crate::store::oplog::OpLog>) {
    loop {
        let l = log.clone();
        if let Ok((records, bytes)) =
            tokio::task::spawn_blocking(move || (l.nats_backlog_records(), l.nats_backlog_bytes()))
                .await
        {
            metrics::gauge!("switchyard_oplog_nats_backlog_records").set(records as f64);
            metrics::gauge!("switchyard_oplog_nats_backlog_bytes").set(bytes as f64);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Feeds `each` every record in the stream, from its first message to the
/// last one there when reading began: every edge's writes, for counting
/// what a promotion would strand. Messages that are not whole records are
/// counted and skipped (the reconciler names them).
pub(crate) async fn read_stream(nats: &Nats, mut each: impl FnMut(Record)) -> anyhow::Result<u64> {
    let mut unreadable = 0;
    switchyard_oplog::stream::read(&nats.url, &nats.stream, |_, frame| match frame {
        codec::Frame::Record { record, .. } => each(record),
        _ => unreadable += 1,
    })
    .await?;
    Ok(unreadable)
}
