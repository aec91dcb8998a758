use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::codec::{self, Frame};
use crate::writer::FLUSH_AT;
use crate::*;

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let p = std::env::temp_dir().join(format!("sy-oplog-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn intent(n: u64, body: Vec<u8>) -> Record {
    Record::Intent(Intent {
        op_id: OpId::new(),
        edge_id: "edge-1".into(),
        at_ms: 1_700_000_000_000 + n,
        partition: format!("p{}", n % 7),
        owner_entry: "default".into(),
        method: "PUT".into(),
        path: format!("/kv/k{n}?x=1"),
        idempotency_key: Some(format!("key-{n}")),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: Body::Inline(body),
        owner: "a".into(),
        epoch: 1 + n % 3,
    })
}

fn read_all(dir: &Path) -> (Vec<(u64, Record)>, Vec<Problem>) {
    let mut out = Vec::new();
    let problems = read_dir(dir, 0, |seq, r| out.push((seq, r))).expect("read");
    (out, problems)
}

fn write(dir: &Path, records: &[Record], opts: Options) {
    let (mut w, _) = Writer::open(dir, opts).expect("open");
    for r in records {
        w.append(r).expect("append");
    }
    w.sync().expect("sync");
}

fn the_segment(dir: &Path) -> PathBuf {
    segment::list(dir).expect("list").remove(0).1
}

fn arb_intent() -> impl Strategy<Value = Intent> {
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Body::Inline),
        Just(Body::InOutcome),
        (any::<u64>(), any::<[u8; 32]>()).prop_map(|(len, sha256)| Body::Hashed { len, sha256 }),
    ];
    (
        (
            any::<[u8; 16]>(),
            ".{0,12}",
            any::<u64>(),
            ".{0,12}",
            "[a-z]{0,8}",
            "[A-Z]{1,8}",
        ),
        (
            "[a-z/?=&%]{0,40}",
            proptest::option::of("[ -~]{0,30}"),
            proptest::collection::vec(("[a-z-]{1,12}", "[ -~]{0,20}"), 0..4),
            body,
            ".{0,8}",
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (id, edge_id, at_ms, partition, owner_entry, method),
                (path, idempotency_key, headers, body, owner, epoch),
            )| Intent {
                op_id: OpId(id),
                edge_id,
                at_ms,
                partition,
                owner_entry,
                method,
                path,
                idempotency_key,
                headers,
                body,
                owner,
                epoch,
            },
        )
}

/// `intent` with every field borrowed (its headers as `headers` holds
/// them). Every field is named: a field added to `Intent` and not to
/// `IntentRef` does not compile here.
fn borrowed<'a>(intent: &'a Intent, headers: &'a [(&'a str, &'a str)]) -> IntentRef<'a> {
    let Intent {
        op_id,
        edge_id,
        at_ms,
        partition,
        owner_entry,
        method,
        path,
        idempotency_key,
        headers: _,
        body,
        owner,
        epoch,
    } = intent;
    IntentRef {
        op_id: *op_id,
        edge_id,
        at_ms: *at_ms,
        partition,
        owner_entry,
        method,
        path,
        idempotency_key: idempotency_key.as_deref(),
        headers,
        body: match body {
            Body::Inline(b) => BodyRef::Inline(b),
            Body::InOutcome => BodyRef::InOutcome,
            Body::Hashed { len, sha256 } => BodyRef::Hashed {
                len: *len,
                sha256: *sha256,
            },
        },
        owner,
        epoch: *epoch,
    }
}

fn arb_record() -> impl Strategy<Value = Record> {
    let kind = prop_oneof![
        Just(OutcomeKind::Acked),
        Just(OutcomeKind::Rejected),
        Just(OutcomeKind::Failed),
        Just(OutcomeKind::Unknown),
    ];
    prop_oneof![
        arb_intent().prop_map(Record::Intent),
        (
            any::<[u8; 16]>(),
            any::<u64>(),
            any::<u16>(),
            kind,
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(id, at, status, outcome, pos)| {
                Record::Outcome(Outcome {
                    op_id: OpId(id),
                    at_ms: at,
                    status,
                    outcome,
                    commit_position: pos,
                    body: None,
                })
            }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(at, epoch, forced)| {
            Record::Promotion(Promotion {
                at_ms: at,
                edge_id: "e".into(),
                partition: "*".into(),
                from: "a".into(),
                to: "b".into(),
                from_epoch: epoch,
                to_epoch: epoch.wrapping_add(1),
                applied_position: at / 2,
                forced,
                reason: "drill".into(),
            })
        }),
    ]
}

