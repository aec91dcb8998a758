//! Brownout detection: passive outlier ejection from live answers. A region
//! is taken out of rotation for reads when it fails several times in a row,
//! when its error rate over the window is too high, or when it is slow
//! against the other regions while still passing health checks ("slow, not
//! dead"). Ejection time grows with repeats; a cap bounds how many regions
//! are out at once. Writes are never ejected away from their owner.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_config::Outlier;

use crate::control::RouterState;
use crate::route::live::{Ejection, RegionLive};
use crate::route::stats::StatsSnapshot;
use crate::route::topology::Topology;

/// Why a region is ejected.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finding {
    /// `failures`, `error_rate` or `slow`: the metric label.
    pub(crate) kind: &'static str,
    pub(crate) reason: String,
}

/// The figures one region shows over the window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    pub(crate) stats: StatsSnapshot,
    pub(crate) consecutive_failures: u64,
    /// Mean answer latency over the window, else the probe RTT average.
    pub(crate) latency: Option<f64>,
}

/// Timed answers a window needs before its mean latency stands for the region.
const MIN_TIMED: u64 = 5;

/// Judges one region's window against the others' latencies.
pub(crate) fn judge(cfg: &Outlier, own: &Window, others_latency: &[f64]) -> Option<Finding> {
    if own.consecutive_failures >= u64::from(cfg.consecutive_failures) {
        return Some(Finding {
            kind: "failures",
            reason: format!("{} failures in a row", own.consecutive_failures),
        });
    }
    if own.stats.answers >= cfg.min_requests {
        if let Some(rate) = own.stats.error_rate() {
            if rate > cfg.max_error_rate {
                return Some(Finding {
                    kind: "error_rate",
                    reason: format!(
                        "error rate {:.0}% over {} answers in {:?} (limit {:.0}%)",
                        rate * 100.0,
                        own.stats.answers,
                        cfg.window,
                        cfg.max_error_rate * 100.0
                    ),
                });
            }
        }
    }
    let mine = own.latency?;
    if others_latency.is_empty() {
        return None;
    }
    let mut sorted = others_latency.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    if mine > median * cfg.slow_ratio && mine - median > cfg.slow_min_excess.as_secs_f64() {
        return Some(Finding {
            kind: "slow",
            reason: format!(
                "slow, not dead: {:.0} ms against the other regions' {:.0} ms",
                mine * 1e3,
                median * 1e3
            ),
        });
    }
    None
}

/// How long the `nth` ejection (1-based) lasts.
pub(crate) fn ejection_time(cfg: &Outlier, nth: u32) -> Duration {
    cfg.base_ejection
        .saturating_mul(nth.max(1))
        .min(cfg.max_ejection)
}

/// Regions that may be ejected at once.
pub(crate) fn max_ejected(cfg: &Outlier, regions: usize) -> usize {
    if cfg.max_ejected_percent == 0 {
        return 0;
    }
    (regions * usize::from(cfg.max_ejected_percent) / 100).max(1)
}

/// Per-region snapshots over the window, oldest first.
#[derive(Default)]
struct Detector {
    history: HashMap<String, VecDeque<(Instant, StatsSnapshot)>>,
    readmitted_at: HashMap<String, Instant>,
    /// Regions held in only by the cap: said once, not every tick.
    capped: std::collections::HashSet<String>,
}

impl Detector {
    fn window(&mut self, name: &str, live: &RegionLive, span: Duration) -> Window {
        let now = Instant::now();
        let snap = live.stats.snapshot();
        let q = self.history.entry(name.to_string()).or_default();
        q.push_back((now, snap));
        while q.len() > 1
            && q.front()
                .is_some_and(|(t, _)| now.duration_since(*t) > span)
        {
            q.pop_front();
        }
        let stats = match (q.front(), q.back()) {
            (Some((_, oldest)), Some((_, newest))) => newest.since(oldest),
            _ => StatsSnapshot::default(),
        };
        let latency = if stats.timed() >= MIN_TIMED {
            stats.mean_secs()
        } else {
            live.probe_rtt.get()
        };
        Window {
            stats,
            consecutive_failures: live.stats.consecutive_failures.load(Ordering::Relaxed),
            latency,
        }
    }

    fn tick(&mut self, topo: &Topology) {
        // Ejected regions count as down for panic mode.
        if self.judge_all(topo, crate::route::live::now_nanos()) {
            topo.refresh_panic();
        }
    }

