//! Upstream host names, resolved with hickory and re-resolved when their TTL
//! runs out. A failed lookup keeps the last good addresses.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

use crate::route::live::EndpointLive;

const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(300);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

pub(crate) fn resolver() -> anyhow::Result<TokioResolver> {
    Ok(TokioResolver::builder_tokio()?.build()?)
}

/// Keeps `endpoint.addrs` current until the endpoint is retired.
pub(crate) async fn keep_resolved(resolver: Arc<TokioResolver>, endpoint: Arc<EndpointLive>) {
    if endpoint.spec.host.parse::<std::net::IpAddr>().is_ok() {
        return; // a literal address needs no lookup
    }
    while !endpoint.retired.load(Ordering::Relaxed) {
        let wait = match resolver.lookup_ip(endpoint.spec.host.as_str()).await {
            Ok(lookup) => {
                let addrs: Vec<SocketAddr> = lookup
                    .iter()
                    .map(|ip| SocketAddr::new(ip, endpoint.spec.port))
                    .collect();
                if addrs.is_empty() {
                    RETRY_AFTER_FAILURE
                } else {
                    if **endpoint.addrs.load() != addrs {
                        tracing::info!(endpoint = %endpoint.spec, ?addrs, "resolved");
                        endpoint.usable.store(Arc::new(addrs.clone()));
                    }
                    endpoint.addrs.store(Arc::new(addrs));
                    lookup
                        .valid_until()
                        .saturating_duration_since(Instant::now())
                        .clamp(MIN_TTL, MAX_TTL)
                }
            }
            Err(e) => {
                tracing::warn!(endpoint = %endpoint.spec, error = %e, "lookup failed; keeping last addresses");
                metrics::counter!("switchyard_dns_failures_total").increment(1);
                RETRY_AFTER_FAILURE
            }
        };
        tokio::time::sleep(wait).await;
    }
}
