//! The router's op log path, as requests use it: records handed over the
//! bounded queue by concurrent tasks to the writer thread, which appends and
//! group-commits them. Measures records per second for `fsync: batch` and
//! `fsync: always` (each sender waiting for its record to be on disk).
//!
//! `cargo bench -p switchyard-router --bench oplog_writer`

mod records;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_config::Fsync;
use switchyard_oplog::{EncodedRecord, OpId};
use switchyard_router::oplog::OpLog;

/// Senders running at once, like requests in flight.
const SENDERS: u64 = 64;
const PER_SENDER: u64 = 64;

fn through_the_queue(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("oplog_writer");
    g.throughput(Throughput::Elements(SENDERS * PER_SENDER));
    for fsync in [Fsync::Batch, Fsync::Always] {
        let dir =
            std::env::temp_dir().join(format!("sy-bench-writer-{fsync:?}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = switchyard_config::Oplog {
            fsync,
            ..Default::default()
        };
        let log: Arc<OpLog> = OpLog::start(&dir, &cfg, "edge-bench".into(), None).expect("start");
        g.bench_function(format!("{fsync:?}").to_lowercase(), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut tasks = Vec::new();
                    for s in 0..SENDERS {
                        let log = log.clone();
                        tasks.push(tokio::spawn(async move {
                            for i in 0..PER_SENDER {
                                let record = records::intent(OpId::new(), s * PER_SENDER + i);
                                let record = EncodedRecord::of(&record).expect("encode");
                                log.intent(record).await.expect("logged");
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.expect("sender");
                    }
                    log.flush().await;
                })
            })
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

criterion_group!(benches, through_the_queue);
criterion_main!(benches);
