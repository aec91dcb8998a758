//! Shadow reads: while a ramp holds its region at the synthetic stage, a
//! share of real reads is mirrored to that region after the client has its
//! answer. The shadow's status class (and, when configured, a hash of its
//! body) is compared with the primary answer; mismatches are counted and the
//! shadow response is discarded. The client never waits for the shadow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use serde_json::{json, Value};
use switchyard_config::{Percent, RegionName};
use xxhash_rust::xxh3::Xxh3;

use crate::topology::Topology;

/// The header a mirrored request carries, so the region can tell it apart.
pub const SHADOW_HEADER: &str = "x-switchyard-shadow";
/// Upper bound for one shadow request.
const SHADOW_TIMEOUT: Duration = Duration::from_secs(10);

/// A region that takes shadow reads now, with its counters.
#[derive(Debug)]
pub struct ShadowTarget {
    pub ramp: String,
    pub region: RegionName,
    pub percent: Percent,
    pub compare_body: bool,
    pub sent: AtomicU64,
    pub matched: AtomicU64,
    pub mismatched: AtomicU64,
    pub errors: AtomicU64,
}

impl ShadowTarget {
    pub fn new(ramp: &str, region: RegionName, percent: Percent, compare_body: bool) -> Self {
        ShadowTarget {
            ramp: ramp.to_string(),
            region,
            percent,
            compare_body,
            sent: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "region": self.region.as_str(),
            "percent": self.percent.to_json_number(),
            "sent": self.sent.load(Ordering::Relaxed),
            "matched": self.matched.load(Ordering::Relaxed),
            "mismatched": self.mismatched.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
        })
    }
}

/// A read picked for mirroring: what to send, and the primary's answer as it arrives.
pub struct ShadowPlan {
    pub target: Arc<ShadowTarget>,
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub primary_status: u16,
    pub primary_body: Option<Xxh3>,
}

impl ShadowPlan {
    /// Folds a chunk of the primary's body into its hash.
    pub fn primary_chunk(&mut self, chunk: &[u8]) {
        if let Some(h) = &mut self.primary_body {
            h.update(chunk);
        }
    }
}

/// Picks this read for mirroring, with the targets' probabilities; `None` mostly.
pub fn sample(
    targets: &[Arc<ShadowTarget>],
    first_choice: &str,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
) -> Option<Box<ShadowPlan>> {
    let target = targets.iter().find(|t| {
        t.region.as_str() != first_choice
            && rand::random::<u32>() % 1000 < u32::from(t.percent.tenths())
    })?;
    let mut headers = headers.clone();
    headers.insert(SHADOW_HEADER, http::HeaderValue::from_static("1"));
    Some(Box::new(ShadowPlan {
        target: target.clone(),
        method: method.clone(),
        path_and_query: path_and_query.to_string(),
        headers,
        primary_status: 0,
        primary_body: target.compare_body.then(Xxh3::new),
    }))
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(SHADOW_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// Sends the mirrored read and compares; runs on the control runtime.
pub async fn mirror(topo: Arc<Topology>, plan: Box<ShadowPlan>) {
    let t = &plan.target;
    let Some(region) = topo.region(t.region.as_str()) else {
        return;
    };
    let Some(addr) = region.endpoints.pick(None) else {
        t.errors.fetch_add(1, Ordering::Relaxed);
        crate::metrics::shadow_read(&t.region, "error");
        return;
    };
    t.sent.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let mut headers = plan.headers.clone();
    headers.remove(http::header::HOST);
    let sent = client()
        .request(
            plan.method.clone(),
            format!("http://{addr}{}", plan.path_and_query),
        )
        .headers(headers)
        .send()
        .await;
    let result = match sent {
        Err(_) => {
            region.live.stats.no_answer();
            "error"
        }
        Ok(resp) => {
            let status = resp.status().as_u16();
            region
                .live
                .stats
                .answer(status < 500, started.elapsed().as_secs_f64());
            let body = resp.bytes().await;
            if status / 100 != plan.primary_status / 100 {
                "status_mismatch"
            } else {
                match (&plan.primary_body, body) {
                    (Some(primary), Ok(b)) => {
                        if xxhash_rust::xxh3::xxh3_64(&b) == primary.digest() {
                            "match"
                        } else {
                            "body_mismatch"
                        }
                    }
                    (Some(_), Err(_)) => "error",
                    (None, _) => "match",
                }
            }
        }
    };
    match result {
        "match" => t.matched.fetch_add(1, Ordering::Relaxed),
        "error" => t.errors.fetch_add(1, Ordering::Relaxed),
        _ => t.mismatched.fetch_add(1, Ordering::Relaxed),
    };
    crate::metrics::shadow_read(&t.region, result);
}
