//! Classification: what a request is, from plain inputs (method, path,
//! headers, client address), before any region is considered.

use std::net::IpAddr;

use http::{HeaderMap, Method};
use switchyard_config::{parse_duration, FreshnessClass, RequestClass};
use xxhash_rust::xxh3::xxh3_64;

use crate::route::geo::Place;
use crate::route::headers::FRESHNESS;
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
    /// Wall-clock Unix milliseconds when the request arrived (time marks compare to it).
    pub(crate) now_ms: u64,
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
            .is_some_and(|m| match (&m.token, headers.get(&m.header)) {
                (Some(token), Some(v)) => crate::route::hygiene::constant_time_eq(
                    token.as_bytes(),
                    v.as_bytes().trim_ascii(),
                ),
                _ => false,
            });
    let ryw = if class == RequestClass::Read {
        topo.ryw
            .token_in(headers)
            .filter(|t| t.partition == partition.unwrap_or(crate::route::owners::DEFAULT))
            .map(|t| t.mark)
    } else {
        None
    };
    Ok(Classified {
        now_ms,
        ryw,
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
fn freshness(topo: &Topology, headers: &HeaderMap) -> Result<FreshnessClass, Reject> {
    let c = &topo.config.consistency;
    let Some(v) = headers.get(&FRESHNESS) else {
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
fn partition_key<'a>(topo: &Topology, path: &'a str, headers: &'a HeaderMap) -> Option<&'a str> {
    let p = &topo.config.consistency.partition;
    if let Some(h) = &topo.partition_header {
        if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
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
