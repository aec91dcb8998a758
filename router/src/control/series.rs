//! The last minutes of traffic, one sample a second per region: requests
//! per second by class, the share that got a 5xx, p99, in flight, dial and
//! health. The console charts it from `GET /admin/v1/series`; Prometheus
//! has the long history, this is what an operator sees without one.
//!
//! Samples are differences of the cumulative counters the hot path already
//! keeps ([`crate::route::stats`]), so sampling costs the request path
//! nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::control::RouterState;
use crate::route::stats::StatsSnapshot;

/// One sample a second…
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// …for five minutes.
pub(crate) const KEPT: usize = 300;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RegionSample {
    pub(crate) read_rps: f64,
    pub(crate) write_rps: f64,
    /// Share of the region's answers in the interval that were a 5xx or
    /// none at all (attempts, retried elsewhere or not: the region's own rate).
    pub(crate) error_rate: f64,
    /// p99 of the region's answers in the interval, ms (absent without answers).
    pub(crate) p99_ms: Option<f64>,
    pub(crate) inflight: usize,
    pub(crate) dial: f64,
    pub(crate) healthy: bool,
    pub(crate) ejected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// Unix time, ms.
    pub(crate) at_ms: u64,
    pub(crate) regions: Vec<(String, RegionSample)>,
}

/// What a region's counters said at the last sample.
struct Last {
    classes: [u64; 2],
    stats: StatsSnapshot,
}

#[derive(Default)]
pub(crate) struct Series {
    samples: Mutex<VecDeque<Sample>>,
}

impl Series {
    fn push(&self, sample: Sample) {
        if let Ok(mut s) = self.samples.lock() {
            if s.len() == KEPT {
                s.pop_front();
            }
            s.push_back(sample);
        }
    }

    /// Samples taken after `since_ms` (all kept ones for 0), oldest first.
    pub(crate) fn since(&self, since_ms: u64) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|s| s.iter().filter(|x| x.at_ms > since_ms).cloned().collect())
            .unwrap_or_default()
    }
}

/// Takes a sample every [`INTERVAL`] for as long as the router runs.
pub(crate) async fn run_sampler(state: Arc<RouterState>) {
    let mut last: HashMap<Arc<str>, Last> = HashMap::new();
    let mut taken = Instant::now();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let secs = taken.elapsed().as_secs_f64().max(1e-3);
        taken = Instant::now();
        let sample = sample(&state, &mut last, secs);
        state.series.push(sample);
    }
}

fn sample(state: &RouterState, last: &mut HashMap<Arc<str>, Last>, secs: f64) -> Sample {
    let topo = state.topology.load_full();
    let mut regions = Vec::with_capacity(topo.regions.len());
    let mut seen = HashMap::with_capacity(topo.regions.len());
    for r in &topo.regions {
        let name: Arc<str> = Arc::from(r.spec.name.as_str());
        let now = Last {
            classes: r.live.served.totals(),
            stats: r.live.stats.snapshot(),
        };
        let before = last.get(&name);
        let delta = |c: usize| {
            let n = now.classes[c];
            n.saturating_sub(before.map_or(n, |b| b.classes[c]))
        };
        let (reads, writes) = (delta(0), delta(1));
        let answered = before.map(|b| now.stats.since(&b.stats));
        if let Some(p95) = answered.as_ref().and_then(|a| a.quantile_secs(0.95)) {
            r.live
                .recent_p95_us
                .store((p95 * 1e6) as u64, Ordering::Relaxed);
        }
        regions.push((
            name.to_string(),
            RegionSample {
                read_rps: round2(reads as f64 / secs),
                write_rps: round2(writes as f64 / secs),
                error_rate: answered
                    .as_ref()
                    .and_then(StatsSnapshot::error_rate)
                    .map_or(0.0, round4),
                p99_ms: answered
                    .as_ref()
                    .and_then(|a| a.quantile_secs(0.99))
                    .map(|s| round2(s * 1e3)),
                inflight: r.live.inflight.load(Ordering::Relaxed),
                dial: r.live.dial().as_f64(),
                healthy: r.live.is_healthy(),
                ejected: r.live.is_ejected(),
            },
        ));
        seen.insert(name, now);
    }
    // Regions a reload removed are forgotten with it.
    *last = seen;
    Sample {
        at_ms: switchyard_oplog::unix_ms(),
        regions,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(at_ms: u64) -> Sample {
        Sample {
            at_ms,
            regions: Vec::new(),
        }
    }

    #[test]
    fn keeps_the_last_five_minutes_and_answers_what_is_new() {
        let s = Series::default();
        for t in 1..=(KEPT as u64 + 10) {
            s.push(empty(t));
        }
        let all = s.since(0);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].at_ms, 11, "the oldest went first");
        let new = s.since(KEPT as u64 + 8);
        assert_eq!(
            new.iter().map(|x| x.at_ms).collect::<Vec<_>>(),
            [KEPT as u64 + 9, KEPT as u64 + 10]
        );
    }
}
