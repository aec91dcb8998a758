//! Live per-region and per-endpoint state that health checks, DNS and the
//! proxy update at run time. Plain atomics: the hot path reads them without
//! locks, and they outlive config reloads for regions and endpoints that stay.

use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use switchyard_config::{Endpoint, Percent};

/// An `f64` stored in an `AtomicU64`; `NaN` means "no sample yet".
#[derive(Debug)]
pub(crate) struct AtomicF64(AtomicU64);

impl AtomicF64 {
    pub(crate) fn empty() -> Self {
        AtomicF64(AtomicU64::new(f64::NAN.to_bits()))
    }
    pub(crate) fn get(&self) -> Option<f64> {
        let v = f64::from_bits(self.0.load(Ordering::Relaxed));
        (!v.is_nan()).then_some(v)
    }
    pub(crate) fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// Folds a sample into an exponentially weighted moving average. Racing
    /// writers may drop a sample; an average can afford that.
    pub(crate) fn observe(&self, sample: f64, alpha: f64) {
        let next = match self.get() {
            None => sample,
            Some(prev) => prev + alpha * (sample - prev),
        };
        self.set(next);
    }
}

/// The role a region's health JSON reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ReportedRole {
    Unknown = 0,
    Primary = 1,
    Replica = 2,
}

impl ReportedRole {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReportedRole::Unknown => "unknown",
            ReportedRole::Primary => "primary",
            ReportedRole::Replica => "replica",
        }
    }
}

/// Monotonic nanoseconds since the process's clock epoch: what the region
/// state's timestamps count in, so one clock read serves every region.
pub(crate) fn now_nanos() -> u64 {
    crate::route::ratelimit::nanos(Instant::now())
}

/// What the router knows of one region right now.
#[derive(Debug)]
pub(crate) struct RegionLive {
    /// At least one endpoint is up.
    pub(crate) healthy: AtomicBool,
    pub(crate) lag_ms: AtomicU64,
    /// When `lag_ms` was last reported, [`now_nanos`] (0: never).
    pub(crate) lag_reported_at: AtomicU64,
    pub(crate) applied_position: AtomicU64,
    pub(crate) reported_epoch: AtomicU64,
    pub(crate) role: AtomicU8,
    /// The share of traffic the region takes, in tenths of a percent,
    /// starting from its config.
    pub(crate) dial: AtomicU16,
    /// Taken out of rotation for reads by brownout detection.
    pub(crate) ejected: AtomicBool,
    /// Why, and until when ([`now_nanos`]).
    pub(crate) ejection: Mutex<Option<Ejection>>,
    /// How many times brownout detection ejected it (ejection time grows with it).
    pub(crate) ejections: AtomicU32,
    /// An operator drained it: no new requests, in-flight ones finish.
    pub(crate) draining: AtomicBool,
    /// Requests being served by the region now.
    pub(crate) inflight: AtomicUsize,
    /// The most requests it may have in flight (`usize::MAX`: no limit);
    /// fixed, or moved by adaptive concurrency.
    pub(crate) limit: AtomicUsize,
    /// The 95th percentile of its answers in the last second with any,
    /// microseconds (0 before any): when `hedge.after: p95` hedges.
    pub(crate) recent_p95_us: AtomicU64,
    /// Adaptive concurrency's readings: the best mean latency seen and the
    /// last interval's, microseconds.
    pub(crate) adaptive_min_rtt_us: AtomicU64,
    pub(crate) adaptive_sample_us: AtomicU64,
    /// Reads sent on to the next region because this one was at its limit.
    pub(crate) spilled: AtomicU64,
    /// Requests refused (503) because every region they could use was at its limit.
    pub(crate) limited: AtomicU64,
    /// Writes waiting for a slot at this region (their owner).
    pub(crate) queued: AtomicUsize,
    /// Woken when a request in flight ends, for writes waiting for a slot.
    pub(crate) slot_freed: tokio::sync::Notify,
    /// WebSocket connections open through the router to the region.
    pub(crate) websockets: AtomicUsize,
    /// Answers, errors and latency, for ramps and outlier detection.
    pub(crate) stats: crate::route::stats::RegionStats,
    /// Requests answered through the region, by class, for the console's charts.
    pub(crate) served: crate::route::stats::ClassCounts,
    /// Why the region departs from its Region Artifact; empty when it does not.
    pub(crate) drift: Mutex<Vec<String>>,
    /// Moving average of health probe round trips, in seconds.
    pub(crate) probe_rtt: AtomicF64,
    /// Moving average of upstream response-header times, in seconds.
    pub(crate) response_time: AtomicF64,
    /// The latency policy's score, refreshed after each probe.
    pub(crate) latency_score: AtomicF64,
    /// When `response_time` last got a sample (see [`now_nanos`]).
    pub(crate) response_sampled_at: AtomicU64,
}

