//! Adaptive concurrency (`regions.X.adaptive_concurrency`): a gradient
//! limit in the manner of Netflix's concurrency-limits and Envoy's filter.
//! Every interval the region's mean answer time in that interval (`sample`)
//! is compared with the best it has shown (`min_rtt`):
//!
//! ```text
//! gradient = clamp(min_rtt × tolerance / sample, 0.5, 2)
//! limit    = clamp(limit × gradient + √limit, min, max)
//! ```
//!
//! A region whose latency climbs with its load past `tolerance` × its best
//! has its limit cut (at most by half an interval); one answering near its
//! best grows it. `min_rtt` drifts up 1% an interval, so a lasting change in
//! a region's baseline is learned in tens of seconds rather than held
//! against it forever; an interval with fewer than `MIN_ANSWERS` answers
//! changes nothing. Written here (rather than taken from a crate) because
//! the limit must be one atomic the proxy's admission reads, fed from the
//! latency histogram the router already keeps per region.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::{Adaptive, Concurrency};

use crate::control::RouterState;
use crate::route::stats::StatsSnapshot;

/// How often limits move.
pub(crate) const INTERVAL: Duration = Duration::from_millis(500);
/// Answers an interval needs before its latency counts.
const MIN_ANSWERS: u64 = 5;
/// How much `min_rtt` may rise an interval.
const MIN_RTT_DRIFT: f64 = 1.01;

/// One region's controller state between intervals.
#[derive(Default)]
struct Gradient {
    last: Option<StatsSnapshot>,
    min_rtt: Option<f64>,
}

/// The next limit from the current one and an interval's mean latency.
pub(crate) fn next_limit(a: &Adaptive, limit: usize, min_rtt: f64, sample: f64) -> usize {
    let gradient = (min_rtt * a.tolerance / sample).clamp(0.5, 2.0);
    let current = limit as f64;
    let next = current * gradient + current.sqrt();
    (next.round() as usize).clamp(a.min, a.max)
}

/// Moves each adaptive region's limit every `INTERVAL`.
pub(crate) async fn run(state: Arc<RouterState>) {
    let mut regions: HashMap<String, Gradient> = HashMap::new();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let topo = state.topology.load_full();
        for r in &topo.regions {
            let Concurrency::Adaptive(a) = r.spec.concurrency else {
                continue;
            };
            let g = regions.entry(r.spec.name.to_string()).or_default();
            let now = r.live.stats.snapshot();
            let interval = g.last.as_ref().map(|b| now.since(b));
            g.last = Some(now);
            let Some(sample) = interval
                .filter(|i| i.timed() >= MIN_ANSWERS)
                .and_then(|i| i.mean_secs())
                .filter(|s| *s > 0.0)
            else {
                continue;
            };
            let min_rtt = g
                .min_rtt
                .map_or(sample, |m| (m * MIN_RTT_DRIFT).min(sample));
            g.min_rtt = Some(min_rtt);
            let limit = r.live.limit.load(Ordering::Relaxed);
            let next = next_limit(&a, limit, min_rtt, sample);
            r.live.limit.store(next, Ordering::Relaxed);
            r.live
                .adaptive_min_rtt_us
                .store((min_rtt * 1e6) as u64, Ordering::Relaxed);
            r.live
                .adaptive_sample_us
                .store((sample * 1e6) as u64, Ordering::Relaxed);
            crate::metrics::concurrency_limit(&r.spec.name, next);
            if next != limit {
                tracing::debug!(region = %r.spec.name, limit = next, was = limit, sample_ms = sample * 1e3, min_rtt_ms = min_rtt * 1e3, "adaptive concurrency");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_past_the_tolerance_cuts_and_near_the_best_grows() {
        let a = Adaptive {
            min: 2,
            max: 100,
            initial: 20,
            tolerance: 1.5,
        };
        // Twice the best latency: cut (gradient 0.75), plus √20 of headroom.
        assert_eq!(next_limit(&a, 20, 0.010, 0.020), 19);
        // Eight times: cut by half (the floor), plus headroom.
        assert_eq!(next_limit(&a, 40, 0.010, 0.080), 26);
        // At its best: grows, within max.
        assert_eq!(next_limit(&a, 20, 0.010, 0.010), 34);
        assert_eq!(next_limit(&a, 90, 0.010, 0.010), 100);
        // Never below min.
        assert_eq!(next_limit(&a, 2, 0.010, 1.0), 2);
        let tight = Adaptive { min: 4, ..a };
        assert_eq!(next_limit(&tight, 4, 0.010, 10.0), 4);
    }
}
