//! Classification: what a request is, from plain inputs (method, path,
//! headers, client address), before any region is considered.

use std::net::IpAddr;

use http::{HeaderMap, Method};
use switchyard_config::{parse_duration, FreshnessClass, RequestClass};
use xxhash_rust::xxh3::xxh3_64;

use crate::route::fields::{self, Fields};
use crate::route::geo::Place;
use crate::route::reject::Reject;
use crate::route::topology::{service_hash, Topology};

/// What the router knows of a request when it decides where it goes.
#[derive(Debug, Clone)]
pub struct Classified<'a> {
    pub(crate) service: &'a str,
    pub(crate) service_hash: u64,
    pub(crate) class: RequestClass,
    /// The replica lag this read accepts, and its fallback.
    pub(crate) freshness: FreshnessClass,
    pub(crate) partition: Option<&'a str>,
    pub(crate) place: Place,
    /// The residency zone the client's data must stay in, if any.
    pub(crate) zone: Option<&'a str>,
    /// Hash of the partition key, else of the client address: what sticky picks use.
    pub(crate) sticky: u64,
    /// Carries the synthetic marker with the right token.
    pub(crate) synthetic: bool,
    /// A verified read-your-writes token for this request's partition.
    pub(crate) ryw: Option<crate::route::ryw::Mark>,
    /// The epoch and op id the token's write was made under, for repair on read.
    pub(crate) ryw_origin: Option<crate::route::ryw::Origin>,
    /// Wall-clock Unix milliseconds when the request arrived (time marks compare to it).
    pub(crate) now_ms: u64,
    /// Monotonic [`now_nanos`](crate::route::live::now_nanos) when it was
    /// classified: every region's freshness is judged against this one reading.
    pub(crate) mono_ns: u64,
}

/// Reads are safe methods unless a route says otherwise.
pub(crate) fn class_of(method: &Method) -> RequestClass {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE => RequestClass::Read,
        _ => RequestClass::Write,
    }
}

/// What a request is: its service, class, freshness, partition, place and
/// marks, from the request line, its headers, the client and the time.
pub fn classify<'a>(
    topo: &'a Topology,
    method: &Method,
    path: &'a str,
    headers: &'a HeaderMap,
    client_ip: IpAddr,
    now_ms: u64,
) -> Result<Classified<'a>, Reject> {
    let mono_ns = crate::route::live::now_nanos();
    let fields = Fields::new(headers);
    classify_at(topo, method, path, &fields, client_ip, now_ms, mono_ns)
}

/// [`classify`] at a monotonic time already read (`mono_ns`, see
/// [`now_nanos`](crate::route::live::now_nanos)): the proxy passes the
/// reading it took when the request arrived.
pub(crate) fn classify_at<'a>(
    topo: &'a Topology,
    method: &Method,
    path: &'a str,
    headers: &Fields<'a>,
    client_ip: IpAddr,
    now_ms: u64,
    mono_ns: u64,
) -> Result<Classified<'a>, Reject> {
    let cfg = &*topo.config;
    let route = cfg.route_for_path(path);
    let service = route
        .map(|r| r.service.as_str())
        .or_else(|| cfg.default_service())
        .ok_or_else(|| Reject::not_found("no service is configured for this path"))?;
    let class = route
        .and_then(|r| r.class)
        .unwrap_or_else(|| class_of(method));
    let freshness = freshness(topo, headers)?;
    let partition = partition_key(topo, path, headers);
    let place = topo.geo.locate(client_ip, headers);
    let zone = place.country.and_then(|c| {
        topo.residency
            .iter()
            .find(|(country, _)| *country == c)
            .map(|(_, zone)| &**zone)
    });
    let sticky = match partition {
        Some(p) => xxh3_64(p.as_bytes()),
        None => match client_ip {
            IpAddr::V4(v4) => xxh3_64(&v4.octets()),
            IpAddr::V6(v6) => xxh3_64(&v6.octets()),
        },
    };
    let synthetic =
        topo.synthetic
            .as_ref()
            .is_some_and(|m| match (&m.token, headers.get_named(&m.header)) {
                (Some(token), Some(v)) => crate::route::hygiene::constant_time_eq(
                    token.as_bytes(),
                    v.as_bytes().trim_ascii(),
                ),
                _ => false,
            });
    let token = if class == RequestClass::Read {
        topo.ryw
            .token_in(headers)
            .filter(|t| t.partition == partition.unwrap_or(crate::route::owners::DEFAULT))
    } else {
        None
    };
    Ok(Classified {
        now_ms,
        mono_ns,
        ryw: token.as_ref().map(|t| t.mark),
        ryw_origin: token.map(|t| crate::route::ryw::Origin {
            epoch: t.epoch,
            op: t.op,
        }),
        synthetic,
        service,
        service_hash: service_hash(service),
        class,
        freshness,
        partition,
        place,
        zone,
        sticky,
    })
}