proptest! {
    #[test]
    fn an_intent_encoded_from_borrowed_fields_is_the_owned_intent_encoded(intent in arb_intent()) {
        let headers: Vec<(&str, &str)> =
            intent.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let from_borrowed = EncodedRecord::intent(&borrowed(&intent, &headers)).expect("encode");
        let record = Record::Intent(intent);
        let from_owned = EncodedRecord::of(&record).expect("encode");
        prop_assert_eq!(from_borrowed.payload(), from_owned.payload());
        prop_assert_eq!(from_borrowed.kind(), RecordKind::Intent);
        prop_assert_eq!(from_borrowed.decode().expect("decode"), record);
    }

    #[test]
    fn records_appended_encoded_read_back_as_appended_owned(
        records in proptest::collection::vec(arb_record(), 1..20),
    ) {
        let (owned, encoded) = (Dir::new(), Dir::new());
        write(&owned.0, &records, Options::default());
        let (mut w, _) = Writer::open(&encoded.0, Options::default()).expect("open");
        for r in &records {
            w.append_encoded(&EncodedRecord::of(r).expect("encode")).expect("append");
        }
        w.sync().expect("sync");
        let (a, a_problems) = read_all(&owned.0);
        let (b, b_problems) = read_all(&encoded.0);
        prop_assert!(a_problems.is_empty() && b_problems.is_empty());
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(b.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), records);
    }

    #[test]
    fn every_record_survives_its_frame(records in proptest::collection::vec(arb_record(), 1..20)) {
        let mut buf = Vec::new();
        let salt = segment::new_salt();
        for r in &records {
            codec::encode(r, salt, &mut buf).expect("encode");
        }
        let mut at = 0;
        for r in &records {
            match codec::decode(&buf[at..], salt) {
                Frame::Record { record, len } => {
                    prop_assert_eq!(&record, r);
                    at += len;
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
        prop_assert_eq!(at, buf.len());
    }

    #[test]
    fn a_cut_anywhere_recovers_every_whole_record(n in 1u64..40, cut_frac in 0.0f64..1.0) {
        let dir = Dir::new();
        let records: Vec<Record> = (0..n).map(|i| intent(i, vec![b'x'; (i * 13 % 97) as usize])).collect();
        write(&dir.0, &records, Options::default());
        let seg = the_segment(&dir.0);
        let len = std::fs::metadata(&seg).expect("meta").len();
        let cut = segment::HEADER as u64 + ((len - segment::HEADER as u64) as f64 * cut_frac) as u64;
        std::fs::OpenOptions::new().write(true).open(&seg).expect("open").set_len(cut).expect("cut");
        // Whole frames that end at or before the cut.
        let mut ends = Vec::new();
        let mut buf = Vec::new();
        for r in &records {
            // A frame's length does not depend on the salt.
            codec::encode(r, codec::NO_SALT, &mut buf).expect("encode");
            ends.push(segment::HEADER as u64 + buf.len() as u64);
        }
        let whole = ends.iter().filter(|e| **e <= cut).count();

        let (mut w, rec) = Writer::open(&dir.0, Options::default()).expect("reopen");
        prop_assert_eq!(rec.records_in_last, whole as u64);
        prop_assert_eq!(w.next_seq(), whole as u64);
        let extra = intent(1000, b"after".to_vec());
        prop_assert_eq!(w.append(&extra).expect("append"), whole as u64);
        w.sync().expect("sync");
        drop(w);
        let (read, problems) = read_all(&dir.0);
        prop_assert!(problems.is_empty(), "{:?}", problems);
        prop_assert_eq!(read.len(), whole + 1);
        for (i, (seq, r)) in read.iter().enumerate() {
            prop_assert_eq!(*seq, i as u64);
            let want = if i < whole { &records[i] } else { &extra };
            prop_assert_eq!(r, want);
        }
    }

    #[test]
    fn a_flipped_bit_costs_one_record_and_is_reported(n in 2u64..30, at_frac in 0.0f64..1.0, bit in 0u8..8) {
        let dir = Dir::new();
        let records: Vec<Record> = (0..n).map(|i| intent(i, vec![b'y'; 20])).collect();
        write(&dir.0, &records, Options::default());
        let seg = the_segment(&dir.0);
        let mut bytes = std::fs::read(&seg).expect("read");
        let body = bytes.len() - segment::HEADER;
        let at = segment::HEADER + ((body as f64 * at_frac) as usize).min(body - 1);
        bytes[at] ^= 1 << bit;
        std::fs::write(&seg, &bytes).expect("write");
        let (read, problems) = read_all(&dir.0);
        prop_assert_eq!(read.len() as u64, n - 1, "{:?}", problems);
        prop_assert_eq!(problems.len(), 1, "{:?}", problems);
        for (_, r) in &read {
            prop_assert!(records.contains(r));
        }
    }
}

#[test]
fn segments_rotate_and_old_ones_are_retained_by_size_above_the_floor() {
    let dir = Dir::new();
    let opts = Options {
        segment_bytes: 4096,
        retain_age: None,
        retain_bytes: Some(3 * 4096),
        ..Options::default()
    };
    let records: Vec<Record> = (0..400).map(|i| intent(i, vec![b'z'; 64])).collect();
    let (mut w, _) = Writer::open(&dir.0, opts.clone()).expect("open");
    w.set_retain_floor(0);
    for r in &records[..200] {
        w.append(r).expect("append");
    }
    let kept = segment::list(&dir.0).expect("list");
    assert!(kept.len() > 5, "a sink holding seq 0 keeps every segment");
    w.set_retain_floor(u64::MAX);
    for r in &records[200..] {
        w.append(r).expect("append");
    }
    w.sync().expect("sync");
    let segs = segment::list(&dir.0).expect("list");
    let total: u64 = segs
        .iter()
        .map(|(_, p)| std::fs::metadata(p).expect("meta").len())
        .sum();
    assert!(total <= 5 * 4096, "{} segments, {total} bytes", segs.len());
    let (read, problems) = read_all(&dir.0);
    assert!(problems.is_empty(), "{problems:?}");
    // What is left is the newest records, in order, numbered as written.
    let first = read[0].0;
    assert!(first > 0);
    for (i, (seq, r)) in read.iter().enumerate() {
        assert_eq!(*seq, first + i as u64);
        assert_eq!(r, &records[*seq as usize]);
    }
    assert_eq!(read.last().map(|r| r.0), Some(399));
    // Reading from a sequence number skips what came before.
    let mut from = Vec::new();
    read_dir(&dir.0, 390, |seq, _| from.push(seq)).expect("read");
    assert_eq!(from, (390..400).collect::<Vec<_>>());
}

#[test]
fn a_newer_record_is_named_and_the_rest_is_read() {
    let dir = Dir::new();
    write(
        &dir.0,
        &[intent(1, vec![]), intent(2, vec![])],
        Options::default(),
    );
    let seg = the_segment(&dir.0);
    let mut bytes = std::fs::read(&seg).expect("read");
    // A frame from format 9 between the two, checksummed as its writer would
    // (with the segment's salt).
    let salt = segment::check_header(&seg, &bytes).expect("header").salt;
    let payload = b"from the future";
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(&[9]);
    h.update(&len);
    h.update(payload);
    let mut frame = vec![0xA5, 0x5A, 9];
    frame.extend_from_slice(&len);
    frame.extend_from_slice(&h.finalize().to_le_bytes());
    frame.extend_from_slice(payload);
    bytes.extend_from_slice(&frame);
    std::fs::write(&seg, &bytes).expect("write");
    write(&dir.0, &[intent(3, vec![])], Options::default());
    let (read, problems) = read_all(&dir.0);
    assert_eq!(read.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 3]);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].to_string().contains("format 9, newer"),
        "{}",
        problems[0]
    );
}