impl RegionLive {
    pub(crate) fn new(dial: Percent) -> Self {
        RegionLive {
            healthy: AtomicBool::new(true),
            lag_ms: AtomicU64::new(0),
            lag_reported_at: AtomicU64::new(0),
            applied_position: AtomicU64::new(0),
            reported_epoch: AtomicU64::new(0),
            role: AtomicU8::new(ReportedRole::Unknown as u8),
            dial: AtomicU16::new(dial.tenths()),
            ejected: AtomicBool::new(false),
            ejection: Mutex::new(None),
            ejections: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            limit: AtomicUsize::new(usize::MAX),
            recent_p95_us: AtomicU64::new(0),
            adaptive_min_rtt_us: AtomicU64::new(0),
            adaptive_sample_us: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            slot_freed: tokio::sync::Notify::new(),
            websockets: AtomicUsize::new(0),
            stats: crate::route::stats::RegionStats::default(),
            served: crate::route::stats::ClassCounts::default(),
            drift: Mutex::new(Vec::new()),
            probe_rtt: AtomicF64::empty(),
            response_time: AtomicF64::empty(),
            latency_score: AtomicF64::empty(),
            response_sampled_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    pub(crate) fn dial(&self) -> Percent {
        Percent::from_tenths(self.dial.load(Ordering::Relaxed)).unwrap_or(Percent::FULL)
    }

    pub(crate) fn set_dial(&self, p: Percent) {
        self.dial.store(p.tenths(), Ordering::Relaxed);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn ejection(&self) -> Option<Ejection> {
        self.ejection.lock().ok().and_then(|e| e.clone())
    }

    /// The replica lag to judge a read by: the last report, or `None` when
    /// that report is older than `bound` (unknown, hence too stale).
    pub(crate) fn lag_within(&self, bound: std::time::Duration, now: u64) -> Option<u64> {
        let at = self.lag_reported_at.load(Ordering::Relaxed);
        let bound = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        if at == 0 || now.saturating_sub(at) > bound {
            return None;
        }
        Some(self.lag_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn drift(&self) -> Vec<String> {
        self.drift.lock().map(|d| d.clone()).unwrap_or_default()
    }

    pub(crate) fn is_drifted(&self) -> bool {
        self.drift.lock().map(|d| !d.is_empty()).unwrap_or(false)
    }

    pub(crate) fn role(&self) -> ReportedRole {
        match self.role.load(Ordering::Relaxed) {
            1 => ReportedRole::Primary,
            2 => ReportedRole::Replica,
            _ => ReportedRole::Unknown,
        }
    }

    /// Sets the region's gauges to what this state shows.
    pub(crate) fn publish_gauges(&self, name: &switchyard_config::RegionName) {
        crate::metrics::region_gauges(
            name,
            crate::metrics::RegionGauges {
                healthy: self.is_healthy(),
                lag_ms: self.lag_ms.load(Ordering::Relaxed),
                dial_percent: self.dial().as_f64(),
                ejected: self.is_ejected(),
                draining: self.is_draining(),
                drifted: self.is_drifted(),
                probe_rtt: self.probe_rtt.get(),
                websockets: self.websockets.load(Ordering::Relaxed),
            },
        );
    }

    /// A response that took `secs`, answered at `at` (the caller's clock
    /// reading, which timed it: one reading per response, not two).
    pub(crate) fn record_response_time(&self, secs: f64, alpha: f64, at: Instant) {
        self.response_time.observe(secs, alpha);
        self.response_sampled_at
            .store(crate::route::ratelimit::nanos(at), Ordering::Relaxed);
    }

    /// Seconds since the last response-time sample.
    pub(crate) fn response_sample_age(&self) -> f64 {
        let at = self.response_sampled_at.load(Ordering::Relaxed);
        let now = now_nanos();
        now.saturating_sub(at) as f64 / 1e9
    }
}

/// Why and for how long brownout detection took a region out.
#[derive(Debug, Clone)]
pub(crate) struct Ejection {
    pub(crate) reason: String,
    /// See [`now_nanos`].
    pub(crate) until: u64,
    pub(crate) duration: std::time::Duration,
}

/// Counts something on one region while it lives: a request in flight, an
/// open WebSocket.
pub(crate) struct RegionCount {
    live: Arc<RegionLive>,
    counter: fn(&RegionLive) -> &AtomicUsize,
}

impl RegionCount {
    fn new(live: &Arc<RegionLive>, counter: fn(&RegionLive) -> &AtomicUsize) -> Self {
        counter(live).fetch_add(1, Ordering::Relaxed);
        RegionCount {
            live: live.clone(),
            counter,
        }
    }

    /// A request in flight (`inflight`), if the region's limit has room.
    pub(crate) fn inflight(live: &Arc<RegionLive>) -> Option<Self> {
        let limit = live.limit.load(Ordering::Relaxed);
        live.inflight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(RegionCount {
            live: live.clone(),
            counter: |l| &l.inflight,
        })
    }

    /// A WebSocket the region took (`websockets`).
    pub(crate) fn websocket(live: &Arc<RegionLive>) -> Self {
        Self::new(live, |l| &l.websockets)
    }
}

impl Drop for RegionCount {
    fn drop(&mut self) {
        (self.counter)(&self.live).fetch_sub(1, Ordering::AcqRel);
        if self.live.queued.load(Ordering::Relaxed) > 0 {
            self.live.slot_freed.notify_one();
        }
    }
}

/// One endpoint of a region: its resolved addresses and its health.
#[derive(Debug)]
pub(crate) struct EndpointLive {
    pub(crate) spec: Endpoint,
    /// Addresses from the last resolution; a literal IP resolves to itself.
    pub(crate) addrs: ArcSwap<Vec<SocketAddr>>,
    /// The resolved addresses that answered the last probe (all of them until
    /// probed): a name may resolve to an address the region does not listen on.
    pub(crate) usable: ArcSwap<Vec<SocketAddr>>,
    pub(crate) healthy: AtomicBool,
    /// Set when a reload drops this endpoint; its tasks then stop.
    pub(crate) retired: AtomicBool,
    /// Set once its health and DNS tasks run, so a reload starts them once.
    pub(crate) tasks_started: AtomicBool,
    /// Set once a probe reached one of its addresses (answered or failed):
    /// until then its health, lag and role are only assumed.
    pub(crate) probed: AtomicBool,
    /// Why its last probe failed (a refused connection, a certificate that
    /// did not verify, a status); cleared by a probe that succeeds.
    pub(crate) last_failure: arc_swap::ArcSwapOption<String>,
    /// Proxied requests it is answering now (least outstanding picks).
    pub(crate) inflight: AtomicUsize,
}

/// Counts a proxied request on the endpoint answering it.
pub(crate) struct EndpointCount(Arc<EndpointLive>);

impl EndpointCount {
    pub(crate) fn new(e: &Arc<EndpointLive>) -> Self {
        e.inflight.fetch_add(1, Ordering::Relaxed);
        EndpointCount(e.clone())
    }
}

impl Drop for EndpointCount {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EndpointLive {
    pub(crate) fn new(spec: Endpoint) -> Self {
        let literal: Vec<SocketAddr> = spec
            .host
            .parse::<std::net::IpAddr>()
            .map(|ip| vec![SocketAddr::new(ip, spec.port)])
            .unwrap_or_default();
        EndpointLive {
            spec,
            usable: ArcSwap::from_pointee(literal.clone()),
            addrs: ArcSwap::from_pointee(literal),
            healthy: AtomicBool::new(true),
            retired: AtomicBool::new(false),
            tasks_started: AtomicBool::new(false),
            probed: AtomicBool::new(false),
            last_failure: arc_swap::ArcSwapOption::empty(),
            inflight: AtomicUsize::new(0),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.usable.load().is_empty()
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}

/// A region's endpoints with a round-robin cursor.
#[derive(Debug)]
pub(crate) struct EndpointSet {
    pub(crate) endpoints: Vec<Arc<EndpointLive>>,
    cursor: AtomicUsize,
}

impl EndpointSet {
    pub(crate) fn new(endpoints: Vec<Arc<EndpointLive>>) -> Self {
        EndpointSet {
            endpoints,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next address of an endpoint that is up, round robin; `skip` is an
    /// address that just failed, avoided when another is up.
    #[cfg(test)]
    pub(crate) fn pick(&self, skip: Option<SocketAddr>) -> Option<SocketAddr> {
        self.pick_endpoint(skip).map(|(addr, _)| addr)
    }

    /// [`Self::pick`], with the endpoint the address belongs to.
    pub(crate) fn pick_endpoint(
        &self,
        skip: Option<SocketAddr>,
    ) -> Option<(SocketAddr, &EndpointLive)> {
        self.pick_least_loaded(skip, false)
            .map(|(addr, e)| (addr, &**e))
    }

    /// For a proxied request: of the endpoints that are up, the one with
    /// the fewest requests in flight (round robin among equals); `skip` is
    /// an address that just failed, avoided when another is up. With
    /// `any` (panic mode), an endpoint that is down when none is up.
    pub(crate) fn pick_least_loaded(
        &self,
        skip: Option<SocketAddr>,
        any: bool,
    ) -> Option<(SocketAddr, &Arc<EndpointLive>)> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, SocketAddr, &Arc<EndpointLive>)> = None;
        let mut skipped = None;
        for i in 0..n {
            let e = &self.endpoints[(start + i) % n];
            if !e.is_up() {
                continue;
            }
            let addrs = e.usable.load();
            let addr = addrs[start % addrs.len()];
            if Some(addr) == skip {
                skipped.get_or_insert((addr, e));
                continue;
            }
            let load = e.inflight.load(Ordering::Relaxed);
            if best.as_ref().is_none_or(|(b, _, _)| load < *b) {
                best = Some((load, addr, e));
            }
        }
        if let Some((_, addr, e)) = best {
            return Some((addr, e));
        }
        if skipped.is_some() || !any {
            return skipped;
        }
        (0..n).find_map(|i| {
            let e = &self.endpoints[(start + i) % n];
            let addrs = e.addrs.load();
            (!addrs.is_empty()).then(|| (addrs[start % addrs.len()], e))
        })
    }

    pub(crate) fn any_up(&self) -> bool {
        self.endpoints.iter().any(|e| e.is_up())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> Arc<EndpointLive> {
        Arc::new(EndpointLive::new(Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls: false,
        }))
    }

    #[test]
    fn round_robin_skips_down_endpoints() {
        let set = EndpointSet::new(vec![ep(1), ep(2), ep(3)]);
        set.endpoints[1].healthy.store(false, Ordering::Relaxed);
        let picks: Vec<u16> = (0..6)
            .filter_map(|_| set.pick(None))
            .map(|a| a.port())
            .collect();
        assert!(!picks.contains(&2));
        assert!(picks.contains(&1) && picks.contains(&3));
    }

    #[test]
    fn skip_is_a_last_resort() {
        let set = EndpointSet::new(vec![ep(1), ep(2)]);
        let one: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        for _ in 0..4 {
            assert_eq!(set.pick(Some(one)).map(|a| a.port()), Some(2));
        }
        set.endpoints[1].healthy.store(false, Ordering::Relaxed);
        assert_eq!(set.pick(Some(one)), Some(one));
    }

    #[test]
    fn unresolved_names_are_not_up() {
        let e = EndpointLive::new(Endpoint {
            host: "region.example".into(),
            port: 80,
            tls: false,
        });
        assert!(!e.is_up());
    }

    #[test]
    fn ewma_folds_samples() {
        let a = AtomicF64::empty();
        assert_eq!(a.get(), None);
        a.observe(10.0, 0.5);
        a.observe(20.0, 0.5);
        assert_eq!(a.get(), Some(15.0));
    }
}
