//! Shadow reads, the deciding half: while a ramp holds its region at the
//! synthetic stage, which real reads are mirrored to it, and the counters
//! of how the mirrored answers compared (`control::shadow` sends them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{HeaderMap, Method};
use serde_json::{json, Value};
use switchyard_config::{Percent, RegionName};
use xxhash_rust::xxh3::Xxh3;

/// The header a mirrored request carries, so the region can tell it apart.
pub(crate) const SHADOW_HEADER: &str = "x-switchyard-shadow";

/// A region that takes shadow reads now, with its counters.
#[derive(Debug)]
pub(crate) struct ShadowTarget {
    pub(crate) region: RegionName,
    pub(crate) percent: Percent,
    pub(crate) compare_body: bool,
    pub(crate) sent: AtomicU64,
    pub(crate) matched: AtomicU64,
    pub(crate) mismatched: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl ShadowTarget {
    pub(crate) fn new(region: RegionName, percent: Percent, compare_body: bool) -> Self {
        ShadowTarget {
            region,
            percent,
            compare_body,
            sent: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
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
pub(crate) struct ShadowPlan {
    pub(crate) target: Arc<ShadowTarget>,
    pub(crate) method: Method,
    pub(crate) path_and_query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) primary_status: u16,
    pub(crate) primary_body: Option<Xxh3>,
}

impl ShadowPlan {
    /// Folds a chunk of the primary's body into its hash.
    pub(crate) fn primary_chunk(&mut self, chunk: &[u8]) {
        if let Some(h) = &mut self.primary_body {
            h.update(chunk);
        }
    }
}

/// Picks this read for mirroring, with the targets' probabilities; `None` mostly.
pub(crate) fn sample(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(region: &str, tenths: u16) -> Arc<ShadowTarget> {
        Arc::new(ShadowTarget::new(
            RegionName(Arc::from(region)),
            Percent::from_tenths(tenths).expect("percent"),
            true,
        ))
    }

    fn plan(targets: &[Arc<ShadowTarget>], first: &str) -> Option<Box<ShadowPlan>> {
        let mut h = HeaderMap::new();
        h.insert("accept", http::HeaderValue::from_static("*/*"));
        sample(targets, first, &Method::GET, "/kv/a?x=1", &h)
    }

    #[test]
    fn every_read_at_100_percent_and_none_at_0() {
        let all = [target("b", 1000)];
        let none = [target("b", 0)];
        for _ in 0..200 {
            let p = plan(&all, "a").expect("sampled");
            assert_eq!(p.target.region.as_str(), "b");
            assert_eq!(p.path_and_query, "/kv/a?x=1");
            assert_eq!(p.headers[SHADOW_HEADER], "1");
            assert_eq!(p.headers["accept"], "*/*");
            assert!(p.primary_body.is_some(), "bodies are compared");
            assert!(plan(&none, "a").is_none());
        }
    }

    #[test]
    fn a_read_already_going_to_the_target_is_not_mirrored_to_it() {
        let targets = [target("b", 1000), target("c", 1000)];
        for _ in 0..50 {
            let p = plan(&targets, "b").expect("sampled");
            assert_eq!(p.target.region.as_str(), "c");
        }
    }

    #[test]
    fn a_share_of_reads_is_sampled() {
        let quarter = [target("b", 250)];
        let n = (0..20_000)
            .filter(|_| plan(&quarter, "a").is_some())
            .count();
        assert!((4_400..5_600).contains(&n), "{n} of 20000 at 25%");
    }
}