#[test]
fn a_segment_cut_inside_its_header_is_started_again() {
    let dir = Dir::new();
    write(&dir.0, &[intent(1, vec![])], Options::default());
    std::fs::write(dir.0.join(segment::file_name(1)), b"SYW").expect("partial");
    let (mut w, rec) = Writer::open(&dir.0, Options::default()).expect("open");
    assert_eq!(rec.truncated, 3);
    assert_eq!(w.append(&intent(2, vec![])).expect("append"), 1);
    drop(w);
    let (read, problems) = read_all(&dir.0);
    assert_eq!(read.len(), 2);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn large_bodies_keep_only_their_hash() {
    let small = Body::of(b"abc", 3);
    assert_eq!(small, Body::Inline(b"abc".to_vec()));
    let big = Body::of(b"abcd", 3);
    assert!(matches!(big, Body::Hashed { len: 4, .. }));
}

#[test]
fn a_tail_follows_appends_across_rotation_without_rereading() {
    let dir = Dir::new();
    let opts = Options {
        segment_bytes: 2048,
        retain_age: None,
        retain_bytes: None,
        ..Options::default()
    };
    let records: Vec<Record> = (0..120).map(|i| intent(i, vec![b'q'; 40])).collect();
    let (mut w, _) = Writer::open(&dir.0, opts).expect("open");
    let mut tail = Tail::new(&dir.0, 5);
    let mut seen = Vec::new();
    for chunk in records.chunks(17) {
        for r in chunk {
            w.append(r).expect("append");
        }
        w.flush().expect("flush");
        let problems = tail
            .poll(usize::MAX, |seq, r| seen.push((seq, r)))
            .expect("poll");
        assert!(problems.is_empty(), "{problems:?}");
    }
    assert!(segment::list(&dir.0).expect("list").len() > 3, "rotated");
    assert_eq!(seen.len(), 115);
    for (seq, r) in &seen {
        assert_eq!(r, &records[*seq as usize]);
    }
    assert_eq!(tail.next_seq(), 120);
    // At most `max` at a time, picking up where it stopped.
    let mut tail = Tail::new(&dir.0, 0);
    let mut n = 0;
    tail.poll(50, |_, _| n += 1).expect("poll");
    assert_eq!((n, tail.next_seq()), (50, 50));
    tail.poll(usize::MAX, |_, _| n += 1).expect("poll");
    assert_eq!((n, tail.next_seq()), (120, 120));
}

/// The records in `dir`, by sequence number, and the problems met.
fn records_of(dir: &Path) -> (Vec<(u64, String)>, Vec<Problem>) {
    let (read, problems) = read_all(dir);
    let paths = read
        .into_iter()
        .map(|(seq, r)| match r {
            Record::Intent(i) => (seq, i.path),
            other => (seq, format!("{other:?}")),
        })
        .collect();
    (paths, problems)
}

#[test]
fn a_write_that_fails_part_way_is_cut_back_and_nothing_is_written_twice_or_late() {
    let dir = Dir::new();
    let (mut w, _) = Writer::open(&dir.0, Options::default()).expect("open");
    w.append(&intent(0, b"a".to_vec())).expect("append");
    w.sync().expect("sync");
    // One record whose sender was told it failed, one already forwarded.
    w.append_or_forget(&intent(1, b"told it failed".to_vec()))
        .expect("append");
    w.append(&intent(2, b"forwarded".to_vec())).expect("append");
    w.faults.short_write = Some(17);
    assert!(w.sync().is_err());
    // The disk stays bad for one more try: the cut-back waits for it.
    w.faults.short_write = Some(5);
    w.faults.cut_back_fails = 1;
    assert!(w.sync().is_err());
    // Healed: the kept record is written once, after the last good one.
    w.append(&intent(3, b"after".to_vec())).expect("append");
    w.sync().expect("sync");
    drop(w);
    let (records, problems) = records_of(&dir.0);
    assert!(problems.is_empty(), "{problems:?}");
    let want = [(0, "/kv/k0?x=1"), (1, "/kv/k2?x=1"), (2, "/kv/k3?x=1")];
    let got: Vec<(u64, &str)> = records.iter().map(|(s, p)| (*s, p.as_str())).collect();
    assert_eq!(got, want);
}

#[test]
fn a_failed_sync_cuts_back_to_what_was_durable_and_refuses_everything_after() {
    let dir = Dir::new();
    let (mut w, _) = Writer::open(&dir.0, Options::default()).expect("open");
    w.append(&intent(0, b"durable".to_vec())).expect("append");
    w.sync().expect("sync");
    w.append(&intent(1, b"written, not durable".to_vec()))
        .expect("append");
    w.faults.sync_fails = true;
    let err = w.sync().expect_err("sync fails");
    assert!(err.to_string().contains("restart"), "{err}");
    assert!(w.append(&intent(2, b"refused".to_vec())).is_err());
    assert!(w.sync().is_err());
    drop(w);
    let (records, problems) = records_of(&dir.0);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(records, [(0, "/kv/k0?x=1".to_string())]);
    // A restart writes again, after the durable record.
    let (mut w, _) = Writer::open(&dir.0, Options::default()).expect("reopen");
    assert_eq!(w.append(&intent(3, b"x".to_vec())).expect("append"), 1);
}

/// A client's body holding a well-formed frame (a CRC right over its own
/// bytes) is not read back as a record after the record around it is
/// damaged: the segment's salt is not in it.
#[test]
fn a_frame_inside_a_body_is_not_taken_for_a_record_after_damage() {
    let dir = Dir::new();
    let mut planted = Vec::new();
    for salt in [codec::NO_SALT, 1, 0x5eed_5eed_5eed_5eed] {
        codec::encode(&intent(99, b"planted".to_vec()), salt, &mut planted).expect("encode");
    }
    let records = vec![
        intent(0, b"before".to_vec()),
        intent(1, planted),
        intent(2, b"after".to_vec()),
    ];
    write(&dir.0, &records, Options::default());
    let seg = the_segment(&dir.0);
    let mut bytes = std::fs::read(&seg).expect("read");
    // Damage the second record's header (its magic).
    let mut first = Vec::new();
    codec::encode(&records[0], codec::NO_SALT, &mut first).expect("encode");
    bytes[segment::HEADER + first.len()] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    let (read, problems) = records_of(&dir.0);
    let paths: Vec<&str> = read.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(paths, ["/kv/k0?x=1", "/kv/k2?x=1"], "{problems:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn segments_of_format_1_are_still_read_and_appended_to() {
    let dir = Dir::new();
    // A format 1 segment: a 20-byte header, frames without a salt.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(segment::MAGIC);
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&0u64.to_le_bytes());
    codec::encode(&intent(0, b"old".to_vec()), codec::NO_SALT, &mut bytes).expect("encode");
    std::fs::write(dir.0.join(segment::file_name(0)), &bytes).expect("write");
    let (mut w, rec) = Writer::open(&dir.0, Options::default()).expect("open");
    assert_eq!(rec.records_in_last, 1);
    w.append(&intent(1, b"new".to_vec())).expect("append");
    w.sync().expect("sync");
    drop(w);
    let (read, problems) = records_of(&dir.0);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(read.len(), 2);
}

/// A tail reads a long log a bounded piece at a time: every record in
/// order, none twice, a frame larger than one piece included.
#[test]
fn a_tail_hands_over_a_long_log_in_bounded_batches() {
    let dir = Dir::new();
    let mut records: Vec<Record> = (0..3000).map(|i| intent(i, vec![b'z'; 700])).collect();
    records.insert(1500, intent(99_999, vec![b'L'; 3 << 20]));
    write(&dir.0, &records, Options::default());
    let mut tail = Tail::new(&dir.0, 0);
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        let mut batch = 0;
        let problems = tail
            .poll(256, |seq, r| {
                batch += 1;
                seen.push((seq, r));
            })
            .expect("poll");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(batch <= 256);
        if batch == 0 {
            break;
        }
    }
    assert_eq!(seen.len(), records.len());
    for (i, (seq, r)) in seen.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(r, &records[i]);
    }
}

