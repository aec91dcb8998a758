//! The scan behind a promotion's dry run: a million-record op log (half a
//! million writes, each an intent and its acknowledged outcome, 200-byte
//! bodies, one owner and epoch) read back for the writes above a target's
//! applied position. The dry run's answer time is this plus the flush.
//!
//! `cargo bench -p switchyard-router --bench writes_at_risk`

mod records;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_oplog::{OpId, Options, Outcome, OutcomeKind, Record, Writer};
use switchyard_router::oplog::{acked_writes, Wanted};

const WRITES: u64 = 500_000;

fn log_of(dir: &std::path::Path) {
    let (mut w, _) = Writer::open(dir, Options::default()).expect("open");
    for n in 1..=WRITES {
        let op_id = OpId::new();
        let intent = records::intent(op_id, n);
        let outcome = Record::Outcome(Outcome {
            op_id,
            at_ms: 1_700_000_000_001 + n,
            status: 201,
            outcome: OutcomeKind::Acked,
            commit_position: Some(n),
            body: None,
        });
        w.append(&intent).expect("append");
        w.append(&outcome).expect("append");
    }
    w.sync().expect("sync");
}

fn dry_run_scan(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("sy-bench-at-risk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    log_of(&dir);
    let bytes: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "op log: {} records, {:.0} MiB",
        WRITES * 2,
        bytes as f64 / (1 << 20) as f64
    );
    let wanted: Wanted = [("default".to_string(), ("us-east-1".to_string(), 7))].into();
    let mut g = c.benchmark_group("writes_at_risk");
    g.sample_size(10);
    g.throughput(Throughput::Elements(WRITES * 2));
    g.bench_function("scan_1m_records", |b| {
        b.iter(|| {
            let (writes, problems) = acked_writes(&dir, &wanted).expect("scan");
            assert!(problems.is_empty());
            // A replica 1,000 positions behind: what the dry run counts.
            let at_risk = writes["default"]
                .iter()
                .filter(|w| w.position.is_none_or(|p| p > WRITES - 1000))
                .count();
            assert_eq!(at_risk, 1000);
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, dry_run_scan);
criterion_main!(benches);
