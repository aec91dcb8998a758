//! Shadow reads, the deciding half: while a ramp holds its region at the
//! synthetic stage, which real reads are mirrored to it, and the counters
//! of how the mirrored answers compared (`control::shadow` sends them).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::{HeaderMap, Method};
use serde_json::{json, Value};
#[cfg(test)]
use switchyard_config::Percent;
use switchyard_config::{RegionName, Shadow};
use xxhash_rust::xxh3::Xxh3;

/// The header a mirrored request carries, so the region can tell it apart.
pub(crate) const SHADOW_HEADER: &str = "x-switchyard-shadow";

/// A region that takes shadow reads now, with its counters.
#[derive(Debug)]
pub(crate) struct ShadowTarget {
    pub(crate) region: RegionName,
    pub(crate) spec: Shadow,
    /// Headers never copied: `Authorization`, `Cookie` and the configured ones.
    strip: Vec<http::HeaderName>,
    pub(crate) sent: AtomicU64,
    pub(crate) matched: AtomicU64,
    pub(crate) mismatched: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Reads not mirrored because `max_inflight` shadows were in flight.
    pub(crate) skipped: AtomicU64,
    inflight: AtomicUsize,
}

impl ShadowTarget {
    pub(crate) fn new(region: RegionName, spec: Shadow) -> Self {
        let strip = [http::header::AUTHORIZATION, http::header::COOKIE]
            .into_iter()
            .chain(
                spec.strip_headers
                    .iter()
                    .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
            )
            .collect();
        ShadowTarget {
            region,
            spec,
            strip,
            sent: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "region": self.region.as_str(),
            "percent": self.spec.percent.to_json_number(),
            "sent": self.sent.load(Ordering::Relaxed),
            "matched": self.matched.load(Ordering::Relaxed),
            "mismatched": self.mismatched.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "skipped": self.skipped.load(Ordering::Relaxed),
            "inflight": self.inflight.load(Ordering::Relaxed),
            "max_inflight": self.spec.max_inflight,
        })
    }

    /// Takes a place among the shadows in flight, if there is one.
    fn take_slot(self: &Arc<Self>) -> Option<ShadowSlot> {
        let max = self.spec.max_inflight;
        self.inflight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ShadowSlot(self.clone()))
    }
}

/// A shadow in flight; the place is given back when it is dropped.
#[derive(Debug)]
pub(crate) struct ShadowSlot(Arc<ShadowTarget>);

impl Drop for ShadowSlot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
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
    /// Holds its place among the target's shadows in flight.
    _slot: ShadowSlot,
}

impl ShadowPlan {
    /// Folds a chunk of the primary's body into its hash.
    pub(crate) fn primary_chunk(&mut self, chunk: &[u8]) {
        if let Some(h) = &mut self.primary_body {
            h.update(chunk);
        }
    }
}

/// Picks this read for mirroring, with the targets' probabilities; `None`
/// mostly. Only a target that `may_serve` (the read's own candidate rules:
/// service, residency, health, freshness) is mirrored to, and only while it
/// has fewer than `max_inflight` shadows in flight (else the read is counted
/// as skipped). The copy carries no credentials.
pub(crate) fn sample(
    targets: &[Arc<ShadowTarget>],
    first_choice: &str,
    may_serve: impl Fn(&RegionName) -> bool,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
) -> Option<Box<ShadowPlan>> {
    let target = targets.iter().find(|t| {
        t.region.as_str() != first_choice
            && rand::random::<u32>() % 1000 < u32::from(t.spec.percent.tenths())
            && may_serve(&t.region)
    })?;
    let Some(slot) = target.take_slot() else {
        target.skipped.fetch_add(1, Ordering::Relaxed);
        crate::metrics::shadow_read(&target.region, "skipped");
        return None;
    };
    let mut headers = headers.clone();
    for name in &target.strip {
        headers.remove(name);
    }
    headers.insert(SHADOW_HEADER, http::HeaderValue::from_static("1"));
    Some(Box::new(ShadowPlan {
        target: target.clone(),
        method: method.clone(),
        path_and_query: path_and_query.to_string(),
        headers,
        primary_status: 0,
        primary_body: target.spec.compare_body.then(Xxh3::new),
        _slot: slot,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tenths: u16, max_inflight: usize) -> Shadow {
        Shadow {
            percent: Percent::from_tenths(tenths).expect("percent"),
            compare_body: true,
            strip_headers: vec!["x-api-key".into()],
            max_inflight,
        }
    }

    fn target(region: &str, tenths: u16) -> Arc<ShadowTarget> {
        Arc::new(ShadowTarget::new(
            RegionName(Arc::from(region)),
            spec(tenths, 1000),
        ))
    }

    fn plan(targets: &[Arc<ShadowTarget>], first: &str) -> Option<Box<ShadowPlan>> {
        let mut h = HeaderMap::new();
        h.insert("accept", http::HeaderValue::from_static("*/*"));
        h.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer secret"),
        );
        h.insert("cookie", http::HeaderValue::from_static("session=secret"));
        h.insert("x-api-key", http::HeaderValue::from_static("secret"));
        sample(targets, first, |_| true, &Method::GET, "/kv/a?x=1", &h)
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
    fn the_copy_carries_no_credentials() {
        let p = plan(&[target("b", 1000)], "a").expect("sampled");
        for secret in ["authorization", "cookie", "x-api-key"] {
            assert!(!p.headers.contains_key(secret), "{secret} copied");
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
    fn a_target_the_read_may_not_use_is_never_mirrored_to() {
        let targets = [target("b", 1000)];
        let h = HeaderMap::new();
        let outside = sample(&targets, "a", |r| r.as_str() != "b", &Method::GET, "/", &h);
        assert!(outside.is_none());
    }

    #[test]
    fn at_most_max_inflight_shadows_at_once() {
        let t = Arc::new(ShadowTarget::new(RegionName(Arc::from("b")), spec(1000, 2)));
        let targets = [t.clone()];
        let first = plan(&targets, "a").expect("1");
        let second = plan(&targets, "a").expect("2");
        assert!(plan(&targets, "a").is_none(), "a third waits for a place");
        assert_eq!(t.skipped.load(Ordering::Relaxed), 1);
        drop(first);
        assert!(plan(&targets, "a").is_some(), "a place was given back");
        drop(second);
        assert_eq!(t.inflight.load(Ordering::Relaxed), 0);
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