#[test]
fn a_second_writer_of_a_folder_is_refused_until_the_first_lets_go() {
    let dir = Dir::new();
    assert_eq!(crate::writer_pid(&dir.0).expect("no lock file yet"), None);
    let (w, _) = Writer::open(&dir.0, Options::default()).expect("open");
    assert_eq!(
        crate::writer_pid(&dir.0).expect("pid"),
        Some(std::process::id())
    );
    let err = crate::writer::lock_folder(&dir.0, std::time::Duration::from_millis(100))
        .expect_err("a second writer");
    assert!(
        err.to_string().contains("in use by another writer")
            && err.to_string().contains(&std::process::id().to_string()),
        "{err}"
    );
    drop(w);
    assert_eq!(crate::writer_pid(&dir.0).expect("unlocked"), None);
    let (_w, _) = Writer::open(&dir.0, Options::default()).expect("reopen after the first closed");
}

#[test]
fn a_backlog_past_its_bound_loses_its_oldest_segments_and_says_which_records() {
    let dir = Dir::new();
    let opts = Options {
        segment_bytes: 4096,
        retain_age: None,
        retain_bytes: None,
        max_backlog_bytes: Some(3 * 4096),
        ..Options::default()
    };
    let records: Vec<Record> = (0..400).map(|i| intent(i, vec![b'b'; 64])).collect();
    let (mut w, _) = Writer::open(&dir.0, opts).expect("open");
    // A sink that has forwarded nothing.
    w.set_retain_floor(0);
    // As the router does: each gap is told by a record in the log itself.
    let mut told = Vec::new();
    for r in &records {
        w.append(r).expect("append");
        for gap in w.take_gaps() {
            let seq = w
                .append(&Record::Gap(crate::Gap {
                    edge_id: "e".into(),
                    at_ms: 0,
                    from_seq: gap.from_seq,
                    to_seq: gap.to_seq,
                    bytes: gap.bytes,
                }))
                .expect("gap record");
            w.gap_told(gap, seq);
            told.push(gap);
        }
    }
    w.sync().expect("sync");
    assert!(told.len() > 3, "{told:?}");
    assert_eq!(told[0].from_seq, 0);
    // What is left starts right after the last gap, and its sealed part
    // fits the bound.
    let segs = segment::list(&dir.0).expect("list");
    let last_gap_end = told.iter().map(|g| g.to_seq).max().expect("a gap");
    assert_eq!(segs[0].0, last_gap_end);
    let sealed: u64 = segs[..segs.len() - 1]
        .iter()
        .map(|(_, p)| std::fs::metadata(p).expect("meta").len())
        .sum();
    assert!(sealed <= 3 * 4096, "{sealed}");
    // Every deleted record is in a gap still in the log: the gap records
    // that were themselves deleted were told again.
    let mut kept_gaps = std::collections::BTreeMap::new();
    let mut seen = Vec::new();
    crate::read_dir(&dir.0, 0, |seq, r| {
        seen.push(seq);
        if let Record::Gap(g) = r {
            kept_gaps.insert(g.from_seq, g.to_seq);
        }
    })
    .expect("read");
    let mut covered = 0;
    for (from, to) in &kept_gaps {
        assert_eq!(*from, covered, "gaps {kept_gaps:?} leave a hole");
        covered = *to;
    }
    assert_eq!(covered, segs[0].0);
    assert_eq!(seen.first(), Some(&segs[0].0));
}

