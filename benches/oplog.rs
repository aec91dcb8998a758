//! Op log throughput: appends with `fsync: batch` (one sync per batch of
//! records, as the router's writer thread does), and a full scan of a log of
//! one million records, as the reconciler reads it.
//!
//! `cargo bench -p switchyard-oplog` prints records per second for each.

mod records;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_oplog::{read_dir, OpId, Options, Outcome, OutcomeKind, Record, Writer};

fn temp_dir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("sy-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("temp dir");
    p
}

fn outcome(op_id: OpId, n: u64) -> Record {
    Record::Outcome(Outcome {
        op_id,
        at_ms: 1_700_000_000_000 + n,
        status: 201,
        outcome: OutcomeKind::Acked,
        commit_position: Some(n),
        body: None,
    })
}

/// Records per batch between syncs: what the writer thread drains at a time under load.
const BATCH: u64 = 256;

fn append_batch(c: &mut Criterion) {
    let dir = temp_dir("append");
    let (mut w, _) = Writer::open(&dir, Options::default()).expect("open");
    let records: Vec<Record> = (0..BATCH)
        .map(|n| records::intent(OpId::new(), n))
        .collect();
    let mut g = c.benchmark_group("oplog");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("append_256_then_fsync", |b| {
        b.iter(|| {
            for r in &records {
                w.append(r).expect("append");
            }
            w.sync().expect("sync");
        })
    });
    g.finish();
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes one million records (intent + outcome pairs) once, then times full scans.
fn scan_million(c: &mut Criterion) {
    let dir = temp_dir("scan");
    let (mut w, _) = Writer::open(&dir, Options::default()).expect("open");
    let started = Instant::now();
    for n in 0..500_000u64 {
        let i = records::intent(OpId::new(), n);
        let id = i.op_id().expect("intent has an id");
        w.append(&i).expect("append");
        w.append(&outcome(id, n)).expect("append");
        if n % 4096 == 0 {
            w.sync().expect("sync");
        }
    }
    w.sync().expect("sync");
    drop(w);
    let took = started.elapsed();
    eprintln!(
        "wrote 1,000,000 records in {:.2} s ({:.0} records/s, syncing every 8192)",
        took.as_secs_f64(),
        1e6 / took.as_secs_f64()
    );
    let mut g = c.benchmark_group("oplog");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("scan_1m_records", |b| {
        b.iter(|| {
            let mut n = 0u64;
            let problems = read_dir(&dir, 0, |_, _| n += 1).expect("read");
            assert!(problems.is_empty());
            assert_eq!(n, 1_000_000);
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, append_batch, scan_million);
criterion_main!(benches);
