//! Writes the starting inputs of each fuzz target into `fuzz/corpus/<target>/`
//! (`cargo run -p switchyard-fuzz-targets --example seed`): well-formed
//! inputs the fuzzer mutates from, so it starts past the outer checks.

use std::path::PathBuf;

use switchyard_oplog::codec;
use switchyard_oplog::record::*;
use switchyard_router::ryw::{Mark, Signer, Token};

fn save(target: &str, name: &str, data: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(name), data).expect("write seed");
}

fn intent(n: u64, body: Body) -> Record {
    Record::Intent(Intent {
        op_id: OpId::new(),
        edge_id: "edge-1".into(),
        at_ms: 1_700_000_000_000 + n,
        partition: format!("p{n}"),
        owner_entry: "default".into(),
        method: "PUT".into(),
        path: format!("/kv/k{n}"),
        idempotency_key: Some(format!("key-{n}")),
        headers: vec![("content-type".into(), "text/plain".into())],
        body,
        owner: "us-east-1".into(),
        epoch: 1 + n,
    })
}

fn main() {
    save(
        "config",
        "classify-config.yaml",
        switchyard_fuzz_targets::CLASSIFY_CONFIG.as_bytes(),
    );
    for (name, text) in [
        ("minimal.yaml", "listen: { http: 127.0.0.1:8080 }\nregions:\n  a: { type: full, endpoints: [\"127.0.0.1:9001\"], services: [api] }\nrouting: { policy: weighted }\n"),
        ("bad-duration.yaml", "listen: { http: 127.0.0.1:8080 }\nregions:\n  a: { type: full, endpoints: [\"127.0.0.1:9001\"], services: [api], health: { interval: 5parsecs } }\nrouting: { policy: latency }\n"),
        ("limits.yaml", "listen: { http: 127.0.0.1:8080 }\nlimits: { header_timeout: 10s, keepalive_timeout: 60s, body_timeout: 30s, max_connections: 100, per_client: { rps: 10, burst: 20, key: \"header:X-Api-Key\" } }\nregions:\n  a: { type: full, endpoints: [\"a.example:9001\"], services: [api], rate_limit: { rps: 5, burst: 1 } }\nrouting: { policy: weighted, weights: { a: 1 } }\n"),
        ("flow.yaml", "listen:\n  http: 127.0.0.1:8080\nregions: {a: {type: full, endpoints: ['127.0.0.1:1'], services: [api], dial: 12.5}}\nsynthetic: { header: X-Synthetic, token_env: T }\nrouting: {policy: geo, geo: {prefer: {default: [a]}}}\nramps: {r: {region: a, steps: [synthetic, 1, 100], hold: 1s}}\n"),
    ] {
        save("config", name, text.as_bytes());
    }

    let mut all = Vec::new();
    for (n, body) in [
        Body::Inline(b"hello".to_vec()),
        Body::Inline(Vec::new()),
        Body::of(&[7u8; 300], 64),
    ]
    .into_iter()
    .enumerate()
    {
        let mut frame = Vec::new();
        codec::encode(&intent(n as u64, body), codec::NO_SALT, &mut frame).expect("encode");
        save("oplog_frame", &format!("intent-{n}"), &frame);
        all.extend_from_slice(&frame);
        all.extend_from_slice(b"\x00garbage");
    }
    save("oplog_frame", "frames-with-damage-between", &all);
    save("oplog_frame", "torn", &all[..all.len() / 3]);

    let signer = Signer::new(b"fuzz key, 32 bytes or more, fixed");
    for (n, mark) in [Mark::Position(42), Mark::Time(1_700_000_000_000)]
        .into_iter()
        .enumerate()
    {
        let token = signer.issue(&Token {
            partition: format!("tenant-{n}"),
            epoch: 3,
            mark,
            op: Some(switchyard_oplog::OpId([7; 16])),
        });
        // Mode byte 0: the token as a client would send it; mode 1: its body,
        // which the target seals.
        let mut forged = vec![0u8];
        forged.extend_from_slice(token.as_bytes());
        save("ryw_token", &format!("issued-{n}"), &forged);
        let body = token.rsplit_once('.').map_or("", |(b, _)| b);
        let mut sealed = vec![1u8];
        sealed.extend_from_slice(body.as_bytes());
        save("ryw_token", &format!("body-{n}"), &sealed);
    }

    for (name, m, ip, text) in [
        ("read", 0u8, 0u8, "/kv/a\nX-Partition: t1\nX-Freshness: strong"),
        ("write", 2, 1, "/kv/b?x=1\nX-Partition: t2\nIdempotency-Key: k"),
        ("geo-header", 0, 0, "/api/report\nCF-IPCountry: JP\nX-Forwarded-For: 1.2.3.4, 10.0.0.1"),
        ("untrusted-geo", 0, 3, "/media/x\nCF-IPCountry: DE\nX-Real-IP: 8.8.8.8"),
        ("ryw-cookie", 0, 2, "/kv/c\nCookie: a=b; sy_ryw=v1.3.p42.74656e616e742d30.00\nX-Switchyard-Ryw: v1.1.t5.00.00"),
        ("synthetic", 1, 1, "/kv/d\nX-Switchyard-Synthetic: x\nX-Freshness: relaxed"),
    ] {
        let mut data = vec![m, ip];
        data.extend_from_slice(text.as_bytes());
        save("classify", name, &data);
    }
}