/// A failed write while buffering (the buffer passed its flush size) drops
/// every record whose sender waits on it, not only the one being appended:
/// the writer names them all, so none is acknowledged by a later sync that
/// succeeds.
#[test]
fn records_dropped_by_a_failed_write_while_buffering_are_named() {
    let dir = Dir::new();
    let (mut w, _) = Writer::open(&dir.0, Options::default()).expect("open");
    w.append(&intent(0, b"durable".to_vec())).expect("append");
    w.sync().expect("sync");
    let waiting = w
        .append_or_forget(&intent(1, b"waits for durability".to_vec()))
        .expect("append");
    let forwarded = w
        .append(&intent(2, b"already forwarded".to_vec()))
        .expect("append");
    assert_eq!((waiting, forwarded), (1, 2));
    // The next record fills the buffer past its flush size, and that write fails.
    w.faults.short_write = Some(100);
    let big = w.append_or_forget(&intent(3, vec![b'x'; FLUSH_AT]));
    assert!(big.is_err());
    assert_eq!(
        w.take_forgotten(),
        [1, 3],
        "both waiting records, by the numbers given"
    );
    assert!(w.take_forgotten().is_empty(), "told once");
    // The disk heals and the next sync succeeds: the dropped record is not in
    // the log; the forwarded one is, numbered after the last durable one.
    w.sync().expect("sync");
    drop(w);
    let (records, problems) = records_of(&dir.0);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        records,
        [(0, "/kv/k0?x=1".to_string()), (1, "/kv/k2?x=1".to_string())]
    );
}

