//! Shadow reads, the sending half: a read picked by `route::shadow` is sent
//! to the ramping region after the client has its whole answer, and the
//! shadow's status class (and, when configured, a hash of its body) is
//! compared with the primary answer; mismatches are counted and the shadow
//! response is discarded. The client never waits for the shadow.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::route::shadow::ShadowPlan;
use crate::route::topology::Topology;

/// Upper bound for one shadow request.
const SHADOW_TIMEOUT: Duration = Duration::from_secs(10);

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
    if endpoint.spec.tls {
        // Mirrors go out in the clear; a region reached over TLS gets none
        // rather than a read whose headers cross the network unencrypted.
        crate::metrics::shadow_read(&t.region, "skipped_tls");
        return;
    }
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
            if status / 100 != plan.primary_status / 100 {
                "status_mismatch"
            } else {
                match &plan.primary_body {
                    None => "match",
                    Some(primary) => match hash_body(resp).await {
                        Ok(h) if h == primary.digest() => "match",
                        Ok(_) => "body_mismatch",
                        Err(BodyHash::TooLarge) => "too_large",
                        Err(BodyHash::Broken) => "error",
                    },
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

/// Hashes a shadow's body as it streams, never holding more than a chunk.
async fn hash_body(mut resp: reqwest::Response) -> Result<u64, BodyHash> {
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut len = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|_| BodyHash::Broken)? {
        len += chunk.len() as u64;
        if len > MAX_SHADOW_BODY {
            return Err(BodyHash::TooLarge);
        }
        hash.update(&chunk);
    }
    Ok(hash.digest())
}
