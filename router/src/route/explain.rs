//! Explain: the routing decision for a described request, as JSON. It runs
//! the same classification, rules, policy and dials as the proxy, and looks
//! at rate limits without taking a token, so asking changes nothing.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_config::Policy;

use crate::route::classify::{classify, Classified};
use crate::route::decide::{
    class_rejects, decide_with_fallback, dial_admits, first_with_token, verdict, Verdict,
    WAIT_EXPIRED,
};
use crate::route::policy;
use crate::route::topology::{RegionIdx, Topology};

/// The request to explain, as `POST /admin/v1/explain` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExplainRequest {
    #[serde(default = "default_method")]
    pub(crate) method: String,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) headers: std::collections::BTreeMap<String, String>,
    /// The client address; 127.0.0.1 when absent.
    #[serde(default)]
    pub(crate) client: Option<String>,
}

fn default_method() -> String {
    "GET".into()
}

/// A description that cannot be explained: a 400 with this reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ExplainError(String);

/// Explains the decision the proxy would make for `req` at `now` (rate-limit
/// clock, see `ratelimit::nanos`) and `now_ms` (wall clock, Unix ms): the
/// same classification, rules, policy, dials, freshness fallback and rate
/// limits, without taking a token.
pub(crate) fn explain(
    topo: &Topology,
    req: &ExplainRequest,
    now: u64,
    now_ms: u64,
) -> Result<Value, ExplainError> {
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| ExplainError(format!("method {:?} is not an HTTP method", req.method)))?;
    if !req.path.starts_with('/') {
        return Err(ExplainError(format!(
            "path must start with /, found {:?}",
            req.path
        )));
    }
    let mut headers = HeaderMap::new();
    for (k, v) in &req.headers {
        let name = HeaderName::try_from(k.as_str())
            .map_err(|_| ExplainError(format!("header name {k:?} is not valid")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| ExplainError(format!("header {k} has a value that is not valid")))?;
        headers.append(name, value);
    }
    let peer: IpAddr = match &req.client {
        None => IpAddr::from([127, 0, 0, 1]),
        Some(c) => c
            .parse()
            .map_err(|_| ExplainError(format!("client {c:?} is not an IP address")))?,
    };
    // The proxy's trust boundary: `client` is the socket peer.
    let fields = crate::route::fields::Fields::new(&headers);
    let origin =
        crate::route::hygiene::origin(&fields, peer, topo.geo.header(), |a| topo.config.trusts(a));
    for name in &origin.drop {
        headers.remove(name);
    }
    let client = origin.client;
    let path = req.path.split('?').next().unwrap_or("/");
    let classified = match classify(topo, &method, path, &headers, client, now_ms) {
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
    let candidates: Vec<Value> = (0..topo.regions.len() as RegionIdx)
        .map(|i| candidate(topo, &classified, owner, i, now))
        .collect();
    let decided = decide_with_fallback(topo, &classified);
    let mut fallback = Value::Null;
    let (order, outcome, pick) = match &decided {
        Ok(d) => {
            if let Some(lag) = d.stale_ms {
                fallback = json!({"kind": "stale", "lag_ms": lag});
            }
            if let Some((region, limit)) = d.wait_for {
                fallback = json!({
                    "kind": "wait",
                    "for": topo.name(region),
                    "up_to_ms": limit.as_millis() as u64,
                    // Where the read goes if the replica is still too stale when the wait ends.
                    "then": d.order.iter().map(|i| topo.name(*i)).collect::<Vec<_>>(),
                });
            }
            let names: Vec<&str> = d.order.iter().map(|i| topo.name(*i)).collect();
            let (outcome, pick) = if d.order.is_empty() {
                (json!({"status": 503, "reason": WAIT_EXPIRED}), None)
            } else {
                // The proxy takes the first region in this order with a token.
                match first_with_token(topo, &d.order, now, false) {
                    Ok(pos) => (
                        json!({"status": if d.wait_for.is_some() { "wait" } else { "forward" }}),
                        Some(topo.name(d.order[pos])),
                    ),
                    Err(r) => (
                        json!({"status": r.status, "reason": r.reason, "retry_after": r.retry_after}),
                        None,
                    ),
                }
            };
            (names, outcome, pick)
        }
        Err(r) => {
            if *r == class_rejects(classified.freshness.bound.as_millis()) {
                fallback = json!({"kind": "reject"});
            }
            (
                Vec::new(),
                json!({"status": r.status, "reason": r.reason, "retry_after": r.retry_after}),
                None,
            )
        }
    };
    Ok(json!({
        "request": {
            "method": method.as_str(),
            "path": req.path,
            "client": client.to_string(),
            "service": classified.service,
            "class": crate::metrics::class_label(classified.class),
            "freshness_ms": u64::try_from(classified.freshness.bound.as_millis()).unwrap_or(u64::MAX),
            "partition": classified.partition,
            "country": classified.place.country.map(|c| c.as_str().to_string()),
            "continent": classified.place.continent.map(|c| c.as_str().to_string()),
            "residency_zone": classified.zone,
            "synthetic": classified.synthetic,
        },
        "policy": topo.config.routing.policy.as_str(),
        "owner": topo.owner_and_epoch(classified.partition).map(|(o, epoch)| json!({"region": topo.name(o), "epoch": epoch})),
        "candidates": candidates,
        "fallback": fallback,
        "order": order,
        "pick": pick,
        "outcome": outcome,
    }))
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
            let order = policy::geo::order_for(topo, &req.place);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::decide::take_rate_tokens;
    use crate::route::topology::for_test;
    use std::sync::atomic::Ordering;

    const CONFIG: &str = "listen: { http: 127.0.0.1:1 }
regions:
  a: { type: full, endpoints: [\"127.0.0.1:2\"], services: [api], compliance: { data_residency: US } }
  b: { type: read-only, endpoints: [\"127.0.0.1:3\"], services: [api], compliance: { data_residency: EU }, rate_limit: { rps: 1, burst: 1 } }
routing:
  policy: geo
  geo: { networks: { \"127.0.0.2/32\": DE }, prefer: { default: [b, a] } }
  residency: { DE: EU }
consistency:
  owners: { default: a }
  freshness:
    default: bounded
    classes:
      bounded: 1s
      stale-ok: { bound: 1s, fallback: stale }
      waiter: { bound: 1s, fallback: wait, wait: 1500ms }
      picky: { bound: 1s, fallback: reject }
";

    fn ask(t: &Topology, freshness: &str, client: &str) -> Value {
        let req = ExplainRequest {
            method: "GET".into(),
            path: "/kv/x".into(),
            headers: [("x-freshness".to_string(), freshness.to_string())].into(),
            client: Some(client.into()),
        };
        explain(t, &req, 1 << 40, 0).expect("explained")
    }

    fn lagging(t: &Topology) {
        t.regions[1].live.lag_ms.store(5000, Ordering::Relaxed);
    }

    #[test]
    fn a_fresh_replica_is_the_pick() {
        let t = for_test(CONFIG);
        let v = ask(&t, "bounded", "127.0.0.1");
        assert_eq!(v["pick"], "b", "{v}");
        assert_eq!(v["outcome"]["status"], "forward");
        assert_eq!(v["fallback"], Value::Null);
    }

    #[test]
    fn each_fallback_is_shown_as_the_proxy_takes_it() {
        let t = for_test(CONFIG);
        lagging(&t);
        let owner = ask(&t, "bounded", "127.0.0.1");
        assert_eq!(
            (owner["pick"].clone(), owner["fallback"].clone()),
            (json!("a"), Value::Null)
        );
        let b = owner["candidates"][1].clone();
        assert_eq!(b["rule"], "replica lag over the freshness bound", "{b}");
        assert_eq!(b["detail"], "lag 5000 ms > bound 1000 ms");
        let stale = ask(&t, "stale-ok", "127.0.0.1");
        assert_eq!(stale["pick"], "b", "{stale}");
        assert_eq!(stale["fallback"], json!({"kind": "stale", "lag_ms": 5000}));
        let wait = ask(&t, "waiter", "127.0.0.1");
        assert_eq!(wait["fallback"]["kind"], "wait", "{wait}");
        assert_eq!(wait["fallback"]["for"], "b");
        assert_eq!(wait["fallback"]["up_to_ms"], 1500);
        assert_eq!(wait["outcome"]["status"], "wait");
        let picky = ask(&t, "picky", "127.0.0.1");
        assert_eq!(picky["fallback"], json!({"kind": "reject"}), "{picky}");
        assert_eq!(picky["outcome"]["status"], 503);
        assert_eq!(picky["pick"], Value::Null);
    }

    #[test]
    fn residency_drops_a_region_by_name() {
        let t = for_test(CONFIG);
        let v = ask(&t, "bounded", "127.0.0.2");
        assert_eq!(v["request"]["residency_zone"], "EU");
        assert_eq!(
            v["candidates"][0]["rule"],
            "outside the client's residency zone"
        );
        assert_eq!(v["pick"], "b");
    }

    #[test]
    fn a_spent_rate_limit_answers_with_the_proxys_own_429() {
        let t = for_test(CONFIG);
        let now = 1u64 << 40;
        // The EU client may only use b; spend b's one token as the proxy would.
        let mut order = crate::route::decide::Order::from_slice(&[1]);
        take_rate_tokens(&t, &mut order, now).expect("the burst's token");
        let proxy = take_rate_tokens(&t, &mut order, now).expect_err("spent");
        let req = ExplainRequest {
            method: "GET".into(),
            path: "/kv/x".into(),
            headers: Default::default(),
            client: Some("127.0.0.2".into()),
        };
        let v = explain(&t, &req, now, 0).expect("explained");
        assert_eq!(v["outcome"]["status"], 429, "{v}");
        assert_eq!(v["outcome"]["reason"], proxy.reason.as_ref());
        assert_eq!(
            v["outcome"]["retry_after"],
            proxy.retry_after.expect("retry after")
        );
        // Asking took nothing: the bucket is as the proxy left it.
        assert_eq!(
            t.regions[1].rate.as_ref().expect("bucket").available(now),
            0
        );
    }

    #[test]
    fn bad_descriptions_are_refused_with_a_reason() {
        let t = for_test(CONFIG);
        let bad = |method: &str, path: &str, client: Option<&str>| {
            let req = ExplainRequest {
                method: method.into(),
                path: path.into(),
                headers: Default::default(),
                client: client.map(String::from),
            };
            explain(&t, &req, 0, 0).expect_err("refused").to_string()
        };
        assert!(bad("G E T", "/", None).contains("not an HTTP method"));
        assert!(bad("GET", "kv", None).contains("must start with /"));
        assert!(bad("GET", "/", Some("nowhere")).contains("not an IP address"));
    }
}
