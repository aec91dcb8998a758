//! The body of each fuzz target, one function per target, each taking the
//! fuzzer's raw bytes. `fuzz/fuzz_targets/*.rs` call these under libFuzzer
//! (`cargo +nightly fuzz run NAME`); `tests/corpus.rs` replays every saved
//! input through the same functions on stable, so CI runs the corpora.
//!
//! A function returns normally for any input: a panic is the bug the fuzzer
//! looks for, and so are the properties asserted here (a decoded record
//! re-encodes to one that decodes the same; a token the parser accepts
//! re-issues to one that verifies the same).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use switchyard_oplog::codec::{self, Frame};
use switchyard_router::decision::{classify, decide, Secrets, Topology};
use switchyard_router::ryw::Signer;

/// The names of the targets, as folders under `fuzz/corpus`.
pub const TARGETS: [&str; 4] = ["config", "oplog_frame", "ryw_token", "classify"];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "config" => config(data),
        "oplog_frame" => oplog_frame(data),
        "ryw_token" => ryw_token(data),
        "classify" => classify_request(data),
        other => panic!("no fuzz target named {other}"),
    }
}

/// The config parser and validator, then the topology built from whatever
/// it accepts (geo tables, owners, freshness classes).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = switchyard_config::parse_str(text, Path::new("/nonexistent/fuzz.yaml")) {
        let _ = Topology::build(Arc::new(cfg), None, &Secrets::fixed(b"fuzz key"));
    }
}

/// The op log frame decoder and its resync after damage: any bytes, as a
/// torn or damaged segment would hold.
pub fn oplog_frame(data: &[u8]) {
    // Segments of format 1 have no salt; newer ones each have their own.
    for salt in [codec::NO_SALT, 0x5eed_0000_0000_0001] {
        match codec::decode(data, salt) {
            Frame::Record { record, len } => {
                assert!(len <= data.len(), "a frame longer than the buffer");
                let mut again = Vec::new();
                codec::encode(&record, salt, &mut again).expect("a decoded record encodes");
                match codec::decode(&again, salt) {
                    Frame::Record { record: back, len } => {
                        assert_eq!(len, again.len());
                        assert_eq!(back, record, "re-encoded record decodes differently");
                    }
                    _ => panic!("a re-encoded record does not decode"),
                }
            }
            Frame::Partial | Frame::Damaged(_) | Frame::Newer { .. } => {}
        }
        if let Some(at) = codec::resync(data, salt) {
            assert!(at > 0 && at < data.len(), "resync went nowhere");
        }
    }
}

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| Signer::new(b"fuzz key, 32 bytes or more, fixed"))
}

/// The read-your-writes token parser: whatever it accepts re-issues to a
/// token that verifies the same.
pub fn ryw_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let s = signer();
    // Mode 0: the bytes as a client sends them (mostly refused at the MAC;
    // the seeds are real tokens). Mode 1: sealed first, so the parser behind
    // the MAC check sees arbitrary bodies.
    let token = if mode & 1 == 0 {
        s.verify(text)
    } else {
        s.verify(&s.seal(text))
    };
    if let Some(token) = token {
        let again = s.issue(&token);
        assert_eq!(s.verify(&again), Some(token), "a re-issued token differs");
    }
}

/// The config every classify input runs against: every input the
/// classifier reads (routes, classes, freshness, partitions, geo from CIDR
/// and header with a trust boundary, residency, synthetic marker).
pub const CLASSIFY_CONFIG: &str = r#"
listen: { http: 127.0.0.1:8080 }
regions:
  us-east-1:
    type: full
    endpoints: ["127.0.0.1:9001"]
    location: { continent: NA, country: US }
    services: [api, media]
    compliance: { data_residency: US }
  eu-west-1:
    type: full
    endpoints: ["127.0.0.1:9002"]
    location: { continent: EU, country: IE }
    services: [api]
    compliance: { data_residency: EU }
  ap-1:
    type: read-only
    endpoints: ["127.0.0.1:9003"]
    services: [api]
    compliance: { data_residency: AP }
routes:
  /media: media
  /api/report: { service: api, class: read }
trusted_proxies: ["10.0.0.0/8"]
routing:
  policy: geo
  geo:
    header: CF-IPCountry
    networks: { "10.1.0.0/16": DE, "192.168.0.0/16": JP, "2001:db8::/32": FR }
    prefer: { EU: [eu-west-1, us-east-1], AS: [ap-1, us-east-1], default: [us-east-1, eu-west-1] }
  residency: { DE: EU, FR: EU, IE: EU, JP: AP }
consistency:
  freshness: { default: bounded, classes: { strong: 0s, bounded: 2s, relaxed: 30s } }
  partition: { header: X-Partition }
  owners: { default: us-east-1 }
synthetic: { header: X-Switchyard-Synthetic, token_env: FUZZ_SYNTHETIC_TOKEN_UNSET }
"#;

fn topology() -> &'static Topology {
    static TOPO: OnceLock<Topology> = OnceLock::new();
    TOPO.get_or_init(|| {
        let cfg = switchyard_config::parse_str(CLASSIFY_CONFIG, Path::new("fuzz.yaml"))
            .expect("the classify target's config is valid");
        let topo =
            Topology::build(Arc::new(cfg), None, &Secrets::fixed(b"fuzz key")).expect("topology");
        topo.assume_probed(|i| 0.010 + i as f64 * 0.005);
        topo
    })
}

const METHODS: [Method; 6] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

/// The request classifier and the decision after it, on a request read from
/// the input: byte 0 picks the method and byte 1 the client address; then
/// lines: the path, and `name: value` headers (lines that are no valid
/// header are skipped, as the HTTP parser would refuse them).
pub fn classify_request(data: &[u8]) {
    let [m, ip, rest @ ..] = data else {
        return;
    };
    let method = &METHODS[usize::from(*m) % METHODS.len()];
    let client: IpAddr = match ip % 4 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 1, 2, *ip)),
        1 => IpAddr::V4(Ipv4Addr::new(192, 168, 0, *ip)),
        2 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(*ip))),
        _ => IpAddr::V4(Ipv4Addr::new(203, 0, 113, *ip)),
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let Some(path) = lines.next().and_then(|p| std::str::from_utf8(p).ok()) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let topo = topology();
    if let Ok(req) = classify(topo, method, path, &headers, client, 1_700_000_000_000) {
        let _ = decide(topo, &req);
    }
}
