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
//! best grows it. `min_rtt` is the best interval of the last
//! `MIN_RTT_WINDOW` (a windowed minimum, as BBR keeps its round-trip time):
//! one unusually fast interval is forgotten once the window has passed it,
//! instead of holding a recovered region's limit down, and a lasting change
//! in a region's baseline is learned within the window. A cut limit keeps
//! the region's concurrency low, so its answers show the low-load latency
//! again within the window. The other side of it: under overload that lasts
//! longer than the window, the overloaded latency becomes the best, and the
//! limit may let latency rise by up to `tolerance` a window. Telling that
//! from a slower region needs a sample at low concurrency (Envoy drops its
//! limit to a floor now and then to take one). An interval with fewer than
//! `MIN_ANSWERS` answers changes nothing. Written here (rather than taken
//! from a crate) because the limit must be one atomic the proxy's admission
//! reads, fed from the latency histogram the router already keeps per region.

use std::collections::{HashMap, VecDeque};
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
/// How many intervals `min_rtt` looks back over (10 s).
const MIN_RTT_WINDOW: u64 = 20;

/// One region's controller state between intervals.
#[derive(Default)]
struct Gradient {
    last: Option<StatsSnapshot>,
    best: WindowedMin,
}

/// The smallest sample of the last `MIN_RTT_WINDOW` intervals: a deque of
/// the samples that could still become the minimum, ascending, each with
/// the interval it was taken in (amortised O(1) a sample).
#[derive(Default)]
struct WindowedMin {
    candidates: VecDeque<(u64, f64)>,
}

impl WindowedMin {
    /// Takes `sample`, taken in interval `tick`, and returns the minimum of
    /// the window ending there.
    fn push(&mut self, tick: u64, sample: f64) -> f64 {
        while self.candidates.back().is_some_and(|&(_, s)| s >= sample) {
            self.candidates.pop_back();
        }
        self.candidates.push_back((tick, sample));
        while self
            .candidates
            .front()
            .is_some_and(|&(t, _)| t + MIN_RTT_WINDOW <= tick)
        {
            self.candidates.pop_front();
        }
        self.candidates.front().map_or(sample, |&(_, s)| s)
    }
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
    for interval_no in 0u64.. {
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
            let min_rtt = g.best.push(interval_no, sample);
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

    #[test]
    fn the_best_interval_is_remembered_for_the_window_and_then_forgotten() {
        let mut best = WindowedMin::default();
        assert_eq!(best.push(0, 0.005), 0.005);
        // One unusually fast interval sets the minimum...
        assert_eq!(best.push(1, 0.001), 0.001);
        // ...for the window, whatever comes after it...
        for tick in 2..=MIN_RTT_WINDOW {
            assert_eq!(best.push(tick, 0.006 + tick as f64 * 1e-4), 0.001, "{tick}");
        }
        // ...and then the best of what is left in the window counts.
        assert_eq!(best.push(MIN_RTT_WINDOW + 1, 0.009), 0.006 + 2.0 * 1e-4);
        // A lower sample is the minimum at once.
        assert_eq!(best.push(MIN_RTT_WINDOW + 2, 0.004), 0.004);
        // Intervals without a sample still age what is kept.
        assert_eq!(best.push(3 * MIN_RTT_WINDOW, 0.02), 0.02);
    }
}
