//! Snapshot tests of the messages `switchyard check` prints.

use super::*;
use std::path::Path;
use std::time::Duration;

fn errors(text: &str) -> String {
    match parse_str(text, Path::new("edge.yaml")) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

const MINIMAL: &str = "listen: { http: 127.0.0.1:8080 }
regions:
  a: { type: full, endpoints: [\"127.0.0.1:1\"], services: [api] }
routing: { policy: weighted }
";

#[test]
fn design_example_is_accepted_as_is() {
    let cfg = parse_str(EXAMPLE, Path::new("/etc/sy/switchyard.yaml")).expect("example is valid");
    assert_eq!(cfg.regions.len(), 2);
    assert_eq!(cfg.regions[0].name.as_str(), "us-east-1");
    assert_eq!(cfg.regions[0].kind, RegionKind::Full);
    assert_eq!(cfg.regions[0].health.timeout, Duration::from_millis(500));
    assert_eq!(cfg.regions[1].dial, Percent::ZERO);
    assert_eq!(cfg.routing.policy, Policy::Weighted);
    assert_eq!(cfg.routing.weights[&RegionName::new("us-east-1")], 80);
    assert_eq!(cfg.routing.geo.networks[0].1, "DE");
    assert_eq!(cfg.routing.residency["DE"], "EU");
    assert_eq!(
        cfg.consistency.classes["relaxed"].bound,
        Duration::from_secs(30)
    );
    assert_eq!(
        cfg.consistency.partition.header.as_deref(),
        Some("X-Partition")
    );
    assert_eq!(cfg.oplog.fsync, Fsync::Batch);
    // Paths are relative to the config file's folder.
    assert_eq!(
        cfg.listen.https.as_ref().map(|h| h.cert.clone()),
        Some(Path::new("/etc/sy/tls/edge.crt").to_path_buf())
    );
    assert_eq!(cfg.state_dir, Path::new("/etc/sy/var/switchyard"));
}

#[test]
fn minimal_config_takes_defaults() {
    let cfg = parse_str(MINIMAL, Path::new("edge.yaml")).expect("minimal is valid");
    assert_eq!(cfg.regions[0].dial, Percent::FULL);
    assert_eq!(cfg.regions[0].health.path, "/health");
    assert_eq!(cfg.limits.max_header_count, 100);
    assert_eq!(cfg.shutdown_grace, Duration::from_secs(5));
    assert_eq!(cfg.consistency.default_class, "bounded");
    assert!(cfg.admin.is_none());
}

#[test]
fn typo_in_region_type() {
    let text = MINIMAL.replace("type: full", "type: fulll");
    assert_eq!(
        errors(&text),
        "edge.yaml:3:14: `regions.a.type` must be one of full | lightweight | read-only, found \"fulll\""
    );
}

#[test]
fn unknown_region_in_weights() {
    let text = MINIMAL.replace(
        "{ policy: weighted }",
        "{ policy: weighted, weights: { a: 1, b: 2 } }",
    );
    assert_eq!(
        errors(&text),
        "edge.yaml:4:47: `routing.weights.b` names region \"b\", which is not declared under `regions` (declared: a)"
    );
}

#[test]
fn unknown_key() {
    let text = format!("{MINIMAL}colour: blue\n");
    assert_eq!(
        errors(&text),
        "edge.yaml:5:1: unknown key `colour`; expected one of: listen, admin, metrics, state_dir, shutdown_grace, limits, regions, routes, routing, consistency, oplog, synthetic, ramps, safety, coordination, trusted_proxies, access_log, tracing"
    );
}

#[test]
fn bad_duration() {
    let text = format!("{MINIMAL}shutdown_grace: 5 seconds please\n");
    assert_eq!(
        errors(&text),
        "edge.yaml:5:17: `shutdown_grace` must be a duration such as 500ms, 2s or 1m, found \"5 seconds please\""
    );
    let bare = format!("{MINIMAL}shutdown_grace: 5\n");
    assert!(errors(&bare).contains("must be a duration"));
}

#[test]
fn weight_and_dial_out_of_range() {
    let text = MINIMAL
        .replace("services: [api] }", "services: [api], dial: 120 }")
        .replace(
            "{ policy: weighted }",
            "{ policy: weighted, weights: { a: -3 } }",
        );
    assert_eq!(
        errors(&text),
        "edge.yaml:3:71: `regions.a.dial` must be a percentage from 0 to 100 in steps of 0.1, found \"120\"\n\
         edge.yaml:4:44: `routing.weights.a` must be a whole number from 0 to 1000000, found \"-3\""
    );
}

#[test]
fn every_error_is_collected() {
    let text = "listen: { http: nowhere }
regions:
  a: { type: primary, endpoints: [\"127.0.0.1\"], services: [api], health: { interval: soon } }
routing: { policy: fastest }
oplog: { fsync: sometimes }
";
    assert_eq!(
        errors(text),
        "edge.yaml:1:17: `listen.http` must be an IP address and port such as 127.0.0.1:8080, found \"nowhere\"\n\
         edge.yaml:3:14: `regions.a.type` must be one of full | lightweight | read-only, found \"primary\"\n\
         edge.yaml:3:35: `regions.a.endpoints` entries must be host:port (or https://host:port) with a port from 1 to 65535, found \"127.0.0.1\"\n\
         edge.yaml:3:86: `regions.a.health.interval` must be a duration such as 500ms, 2s or 1m, found \"soon\"\n\
         edge.yaml:4:20: `routing.policy` must be one of weighted | geo | latency, found \"fastest\"\n\
         edge.yaml:5:17: `oplog.fsync` must be one of always | batch | off, found \"sometimes\""
    );
}

#[test]
fn missing_required_sections() {
    assert_eq!(
        errors("listen: { http: 127.0.0.1:1 }\n"),
        "edge.yaml:1:1: missing required key `regions`\nedge.yaml:1:1: missing required key `routing`"
    );
}

#[test]
fn yaml_syntax_error_has_position() {
    let e = errors("listen: [\n");
    assert!(e.starts_with("edge.yaml:"), "{e}");
    assert!(e.contains("YAML syntax error"), "{e}");
}

#[test]
fn owner_must_be_a_writable_declared_region() {
    let text = MINIMAL.replace(
        "  a: { type: full",
        "  r: { type: read-only, endpoints: [\"127.0.0.1:2\"], services: [api] }\n  a: { type: full",
    ) + "consistency: { owners: { default: r, p1: zz } }\n";
    assert_eq!(
        errors(&text),
        "edge.yaml:6:26: `consistency.owners.default` names \"r\", a read-only region, which cannot own writes\n\
         edge.yaml:6:38: `consistency.owners.p1` names region \"zz\", which is not declared under `regions` (declared: r, a)"
    );
}

#[test]
fn geo_prefer_names_are_checked() {
    let text = MINIMAL.replace(
        "{ policy: weighted }",
        "{ policy: geo, geo: { prefer: { Europe: [a], default: [a, b] } } }",
    );
    assert_eq!(
        errors(&text),
        "edge.yaml:4:42: `routing.geo.prefer` keys must be a country code, a continent code or `default`, found \"Europe\"\n\
         edge.yaml:4:68: `routing.geo.prefer.default` names region \"b\", which is not declared under `regions` (declared: a)"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
    assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
    assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    assert_eq!(parse_duration("12"), None);
    assert_eq!(parse_duration(""), None);
}

#[test]
fn endpoints() {
    assert_eq!(
        parse_endpoint("api.example.com:443").map(|e| e.to_string()),
        Some("api.example.com:443".into())
    );
    assert_eq!(
        parse_endpoint("[::1]:80").map(|e| e.to_string()),
        Some("[::1]:80".into())
    );
    assert_eq!(parse_endpoint("127.0.0.1"), None);
    assert_eq!(parse_endpoint("h:0"), None);
    assert_eq!(parse_endpoint("::1:80"), None);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Whatever the bytes, the loader answers with a config or positioned
        // errors; it never panics.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_str(&text, Path::new("x.yaml"));
        }

        #[test]
        fn mutated_example_never_panics(cut in 0usize..1500, insert in "[ :{}\\[\\],a-z0-9\n-]{0,8}") {
            let mut text = EXAMPLE.to_string();
            let at = cut.min(text.len());
            let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.insert_str(at, &insert);
            if let Err(e) = parse_str(&text, Path::new("x.yaml")) {
                for d in e.diagnostics() {
                    prop_assert!(d.pos.line >= 1 && d.pos.col >= 1);
                }
            }
        }

        #[test]
        fn durations_roundtrip_ms(ms in 0u64..10_000_000) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")), Some(Duration::from_millis(ms)));
        }
    }
}

const RAMPED: &str = "listen: { http: 127.0.0.1:8080 }
regions:
  a: { type: full, endpoints: [\"127.0.0.1:1\"], services: [api] }
  b: { type: full, endpoints: [\"127.0.0.1:2\"], services: [api], dial: 0.5 }
routing: { policy: weighted }
synthetic: { header: X-Switchyard-Synthetic, token_env: SWITCHYARD_SYNTHETIC_TOKEN }
ramps:
  b-launch:
    region: b
    steps: [synthetic, 1, 5, 25, 100]
    hold: 30s
    gates: { max_error_rate: 0.01, max_p99_ratio: 1.5 }
safety: { min_serving_regions: 1, max_dial_step: 25 }
";

#[test]
fn ramps_synthetic_and_safety_parse() {
    let cfg = parse_str(RAMPED, Path::new("edge.yaml")).expect("valid");
    assert_eq!(cfg.regions[1].dial.tenths(), 5);
    let r = &cfg.ramps[0];
    assert_eq!(r.name, "b-launch");
    assert_eq!(r.region.as_str(), "b");
    assert_eq!(
        r.steps,
        vec![
            RampStep::Synthetic,
            RampStep::Real(Percent::from_tenths(10).expect("pct")),
            RampStep::Real(Percent::from_tenths(50).expect("pct")),
            RampStep::Real(Percent::from_tenths(250).expect("pct")),
            RampStep::Real(Percent::FULL),
        ]
    );
    assert_eq!(r.hold, Duration::from_secs(30));
    assert_eq!(r.gates.max_error_rate, Some(0.01));
    assert_eq!(r.gates.max_p99_ratio, Some(1.5));
    assert_eq!(r.gates.max_burn_rate, None);
    assert_eq!(cfg.safety.max_dial_step, Percent::from_tenths(250));
    assert_eq!(
        cfg.synthetic.as_ref().map(|s| s.header.as_str()),
        Some("X-Switchyard-Synthetic")
    );
}

#[test]
fn ramp_mistakes_are_named() {
    let text = RAMPED
        .replace("[synthetic, 1, 5, 25, 100]", "[1, synthetic, 5, 5, 101]")
        .replace("max_dial_step: 25", "max_dial_step: 0.05");
    assert_eq!(
        errors(&text),
        "edge.yaml:10:16: `ramps.b-launch.steps[1]`: `synthetic` can only be the first step\n\
         edge.yaml:10:30: `ramps.b-launch.steps[3]` must be above the step before it (5%), found 5%\n\
         edge.yaml:10:33: `ramps.b-launch.steps[4]` must be a percentage from 0 to 100 in steps of 0.1, found \"101\"\n\
         edge.yaml:13:50: `safety.max_dial_step` must be a percentage from 0 to 100 in steps of 0.1, found \"0.05\""
    );
    assert_eq!(
        errors(&RAMPED.replace("region: b", "region: c")),
        "edge.yaml:9:5: `ramps.b-launch.region` names region \"c\", which is not declared under `regions` (declared: a, b)"
    );
}

#[test]
fn a_synthetic_step_needs_the_marker() {
    let text = RAMPED.replace(
        "synthetic: { header: X-Switchyard-Synthetic, token_env: SWITCHYARD_SYNTHETIC_TOKEN }\n",
        "",
    );
    assert!(
        errors(&text).contains("starts with `synthetic`, but no `synthetic` marker is configured"),
        "{}",
        errors(&text)
    );
}

#[test]
fn percent_accepts_tenths_only() {
    assert_eq!(Percent::from_f64(12.5).map(Percent::tenths), Some(125));
    assert_eq!(Percent::from_f64(0.1).map(Percent::tenths), Some(1));
    assert_eq!(Percent::from_f64(0.05), None);
    assert_eq!(Percent::from_f64(100.1), None);
    assert_eq!(Percent::from_f64(-1.0), None);
    assert_eq!(
        Percent::from_tenths(125).map(|p| p.to_string()),
        Some("12.5%".into())
    );
}

#[test]
fn oplog_settings_parse_and_bad_ones_are_named() {
    let cfg = parse_str(
        &format!(
            "{MINIMAL}oplog: {{ fsync: always, max_body_bytes: 1024, segment_bytes: 8192, retain_age: forever, retain_bytes: 100000, queue: 16, nats: {{ url: \"nats://127.0.0.1:4222\", stream: OPS }} }}\n"
        ),
        Path::new("edge.yaml"),
    )
    .expect("valid");
    assert_eq!(cfg.oplog.fsync, Fsync::Always);
    assert_eq!(cfg.oplog.max_body_bytes, 1024);
    assert_eq!(cfg.oplog.segment_bytes, 8192);
    assert_eq!(cfg.oplog.retain_age, None);
    assert_eq!(cfg.oplog.retain_bytes, Some(100_000));
    assert_eq!(cfg.oplog.queue, 16);
    let nats = cfg.oplog.nats.expect("nats");
    assert_eq!(
        (nats.url.as_str(), nats.stream.as_str()),
        ("nats://127.0.0.1:4222", "OPS")
    );
    assert_eq!(nats.subject(), "ops.records");

    let text = errors(&format!(
        "{MINIMAL}oplog: {{ queue: 0, nats: {{ stream: \"a b\" }} }}\n"
    ));
    assert!(text.contains("`oplog.queue`"), "{text}");
    assert!(
        text.contains("`oplog.nats.stream` must be letters"),
        "{text}"
    );
    assert!(text.contains("url"), "{text}");
}

#[test]
fn trusted_proxies_are_cidr_blocks_or_addresses() {
    let ok = format!("{MINIMAL}trusted_proxies: [\"10.0.0.0/8\", \"127.0.0.5\", \"::1\"]\n");
    let cfg = parse_str(&ok, Path::new("edge.yaml")).expect("valid");
    assert_eq!(cfg.trusted_proxies.len(), 3);
    assert!(cfg.trusts("10.1.2.3".parse().expect("ip")));
    assert!(cfg.trusts("127.0.0.5".parse().expect("ip")));
    assert!(!cfg.trusts("127.0.0.6".parse().expect("ip")));
    let bad = format!("{MINIMAL}trusted_proxies: [\"10.0.0.0/8\", \"cdn.example\"]\n");
    assert_eq!(
        errors(&bad),
        "edge.yaml:5:33: `trusted_proxies` entries must be CIDR blocks or addresses such as 10.0.0.0/8, found \"cdn.example\""
    );
}

#[test]
fn max_writes_at_risk_is_a_count() {
    let ok = format!("{MINIMAL}consistency: {{ promotion: {{ max_writes_at_risk: 25 }} }}\n");
    let cfg = parse_str(&ok, Path::new("edge.yaml")).expect("valid");
    assert_eq!(cfg.consistency.promotion.max_writes_at_risk, Some(25));
    assert_eq!(
        parse_str(MINIMAL, Path::new("edge.yaml"))
            .expect("valid")
            .consistency
            .promotion
            .max_writes_at_risk,
        None,
        "no limit unless set"
    );
    let bad = format!("{MINIMAL}consistency: {{ promotion: {{ max_writes_at_risk: -3 }} }}\n");
    let e = errors(&bad);
    assert!(
        e.starts_with("edge.yaml:5:") && e.contains("consistency.promotion.max_writes_at_risk"),
        "{e}"
    );
}

#[test]
fn repair_on_read_is_off_flag_or_replay() {
    assert_eq!(
        parse_str(MINIMAL, Path::new("edge.yaml"))
            .expect("valid")
            .consistency
            .repair_on_read,
        RepairOnRead::Off
    );
    let ok = format!("{MINIMAL}consistency: {{ repair_on_read: replay }}\n");
    let cfg = parse_str(&ok, Path::new("edge.yaml")).expect("valid");
    assert_eq!(cfg.consistency.repair_on_read, RepairOnRead::Replay);
    let e = errors(&format!(
        "{MINIMAL}consistency: {{ repair_on_read: always }}\n"
    ));
    assert!(
        e.starts_with("edge.yaml:5:")
            && e.contains("consistency.repair_on_read")
            && e.contains("replay"),
        "{e}"
    );
}

#[test]
fn overload_keys_parse_and_bad_ones_are_named_with_their_line() {
    let base = "listen: { http: 127.0.0.1:8080 }\nregions:\n  a: { type: full, endpoints: [\"127.0.0.1:1\"], services: [api], ";
    let ok = format!("{base}max_inflight: 4 }}\n  b: {{ type: full, endpoints: [\"127.0.0.1:2\"], services: [api], adaptive_concurrency: {{ min: 2, max: 50 }} }}\nrouting: {{ policy: weighted, hedge: {{ after: p95, max: 2 }}, try_timeout: 250ms, panic_threshold: 30% }}\n");
    let cfg = parse_str(&ok, Path::new("edge.yaml")).expect("valid");
    assert_eq!(cfg.regions[0].concurrency, Concurrency::Fixed(4));
    match cfg.regions[1].concurrency {
        Concurrency::Adaptive(a) => assert_eq!((a.min, a.max, a.initial), (2, 50, 20)),
        other => panic!("{other:?}"),
    }
    let r = &cfg.routing;
    assert_eq!(
        r.hedge,
        Some(Hedge {
            after: HedgeAfter::P95,
            max: 2
        })
    );
    assert_eq!(r.try_timeout, Some(Duration::from_millis(250)));
    assert_eq!(r.panic_threshold.tenths(), 300);
    let defaults = parse_str(MINIMAL, Path::new("edge.yaml")).expect("valid");
    assert_eq!(defaults.routing.panic_threshold.tenths(), 500);
    assert_eq!(defaults.routing.hedge, None);
    assert_eq!(defaults.regions[0].concurrency, Concurrency::Unlimited);

    let both = format!(
        "{base}max_inflight: 4, adaptive_concurrency: true }}\nrouting: {{ policy: weighted }}\n"
    );
    let e = errors(&both);
    assert!(
        e.starts_with("edge.yaml:3:") && e.contains("cannot both be set"),
        "{e}"
    );
    let bad_hedge = MINIMAL.replace(
        "routing: { policy: weighted }",
        "routing: { policy: weighted, hedge: { after: soon } }",
    );
    let e = errors(&bad_hedge);
    assert!(
        e.starts_with("edge.yaml:4:") && e.contains("routing.hedge.after"),
        "{e}"
    );
    let bad_bounds = format!(
        "{base}adaptive_concurrency: {{ min: 10, max: 5 }} }}\nrouting: {{ policy: weighted }}\n"
    );
    assert!(errors(&bad_bounds).contains("min ≤ initial ≤ max"));
}
