//! Active health checks: each endpoint is probed at its region's interval;
//! `fall` failures in a row take it down and `rise` successes bring it back;
//! an endpoint is assumed up until its first probe, whose failure counts in
//! full. The router binds its listeners once every endpoint has been probed
//! once (or the longest probe timeout and a second have passed).
//! The health JSON feeds the region's live state (lag, applied position, role,
//! epoch) and spec-drift detection against the Region Artifact.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use serde::Deserialize;
use switchyard_config::{Region, RegionKind};

use crate::control::{region_client, RouterState};
use crate::route::live::{EndpointLive, RegionLive, ReportedRole};
use crate::route::upstream::Transport;

/// A probe's connection is kept for the next probe this long.
const PROBE_IDLE: Duration = Duration::from_secs(60);
/// A health body larger than this is not a health report.
const MAX_HEALTH_BODY: usize = 64 * 1024;

/// The optional fields of a region's health body.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct HealthReport {
    pub(crate) replica_lag_ms: Option<u64>,
    pub(crate) applied_position: Option<u64>,
    pub(crate) role: Option<String>,
    pub(crate) epoch: Option<u64>,
    pub(crate) services: Option<Vec<String>>,
}

/// How a region departs from its artifact, judged from one report.
pub(crate) fn drift(spec: &Region, report: &HealthReport) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(reported) = &report.services {
        for s in &spec.services {
            if !reported.contains(s) {
                out.push(format!("declares service {s} but does not report it"));
            }
        }
    }
    if spec.kind == RegionKind::ReadOnly && report.role.as_deref() == Some("primary") {
        out.push("is read-only but reports role primary".to_string());
    }
    out
}

/// Applies one successful report to the region's live state.
fn absorb(spec: &Region, live: &RegionLive, report: &HealthReport) {
    // A lag nobody reported is unknown, not zero: without it the region is
    // no candidate for bounded reads or promotion until it reports one (the
    // last report ages out by itself).
    if let Some(lag) = report.replica_lag_ms {
        live.lag_ms.store(lag, Ordering::Relaxed);
        live.lag_reported_at
            .store(crate::route::live::now_nanos().max(1), Ordering::Relaxed);
    }
    if let Some(p) = report.applied_position {
        live.applied_position.store(p, Ordering::Relaxed);
    }
    if let Some(e) = report.epoch {
        live.reported_epoch.store(e, Ordering::Relaxed);
    }
    let role = match report.role.as_deref() {
        Some("primary") => ReportedRole::Primary,
        Some("replica") => ReportedRole::Replica,
        _ => ReportedRole::Unknown,
    };
    live.role.store(role as u8, Ordering::Relaxed);
    let found = drift(spec, report);
    if let Ok(mut d) = live.drift.lock() {
        if *d != found {
            if !found.is_empty() {
                tracing::warn!(region = %spec.name, drift = ?found, "region drifted from its artifact");
            }
            *d = found;
        }
    }
}

/// Probes every resolved address of `endpoint`; keeps those that answer as
/// its usable ones. `Ok(report)` from the first that answers 2xx.
async fn probe(
    transport: &Transport,
    endpoint: &EndpointLive,
    path: &str,
    timeout: Duration,
) -> Result<HealthReport, String> {
    let addrs = endpoint.addrs.load_full();
    if addrs.is_empty() {
        return Err("no address resolved".to_string());
    }
    let mut report = None;
    let mut last_error = String::new();
    let mut usable = Vec::with_capacity(addrs.len());
    for addr in addrs.iter() {
        let peer = transport.peer(*addr, &endpoint.spec, timeout, Some(timeout), PROBE_IDLE);
        let answer = tokio::time::timeout(timeout, probe_peer(&peer, endpoint, path)).await;
        match answer.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}"))) {
            Ok(r) => {
                usable.push(*addr);
                report.get_or_insert(r);
            }
            Err(e) => last_error = format!("{addr}: {e}"),
        }
    }
    if !usable.is_empty() && **endpoint.usable.load() != usable {
        endpoint.usable.store(Arc::new(usable));
    }
    report.ok_or(last_error)
}