#[test]
fn a_sync_run_elsewhere_covers_what_was_written_when_it_began() {
    let dir = Dir::new();
    let (mut w, _) = Writer::open(&dir.0, Options::default()).expect("open");
    w.append(&intent(0, b"before the sync".to_vec()))
        .expect("append");
    let ticket = w.begin_sync().expect("begin").expect("something to sync");
    // Written while the sync runs on another thread.
    w.append(&intent(1, b"during".to_vec())).expect("append");
    w.flush().expect("flush");
    let result = std::thread::spawn(move || {
        let r = ticket.sync();
        (ticket, r)
    })
    .join()
    .expect("sync thread");
    w.end_sync(result.0, result.1).expect("end");
    // A later sync fails: the log is cut back to what the background sync
    // covered, which is the first record, not the one written during it.
    w.faults.sync_fails = true;
    w.sync().expect_err("sync fails");
    drop(w);
    let (records, problems) = records_of(&dir.0);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(records, [(0, "/kv/k0?x=1".to_string())]);
}

#[test]
fn a_failed_sync_run_elsewhere_cuts_back_what_was_written_after_it_too() {
    let dir = Dir::new();
    let (mut w, _) = Writer::open(&dir.0, Options::default()).expect("open");
    w.append(&intent(0, b"durable".to_vec())).expect("append");
    w.sync().expect("sync");
    w.append(&intent(1, b"being synced".to_vec()))
        .expect("append");
    w.faults.sync_fails = true;
    let ticket = w.begin_sync().expect("begin").expect("something to sync");
    w.append(&intent(2, b"written during".to_vec()))
        .expect("append");
    w.flush().expect("flush");
    let result = ticket.sync();
    let err = w.end_sync(ticket, result).expect_err("the sync failed");
    assert!(err.to_string().contains("restart"), "{err}");
    assert!(w.append(&intent(3, b"refused".to_vec())).is_err());
    drop(w);
    let (records, problems) = records_of(&dir.0);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(records, [(0, "/kv/k0?x=1".to_string())]);
}

