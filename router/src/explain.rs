//! Explain: the routing decision for a described request, as JSON. It runs
//! the same classification, rules, policy and dials as the proxy, and looks
//! at rate limits without taking a token, so asking changes nothing.

use std::net::IpAddr;
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_config::Policy;

use crate::classify::{classify, Classified};
use crate::decide::{decide, dial_admits, verdict, Verdict};
use crate::policy;
use crate::ratelimit;
use crate::topology::{RegionIdx, Topology};

/// The request to explain, as `POST /admin/v1/explain` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The client address; 127.0.0.1 when absent.
    #[serde(default)]
    pub client: Option<String>,
}

fn default_method() -> String {
    "GET".into()
}

/// A description that cannot be explained: a 400 with this reason.
#[derive(Debug)]
pub struct BadExplain(pub String);

pub fn explain(topo: &Topology, req: &ExplainRequest) -> Result<Value, BadExplain> {
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| BadExplain(format!("method {:?} is not an HTTP method", req.method)))?;
    if !req.path.starts_with('/') {
        return Err(BadExplain(format!(
            "path must start with /, found {:?}",
            req.path
        )));
    }
    let mut headers = HeaderMap::new();
    for (k, v) in &req.headers {
        let name = HeaderName::try_from(k.as_str())
            .map_err(|_| BadExplain(format!("header name {k:?} is not valid")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| BadExplain(format!("header {k} has a value that is not valid")))?;
        headers.append(name, value);
    }
    let client: IpAddr = match &req.client {
        None => IpAddr::from([127, 0, 0, 1]),
        Some(c) => c
            .parse()
            .map_err(|_| BadExplain(format!("client {c:?} is not an IP address")))?,
    };
    let path = req.path.split('?').next().unwrap_or("/");
    let classified = match classify(topo, &method, path, &headers, client) {
        Ok(c) => c,
        Err(r) => {
            return Ok(json!({
                "request": {"method": method.as_str(), "path": req.path, "client": client.to_string()},
                "outcome": {"status": r.status, "reason": r.reason},
                "candidates": [],
                "pick": null,
            }))
        }
    };
    let owner = topo.owner_of(classified.partition);
    let now = ratelimit::nanos(Instant::now());
    let candidates: Vec<Value> = (0..topo.regions.len() as RegionIdx)
        .map(|i| candidate(topo, &classified, owner, i, now))
        .collect();
    let decided = decide(topo, &classified);
    let (order, outcome, pick) = match &decided {
        Ok(order) => {
            let names: Vec<&str> = order.iter().map(|i| topo.name(*i)).collect();
            // The proxy takes the first region in this order with a token.
            let pick = order.iter().find(|i| {
                topo.regions[**i as usize]
                    .rate
                    .as_ref()
                    .is_none_or(|b| b.peek(now).is_ok())
            });
            let outcome = match pick {
                Some(_) => json!({"status": "forward"}),
                None => {
                    json!({"status": 429, "reason": "every eligible region is over its rate limit"})
                }
            };
            (names, outcome, pick.map(|i| topo.name(*i)))
        }
        Err(r) => (
            Vec::new(),
            json!({"status": r.status, "reason": r.reason}),
            None,
        ),
    };
    Ok(json!({
        "request": {
            "method": method.as_str(),
            "path": req.path,
            "client": client.to_string(),
            "service": classified.service,
            "class": crate::metrics::class_label(classified.class),
            "freshness_ms": classified.freshness.bound.as_millis() as u64,
            "partition": classified.partition,
            "country": classified.place.country.map(|c| c.as_str().to_string()),
            "continent": classified.place.continent.map(|c| c.as_str().to_string()),
            "residency_zone": classified.zone,
            "synthetic": classified.synthetic,
        },
        "policy": policy_name(topo.config.routing.policy),
        "owner": topo.owner_and_epoch(classified.partition).map(|(o, epoch)| json!({"region": topo.name(o), "epoch": epoch})),
        "candidates": candidates,
        "order": order,
        "pick": pick,
        "outcome": outcome,
    }))
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::Weighted => "weighted",
        Policy::Geo => "geo",
        Policy::Latency => "latency",
    }
}

/// One region: the rule that kept or dropped it, its score, dial and limit.
fn candidate(
    topo: &Topology,
    req: &Classified<'_>,
    owner: Option<RegionIdx>,
    idx: RegionIdx,
    now: u64,
) -> Value {
    let r = &topo.regions[idx as usize];
    let v = verdict(topo, req, owner, idx);
    let detail = match v {
        Verdict::TooStale => Some(format!(
            "lag {} ms > bound {} ms",
            r.live.lag_ms.load(std::sync::atomic::Ordering::Relaxed),
            req.freshness.bound.as_millis()
        )),
        Verdict::Residency => Some(format!(
            "region zone {:?}, client zone {:?}",
            r.spec.data_residency, req.zone
        )),
        Verdict::NotOwner => owner.map(|o| format!("writes go to {}", topo.name(o))),
        Verdict::Ejected => r.live.ejection().map(|e| e.reason),
        _ => None,
    };
    let is_write = req.class == switchyard_config::RequestClass::Write;
    let dial_ok = is_write || dial_admits(topo, req, idx);
    let score = match topo.config.routing.policy {
        Policy::Weighted => {
            json!({"rendezvous_key": policy::weighted::key(r, req.sticky), "weight": r.weight})
        }
        Policy::Latency => json!({"latency_ms": r.live.latency_score.get().map(|s| s * 1e3)}),
        Policy::Geo => {
            let order = policy::geo::order(topo, &req.place);
            json!({"preference_rank": order.iter().position(|i| *i == idx)})
        }
    };
    let rate = r.rate.as_ref().map(|b| {
        json!({
            "rps": b.limit.rps,
            "burst": b.limit.burst,
            "tokens": b.available(now),
            "admits": b.peek(now).is_ok(),
        })
    });
    let kept = v == Verdict::Keep && dial_ok;
    json!({
        "region": r.spec.name.as_str(),
        "kept": kept,
        "rule": if v != Verdict::Keep { v.as_str() } else if !dial_ok { "dial" } else { "keep" },
        "detail": detail,
        "dial": r.live.dial().to_json_number(),
        "dial_admits": dial_ok,
        "score": score,
        "rate_limit": rate,
    })
}