/// A pingora error as a reason an operator can act on: what failed, and the
/// transport's own words (a TLS alert, `UnknownIssuer`, `connection refused`).
fn reason(e: &pingora::Error) -> String {
    let mut text = e.to_string();
    if let Some(cause) = &e.cause {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

async fn probe_peer(
    peer: &HttpPeer,
    endpoint: &EndpointLive,
    path: &str,
) -> Result<HealthReport, String> {
    let req = RequestHeader::build("GET", path.as_bytes(), None).map_err(|e| reason(&e))?;
    let mut session = region_client::send(peer, &endpoint.spec, req)
        .await
        .map_err(|e| reason(&e))?;
    let status = session
        .response_header()
        .map_or(http::StatusCode::BAD_GATEWAY, |r| r.status);
    let mut body = Vec::new();
    while let Some(chunk) = session.read_response_body().await.map_err(|e| reason(&e))? {
        if body.len() + chunk.len() > MAX_HEALTH_BODY {
            return Err(format!("health body over {MAX_HEALTH_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    region_client::release(session, peer, PROBE_IDLE).await;
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    Ok(serde_json::from_slice(&body).unwrap_or_default())
}

/// Probes `endpoint` until it is retired.
pub(crate) async fn check_endpoint(
    state: Arc<RouterState>,
    region: String,
    endpoint: Arc<EndpointLive>,
) {
    let (mut ok_run, mut fail_run) = (0u32, 0u32);
    // The first probe waits, up to its timeout, for a name to resolve (the
    // DNS task starts beside this one): a probe before that finds no
    // address and tells nothing, and the next is an interval away.
    if let Some(entry) = state.topology.load().region(&region) {
        let resolve_by = Instant::now() + entry.spec.health.timeout;
        while endpoint.addrs.load().is_empty() && Instant::now() < resolve_by {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    loop {
        if endpoint.is_retired() {
            return;
        }
        let topo = state.topology.load_full();
        let Some(entry) = topo.region(&region) else {
            return;
        };
        let h = entry.spec.health.clone();
        let alpha = topo.config.routing.latency.ewma_alpha;
        let started = Instant::now();
        let reachable = !endpoint.addrs.load().is_empty();
        let result = probe(&entry.transport, &endpoint, &h.path, h.timeout).await;
        let rtt = started.elapsed().as_secs_f64();
        match &result {
            Ok(report) => {
                ok_run += 1;
                fail_run = 0;
                endpoint.last_failure.store(None);
                entry.live.probe_rtt.observe(rtt, alpha);
                absorb(&entry.spec, &entry.live, report);
                if ok_run >= h.rise && !endpoint.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(region, endpoint = %endpoint.spec, "endpoint up");
                }
            }
            Err(why) => {
                fail_run += 1;
                ok_run = 0;
                endpoint.last_failure.store(Some(Arc::new(why.clone())));
                // A slow-not-dead region must look slow: a timeout counts in full.
                entry
                    .live
                    .probe_rtt
                    .observe(rtt.max(h.timeout.as_secs_f64()), alpha);
                // Until its first probe an endpoint is only assumed up: the
                // first answer counts in full. A probe with no address yet
                // (its name not resolved) is no answer: such an endpoint is
                // not up anyway, and it must not then wait `rise` probes.
                let first = reachable && !endpoint.probed.load(Ordering::Relaxed);
                if (fail_run >= h.fall || first) && endpoint.healthy.swap(false, Ordering::Relaxed)
                {
                    tracing::warn!(region, endpoint = %endpoint.spec, reason = %why, "endpoint down");
                }
            }
        }
        if let Some(score) = crate::route::policy::latency::score(&entry.live) {
            entry.live.latency_score.set(score);
            topo.refresh_latency_order();
        }
        let healthy = entry.endpoints.any_up();
        if entry.live.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            topo.refresh_panic();
        }
        entry.live.publish_gauges(&entry.spec.name);
        // Said after the live state took the probe in, so whoever waits for
        // it (the first round at start) sees what the probe found.
        if reachable {
            endpoint.probed.store(true, Ordering::Release);
        }
        tokio::time::sleep(h.interval.saturating_sub(started.elapsed())).await;
    }
}

/// Waits until every endpoint has been probed once, or for the longest
/// probe timeout and a second for names to resolve; returns the endpoints
/// not heard from by then. A router that serves before hearing from its
/// regions knows no replica's lag yet, so it turns away the bounded reads
/// it could serve, and it sends traffic to regions that may be down.
pub(crate) async fn first_round(state: &RouterState) -> Vec<String> {
    let topo = state.topology.load_full();
    let longest = topo
        .regions
        .iter()
        .map(|r| r.spec.health.timeout)
        .max()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + longest + Duration::from_secs(1);
    loop {
        let unheard: Vec<String> = topo
            .regions
            .iter()
            .flat_map(|r| {
                r.endpoints
                    .endpoints
                    .iter()
                    .filter(|e| !e.probed.load(Ordering::Acquire))
                    .map(move |e| format!("{} {}", r.spec.name, e.spec))
            })
            .collect();
        if unheard.is_empty() || tokio::time::Instant::now() >= deadline {
            return unheard;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Starts health and DNS tasks for every endpoint of `state`'s topology that
/// has none yet (all at start, the new ones after a reload).
pub(crate) fn start_tasks(
    state: &Arc<RouterState>,
    resolver: &Arc<hickory_resolver::TokioResolver>,
) {
    // Built (system roots read) before the first probe is due, not by it.
    region_client::connector();
    let topo = state.topology.load_full();
    for r in &topo.regions {
        for e in &r.endpoints.endpoints {
            if e.tasks_started.swap(true, Ordering::Relaxed) {
                continue;
            }
            state.control.spawn(crate::control::dns::keep_resolved(
                resolver.clone(),
                e.clone(),
            ));
            state.control.spawn(check_endpoint(
                state.clone(),
                r.spec.name.to_string(),
                e.clone(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_missing_services_or_a_primary_read_only() {
        let cfg = switchyard_config::parse_str(
            "listen: { http: 127.0.0.1:1 }
regions:
  ro: { type: read-only, endpoints: [\"127.0.0.1:2\"], services: [api, search] }
routing: { policy: weighted }
",
            std::path::Path::new("x.yaml"),
        )
        .expect("valid");
        let spec = &cfg.regions[0];
        let ok = HealthReport {
            services: Some(vec!["api".into(), "search".into()]),
            role: Some("replica".into()),
            ..Default::default()
        };
        assert!(drift(spec, &ok).is_empty());
        let bad = HealthReport {
            services: Some(vec!["api".into()]),
            role: Some("primary".into()),
            ..Default::default()
        };
        assert_eq!(drift(spec, &bad).len(), 2);
        assert!(drift(spec, &HealthReport::default()).is_empty());
    }
}