/// The bound a read accepts: `X-Freshness` naming a class or giving a
/// duration, else the configured default class.
fn freshness(topo: &Topology, headers: &Fields) -> Result<FreshnessClass, Reject> {
    let c = &topo.config.consistency;
    let Some(v) = headers.get(fields::FRESHNESS) else {
        return Ok(topo.default_freshness);
    };
    let s = v
        .to_str()
        .map_err(|_| Reject::bad_request("X-Freshness must be text"))?
        .trim();
    if let Some(bound) = c.classes.get(s) {
        return Ok(*bound);
    }
    parse_duration(s)
        .map(FreshnessClass::bounded)
        .ok_or_else(|| {
            let names: Vec<&str> = c.classes.keys().map(String::as_str).collect();
            Reject::bad_request(format!(
                "X-Freshness must name a class ({}) or give a bound such as 750ms, found {s:?}",
                names.join(", ")
            ))
        })
}

/// The partition key from the configured header or path segment.
fn partition_key<'a>(topo: &Topology, path: &'a str, headers: &Fields<'a>) -> Option<&'a str> {
    let p = &topo.config.consistency.partition;
    if let Some(h) = &topo.partition_header {
        if let Some(v) = headers.get_named(h).and_then(|v| v.to_str().ok()) {
            let v = v.trim();
            if !v.is_empty() {
                return Some(v);
            }
        }
    }
    let seg = p.path_segment?;
    path.trim_start_matches('/')
        .split('/')
        .nth(seg)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::ryw::{Mark, Token};
    use crate::route::topology::for_test;
    use http::HeaderValue;
    use std::time::Duration;

    const CONFIG: &str = "listen: { http: 127.0.0.1:1 }
regions:
  us: { type: full, endpoints: [\"127.0.0.1:2\"], services: [api, search], compliance: { data_residency: US } }
  eu: { type: full, endpoints: [\"127.0.0.1:3\"], services: [api], compliance: { data_residency: EU } }
routes:
  \"/search\": search
  \"/rpc\": { service: api, class: write }
routing:
  policy: geo
  geo: { networks: { \"127.0.0.2/32\": DE } }
  residency: { DE: EU }
consistency:
  freshness: { default: bounded, classes: { strong: 0s, bounded: 2s, relaxed: 30s } }
  partition: { header: X-Partition }
";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn methods_and_routes_decide_service_and_class() {
        let t = for_test(CONFIG);
        let h = HeaderMap::new();
        let get = classify(&t, &Method::GET, "/kv/a", &h, ip("127.0.0.1"), 0).expect("ok");
        assert_eq!((get.service, get.class), ("api", RequestClass::Read));
        let put = classify(&t, &Method::PUT, "/kv/a", &h, ip("127.0.0.1"), 0).expect("ok");
        assert_eq!(put.class, RequestClass::Write);
        let search = classify(&t, &Method::GET, "/search?q=1", &h, ip("127.0.0.1"), 0);
        assert_eq!(search.expect("ok").service, "search");
        // A route can make a safe method a write.
        let rpc = classify(&t, &Method::GET, "/rpc/call", &h, ip("127.0.0.1"), 0).expect("ok");
        assert_eq!(rpc.class, RequestClass::Write);
    }

    #[test]
    fn freshness_is_a_class_or_a_bound_else_a_400() {
        let t = for_test(CONFIG);
        let get = |v: &str| {
            let h = headers(&[("x-freshness", v)]);
            classify(&t, &Method::GET, "/", &h, ip("127.0.0.1"), 0).map(|c| c.freshness.bound)
        };
        assert_eq!(get("strong"), Ok(Duration::ZERO));
        assert_eq!(get("relaxed"), Ok(Duration::from_secs(30)));
        assert_eq!(get("750ms"), Ok(Duration::from_millis(750)));
        let bad = get("soonish").expect_err("unknown class");
        assert_eq!(bad.status, 400);
        assert!(
            bad.reason.contains("bounded, relaxed, strong"),
            "{}",
            bad.reason
        );
        let empty = HeaderMap::new();
        let none = classify(&t, &Method::GET, "/", &empty, ip("127.0.0.1"), 0);
        assert_eq!(none.expect("ok").freshness.bound, Duration::from_secs(2));
    }

    #[test]
    fn partition_and_stickiness_follow_the_key_else_the_client() {
        let t = for_test(CONFIG);
        let keyed = headers(&[("x-partition", " tenant-7 ")]);
        let a = classify(&t, &Method::GET, "/", &keyed, ip("127.0.0.1"), 0).expect("ok");
        let b = classify(&t, &Method::GET, "/", &keyed, ip("127.0.0.9"), 0).expect("ok");
        assert_eq!(a.partition, Some("tenant-7"));
        assert_eq!(a.sticky, b.sticky, "the key, not the client, decides");
        let h = HeaderMap::new();
        let c = classify(&t, &Method::GET, "/", &h, ip("127.0.0.1"), 0).expect("ok");
        let d = classify(&t, &Method::GET, "/", &h, ip("127.0.0.9"), 0).expect("ok");
        assert_eq!(c.partition, None);
        assert_ne!(
            c.sticky, d.sticky,
            "without a key, the client address decides"
        );
    }

    #[test]
    fn the_place_gives_the_residency_zone() {
        let t = for_test(CONFIG);
        let h = HeaderMap::new();
        let de = classify(&t, &Method::GET, "/", &h, ip("127.0.0.2"), 0).expect("ok");
        assert_eq!(
            de.place.country.map(|c| c.as_str().to_string()),
            Some("DE".into())
        );
        assert_eq!(de.zone, Some("EU"));
        let other = classify(&t, &Method::GET, "/", &h, ip("127.0.0.3"), 0).expect("ok");
        assert_eq!(other.zone, None);
    }

    #[test]
    fn a_read_your_writes_token_counts_for_its_partition_and_reads_only() {
        let t = for_test(CONFIG);
        let token = t.ryw.issue(&Token {
            partition: "tenant-7".into(),
            epoch: 1,
            mark: Mark::Position(42),
            op: None,
        });
        let h = headers(&[("x-partition", "tenant-7"), ("x-switchyard-ryw", &token)]);
        let read = classify(&t, &Method::GET, "/", &h, ip("127.0.0.1"), 5).expect("ok");
        assert_eq!(read.ryw, Some(Mark::Position(42)));
        assert_eq!(read.ryw_origin.map(|o| o.epoch), Some(1));
        assert_eq!(read.now_ms, 5);
        let write = classify(&t, &Method::PUT, "/", &h, ip("127.0.0.1"), 0).expect("ok");
        assert_eq!(write.ryw, None);
        let other = headers(&[("x-partition", "tenant-8"), ("x-switchyard-ryw", &token)]);
        let read = classify(&t, &Method::GET, "/", &other, ip("127.0.0.1"), 0).expect("ok");
        assert_eq!(read.ryw, None, "another partition's token");
    }

    #[test]
    fn the_synthetic_marker_needs_its_token() {
        let cfg =
            format!("{CONFIG}synthetic: {{ header: X-Switchyard-Synthetic, token_env: UNUSED }}\n");
        let parsed =
            switchyard_config::parse_str(&cfg, std::path::Path::new("t.yaml")).expect("valid");
        let secrets = crate::route::topology::Secrets {
            ryw_key: std::sync::Arc::from(&b"k"[..]),
            synthetic_token: Some(std::sync::Arc::from("s3cret")),
        };
        let t = Topology::build(std::sync::Arc::new(parsed), None, &secrets).expect("topology");
        let marked = |v: &str| {
            let h = headers(&[("x-switchyard-synthetic", v)]);
            classify(&t, &Method::GET, "/", &h, ip("127.0.0.1"), 0)
                .expect("ok")
                .synthetic
        };
        assert!(marked("s3cret"));
        assert!(marked(" s3cret "));
        assert!(!marked("guess"));
        assert!(!marked(""));
    }
}
