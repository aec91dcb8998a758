//! The routing decision on the hot path: classify a request, filter the
//! candidate regions, order them by policy, apply dials (some in tenths of a
//! percent) and take a rate-limit token, at 3, 10 and 50 regions. Target:
//! under 1 µs per decision at 50 regions. And the token bucket alone: under
//! 50 ns per check uncontended.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use switchyard_router::decision::{
    classify, decide, nanos, take_rate_tokens, Secrets, TokenBucket, Topology,
};

fn config(regions: usize, policy: &str) -> String {
    let mut text = String::from("listen: { http: 127.0.0.1:8080 }\nregions:\n");
    let continents = ["NA", "EU", "AS"];
    for i in 0..regions {
        text.push_str(&format!(
            "  r{i}:\n    type: full\n    endpoints: [\"127.0.0.1:{}\"]\n    services: [api]\n    compliance: {{ data_residency: {} }}\n    dial: {}\n    rate_limit: {{ rps: 10000000, burst: 1000000 }}\n",
            9000 + i,
            continents[i % 3],
            if i % 4 == 3 { "30.5" } else { "100" }
        ));
    }
    let weights: Vec<String> = (0..regions).map(|i| format!("r{i}: {}", 10 + i)).collect();
    text.push_str(&format!(
        "routing:\n  policy: {policy}\n  weights: {{ {} }}\n  geo:\n    networks: {{ \"10.0.0.0/8\": DE, \"192.168.0.0/16\": JP }}\n    prefer: {{ EU: [r1, r0], AS: [r2, r0], default: [r0] }}\n",
        weights.join(", ")
    ));
    text
}

fn topology(regions: usize, policy: &str) -> Topology {
    let cfg = switchyard_config::parse_str(&config(regions, policy), Path::new("bench.yaml"))
        .expect("bench config is valid");
    let topo =
        Topology::build(Arc::new(cfg), None, &Secrets::fixed(b"bench key")).expect("topology");
    topo.assume_probed(|i| 0.010 + i as f64 * 0.001);
    topo
}

fn bench_decision(c: &mut Criterion) {
    let keys: Vec<HeaderValue> = (0..1024)
        .map(|i| HeaderValue::from_str(&format!("tenant-{i}")).expect("value"))
        .collect();
    let client: IpAddr = "10.1.2.3".parse().expect("ip");
    let partition = http::HeaderName::from_static("x-partition");
    for policy in ["weighted", "geo", "latency"] {
        let mut group = c.benchmark_group(format!("decision/{policy}"));
        for n in [3usize, 10, 50] {
            let topo = topology(n, policy);
            let mut headers = HeaderMap::new();
            headers.insert("user-agent", HeaderValue::from_static("bench"));
            headers.insert("accept", HeaderValue::from_static("*/*"));
            let mut i = 0usize;
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    headers.insert(&partition, keys[i].clone());
                    let req = classify(&topo, &Method::GET, "/kv/item", &headers, client, 0)
                        .expect("classifies");
                    let mut order = decide(&topo, &req).expect("decides");
                    take_rate_tokens(&topo, &mut order, nanos(Instant::now())).expect("tokens");
                    black_box(order.len())
                })
            });
        }
        group.finish();
    }
}

fn bench_token_bucket(c: &mut Criterion) {
    let mut group = c.benchmark_group("token_bucket");
    let open = TokenBucket::new(switchyard_config::RateLimit {
        rps: 1e9,
        burst: 1_000_000,
    });
    group.bench_function("try_take/admit", |b| {
        b.iter(|| black_box(open.try_take(nanos(Instant::now())).is_ok()))
    });
    let empty = TokenBucket::new(switchyard_config::RateLimit { rps: 1.0, burst: 1 });
    let _ = empty.try_take(nanos(Instant::now()));
    group.bench_function("try_take/refuse", |b| {
        b.iter(|| black_box(empty.try_take(nanos(Instant::now())).is_err()))
    });
    group.bench_function("try_take/admit_fixed_clock", |b| {
        let mut t = 1u64 << 40;
        b.iter(|| {
            t += 1;
            black_box(open.try_take(t).is_ok())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decision, bench_token_bucket);
criterion_main!(benches);