#[test]
fn a_sync_run_elsewhere_never_takes_back_what_a_later_sync_made_durable() {
    let dir = Dir::new();
    let (mut w, _) = Writer::open(&dir.0, Options::default()).expect("open");
    w.append(&intent(0, b"a".to_vec())).expect("append");
    let ticket = w.begin_sync().expect("begin").expect("something to sync");
    w.append(&intent(1, b"b".to_vec())).expect("append");
    w.sync()
        .expect("a sync on the writer's thread, finished first");
    let result = ticket.sync();
    w.end_sync(ticket, result).expect("end");
    assert!(w.begin_sync().expect("begin").is_none(), "all durable");
    w.append(&intent(2, b"c".to_vec())).expect("append");
    w.faults.sync_fails = true;
    w.sync().expect_err("sync fails");
    drop(w);
    let (records, _) = records_of(&dir.0);
    assert_eq!(
        records,
        [(0, "/kv/k0?x=1".to_string()), (1, "/kv/k1?x=1".to_string())]
    );
}

#[test]
fn a_failed_sync_of_a_segment_sealed_meanwhile_refuses_what_comes_after() {
    let dir = Dir::new();
    let opts = Options {
        segment_bytes: 1024,
        ..Options::default()
    };
    let (mut w, _) = Writer::open(&dir.0, opts).expect("open");
    w.append(&intent(0, vec![b'x'; 600])).expect("append");
    let fine = w.begin_sync().expect("begin").expect("something to sync");
    w.flush().expect("flush");
    w.append(&intent(1, vec![b'y'; 600])).expect("append");
    let failing = w.begin_sync().expect("begin").expect("something to sync");
    // The next append seals the segment (syncing it whole) and starts another.
    w.append(&intent(2, b"in the next segment".to_vec()))
        .expect("append");
    w.sync().expect("sync");
    assert_eq!(segment::list(&dir.0).expect("list").len(), 2);
    // A success for the sealed segment changes nothing...
    let result = fine.sync();
    w.end_sync(fine, result)
        .expect("a sealed segment's sync that worked");
    w.append(&intent(3, b"still taken".to_vec()))
        .expect("append");
    // ...a failure means a page the sealing sync called durable may be
    // lost: nothing more is written on top of it.
    let err = w
        .end_sync(failing, Err(std::io::Error::other("injected")))
        .expect_err("a sealed segment's sync that failed");
    assert!(err.to_string().contains("sealed"), "{err}");
    assert!(w.append(&intent(4, b"refused".to_vec())).is_err());
}