    /// Readmits the regions whose ejection ran out and ejects those judged
    /// browned out: whether any region's ejection began or ended.
    fn judge_all(&mut self, topo: &Topology, now_ns: u64) -> bool {
        let cfg = &topo.config.routing.outlier;
        let mut changed = false;
        // Readmit the regions whose ejection ran out.
        for r in &topo.regions {
            let live = &r.live;
            let Some(e) = live.ejection() else {
                continue;
            };
            if now_ns >= e.until {
                live.ejected.store(false, Ordering::Relaxed);
                changed = true;
                if let Ok(mut slot) = live.ejection.lock() {
                    *slot = None;
                }
                live.stats.consecutive_failures.store(0, Ordering::Relaxed);
                self.history.remove(r.spec.name.as_str());
                self.readmitted_at
                    .insert(r.spec.name.to_string(), Instant::now());
                tracing::info!(region = %r.spec.name, "readmitted after brownout ejection");
                live.publish_gauges(&r.spec.name);
            }
        }
        if !cfg.enabled {
            return changed;
        }
        let windows: Vec<Window> = topo
            .regions
            .iter()
            .map(|r| self.window(r.spec.name.as_str(), &r.live, cfg.window))
            .collect();
        let mut ejected = topo.regions.iter().filter(|r| r.live.is_ejected()).count();
        let cap = max_ejected(cfg, topo.regions.len());
        for (i, r) in topo.regions.iter().enumerate() {
            let live = &r.live;
            if live.is_ejected() || !live.is_healthy() {
                continue;
            }
            // A good run long enough forgets earlier ejections.
            if self
                .readmitted_at
                .get(r.spec.name.as_str())
                .is_some_and(|t| t.elapsed() > cfg.max_ejection)
            {
                live.ejections.store(0, Ordering::Relaxed);
                self.readmitted_at.remove(r.spec.name.as_str());
            }
            let others: Vec<f64> = topo
                .regions
                .iter()
                .enumerate()
                .filter(|(j, o)| *j != i && o.live.is_healthy() && !o.live.is_ejected())
                .filter_map(|(j, _)| windows[j].latency)
                .collect();
            let Some(finding) = judge(cfg, &windows[i], &others) else {
                self.capped.remove(r.spec.name.as_str());
                continue;
            };
            if ejected >= cap {
                if self.capped.insert(r.spec.name.to_string()) {
                    tracing::warn!(region = %r.spec.name, reason = %finding.reason, cap, "would eject, but the cap on ejected regions is reached");
                }
                continue;
            }
            self.capped.remove(r.spec.name.as_str());
            let nth = live.ejections.fetch_add(1, Ordering::Relaxed) + 1;
            let duration = ejection_time(cfg, nth);
            if let Ok(mut slot) = live.ejection.lock() {
                *slot = Some(Ejection {
                    reason: finding.reason.clone(),
                    until: now_ns + duration.as_nanos() as u64,
                    duration,
                });
            }
            live.ejected.store(true, Ordering::Relaxed);
            changed = true;
            ejected += 1;
            tracing::warn!(region = %r.spec.name, reason = %finding.reason, for_s = duration.as_secs_f64(), nth, "ejected");
            crate::metrics::ejection(&r.spec.name, finding.kind);
            live.publish_gauges(&r.spec.name);
        }
        changed
    }
}

/// Runs brownout detection on the control runtime.
pub(crate) async fn run_detector(state: Arc<RouterState>) {
    let mut detector = Detector::default();
    let mut interval = state.topology.load().config.routing.outlier.interval;
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let topo = state.topology.load_full();
        detector.tick(&topo);
        let want = topo.config.routing.outlier.interval;
        if want != interval {
            interval = want;
            tick = tokio::time::interval(interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::stats::RegionStats;

    fn window(latency: f64, answers: u64, errors: u64) -> Window {
        let s = RegionStats::default();
        for i in 0..answers {
            s.answer(i >= errors, latency);
        }
        Window {
            consecutive_failures: 0,
            latency: Some(latency),
            stats: s.snapshot(),
        }
    }

    #[test]
    fn slow_against_the_others_is_ejected() {
        let cfg = Outlier::default();
        let f = judge(&cfg, &window(0.5, 20, 0), &[0.002, 0.003]).expect("slow");
        assert_eq!(f.kind, "slow");
        // Far but expected: a region 160 ms away among 1 ms and 80 ms ones stays.
        assert_eq!(judge(&cfg, &window(0.160, 20, 0), &[0.001, 0.080]), None);
        assert_eq!(judge(&cfg, &window(0.002, 20, 0), &[0.002, 0.003]), None);
    }

    #[test]
    fn errors_and_failures_in_a_row_eject() {
        let cfg = Outlier::default();
        assert_eq!(
            judge(&cfg, &window(0.01, 20, 15), &[]).map(|f| f.kind),
            Some("error_rate")
        );
        let mut w = window(0.01, 2, 0);
        w.consecutive_failures = 5;
        assert_eq!(judge(&cfg, &w, &[]).map(|f| f.kind), Some("failures"));
    }

    #[test]
    fn ejection_grows_and_is_capped() {
        let cfg = Outlier::default();
        assert_eq!(ejection_time(&cfg, 1), Duration::from_secs(10));
        assert_eq!(ejection_time(&cfg, 3), Duration::from_secs(30));
        assert_eq!(ejection_time(&cfg, 1000), Duration::from_secs(300));
        assert_eq!(max_ejected(&cfg, 2), 1);
        assert_eq!(max_ejected(&cfg, 5), 2);
    }
}
