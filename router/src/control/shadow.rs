//! Shadow reads, the sending half: a read picked by `route::shadow` is sent
//! to the ramping region after the client has its whole answer, and the
//! shadow's status class (and, when configured, a hash of its body) is
//! compared with the primary answer; mismatches are counted and the shadow
//! response is discarded. The client never waits for the shadow.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::control::region_client;
use crate::route::shadow::ShadowPlan;
use crate::route::topology::Topology;

/// Upper bound for one shadow request.
const SHADOW_TIMEOUT: Duration = Duration::from_secs(10);
/// A shadow's connection is kept for the next one this long.
const SHADOW_IDLE: Duration = Duration::from_secs(60);

/// Sends the mirrored read and compares; runs on the control runtime.
pub(crate) async fn mirror(topo: Arc<Topology>, plan: Box<ShadowPlan>) {
    let t = &plan.target;
    let Some(region) = topo.region(t.region.as_str()) else {
        return;
    };
    let Some((addr, endpoint)) = region.endpoints.pick_endpoint(None) else {
        t.errors.fetch_add(1, Ordering::Relaxed);
        crate::metrics::shadow_read(&t.region, "error");
        return;
    };
    t.sent.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    // Over the region's own transport (TLS as configured), like requests.
    let peer = region.transport.peer(
        addr,
        &endpoint.spec,
        Duration::from_secs(2),
        Some(SHADOW_TIMEOUT),
        SHADOW_IDLE,
    );
    let sent = tokio::time::timeout(SHADOW_TIMEOUT, send(&peer, &endpoint.spec, &plan))
        .await
        .unwrap_or(Err(BodyHash::Broken));
    let result = match sent {
        Err(_) => {
            region.live.stats.no_answer();
            "error"
        }
        Ok((status, body)) => {
            region
                .live
                .stats
                .answer(status < 500, started.elapsed().as_secs_f64());
            if status / 100 != plan.primary_status / 100 {
                "status_mismatch"
            } else {
                match (&plan.primary_body, body) {
                    (None, _) => "match",
                    (Some(primary), Ok(h)) if h == primary.digest() => "match",
                    (Some(_), Ok(_)) => "body_mismatch",
                    (Some(_), Err(BodyHash::TooLarge)) => "too_large",
                    (Some(_), Err(BodyHash::Broken)) => "error",
                }
            }
        }
    };
    match result {
        "match" => t.matched.fetch_add(1, Ordering::Relaxed),
        "error" | "too_large" => t.errors.fetch_add(1, Ordering::Relaxed),
        _ => t.mismatched.fetch_add(1, Ordering::Relaxed),
    };
    crate::metrics::shadow_read(&t.region, result);
}

/// Bytes of a shadow's body hashed at most; a larger one is not compared.
const MAX_SHADOW_BODY: u64 = 16 * 1024 * 1024;

/// Why a shadow's body has no hash.
enum BodyHash {
    TooLarge,
    Broken,
}

/// Sends the shadow read; its status and the hash of its body (hashed as
/// it streams, never holding more than a chunk).
async fn send(
    peer: &HttpPeer,
    endpoint: &switchyard_config::Endpoint,
    plan: &ShadowPlan,
) -> Result<(u16, Result<u64, BodyHash>), BodyHash> {
    let mut req = RequestHeader::build(plan.method.clone(), plan.path_and_query.as_bytes(), None)
        .map_err(|_| BodyHash::Broken)?;
    // Its `Host` is the endpoint's, set by `send` over any the client sent.
    for (name, value) in &plan.headers {
        req.append_header(name.clone(), value.clone())
            .map_err(|_| BodyHash::Broken)?;
    }
    let mut session = region_client::send(peer, endpoint, req)
        .await
        .map_err(|_| BodyHash::Broken)?;
    let status = session.response_header().map_or(502, |r| r.status.as_u16());
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut len = 0u64;
    loop {
        match session.read_response_body().await {
            Ok(Some(chunk)) => {
                len += chunk.len() as u64;
                if len > MAX_SHADOW_BODY {
                    return Ok((status, Err(BodyHash::TooLarge)));
                }
                hash.update(&chunk);
            }
            Ok(None) => break,
            Err(_) => return Ok((status, Err(BodyHash::Broken))),
        }
    }
    region_client::release(session, peer, SHADOW_IDLE).await;
    Ok((status, Ok(hash.digest())))
}
