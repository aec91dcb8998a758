//! Safety interlocks: an operator's change (a dial, a drain, a ramp) is
//! checked against `safety:` before it is applied; a change that breaks a
//! rule is refused, naming the rule.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use switchyard_config::{Percent, Ramp, Safety};

use crate::control::error::ControlError;
use crate::route::topology::{RegionIdx, Topology};

/// A change an operator asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    Dial(RegionIdx, Percent),
    Drain(RegionIdx),
}

/// Whether a region serves traffic, now or with `change` applied: healthy,
/// not drained or ejected, dial above 0.
fn serving(topo: &Topology, idx: RegionIdx, change: Option<Change>) -> bool {
    let live = &topo.regions[idx as usize].live;
    let dial = match change {
        Some(Change::Dial(i, p)) if i == idx => p,
        _ => live.dial(),
    };
    let drained = live.is_draining() || matches!(change, Some(Change::Drain(i)) if i == idx);
    live.is_healthy() && !live.is_ejected() && !drained && dial > Percent::ZERO
}

/// Recent dials per region, for `max_dial_step` over `dial_step_interval`.
#[derive(Default)]
pub(crate) struct DialHistory(Mutex<HashMap<String, VecDeque<(Instant, Percent)>>>);

impl DialHistory {
    /// Records a dial that was applied.
    pub(crate) fn record(&self, region: &str, dial: Percent) {
        if let Ok(mut h) = self.0.lock() {
            h.entry(region.to_string())
                .or_default()
                .push_back((Instant::now(), dial));
        }
    }

    /// The dials a region had within the last `interval`, oldest first.
    fn within(&self, region: &str, interval: std::time::Duration) -> Vec<Percent> {
        let Ok(mut h) = self.0.lock() else {
            return Vec::new();
        };
        let Some(q) = h.get_mut(region) else {
            return Vec::new();
        };
        while q.front().is_some_and(|(t, _)| t.elapsed() > interval) {
            q.pop_front();
        }
        q.iter().map(|(_, p)| *p).collect()
    }
}

/// Checks `change` against every interlock.
pub(crate) fn check(
    topo: &Topology,
    history: &DialHistory,
    change: Change,
) -> Result<(), ControlError> {
    let safety = &topo.config.safety;
    let n = topo.regions.len() as RegionIdx;
    let before = (0..n).filter(|i| serving(topo, *i, None)).count();
    let after = (0..n).filter(|i| serving(topo, *i, Some(change))).count();
    if after < safety.min_serving_regions && after < before {
        return Err(ControlError::refused(
            "min_serving_regions",
            format!(
                "this would leave {after} serving region(s); safety.min_serving_regions is {}",
                safety.min_serving_regions
            ),
        ));
    }
    match change {
        Change::Dial(idx, to) => {
            let Some(max) = safety.max_dial_step else {
                return Ok(());
            };
            let r = &topo.regions[idx as usize];
            let mut seen = history.within(r.spec.name.as_str(), safety.dial_step_interval);
            seen.push(r.live.dial());
            let far = seen
                .iter()
                .copied()
                .max_by_key(|p| p.tenths().abs_diff(to.tenths()))
                .unwrap_or(to);
            if far.tenths().abs_diff(to.tenths()) > max.tenths() {
                return Err(ControlError::refused(
                    "max_dial_step",
                    format!(
                        "moving {} to {to} is a step of more than {max} from {far} within {}; safety.max_dial_step is {max}",
                        r.spec.name,
                        humantime::format_duration(safety.dial_step_interval)
                    ),
                ));
            }
        }
        Change::Drain(idx) => {
            let owned = topo.owned_partitions(idx);
            if safety.single_owner && !owned.is_empty() {
                return Err(ControlError::refused(
                    "single_owner",
                    format!(
                        "{} owns partition(s) {}: draining it leaves them without a serving owner; promote another region first",
                        topo.name(idx),
                        owned.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A ramp may not move its dial by more than `max_dial_step` between steps.
pub(crate) fn check_ramp_steps(safety: &Safety, ramp: &Ramp) -> Result<(), ControlError> {
    let Some(max) = safety.max_dial_step else {
        return Ok(());
    };
    for pair in ramp.steps.windows(2) {
        let (a, b) = (pair[0].dial(), pair[1].dial());
        if b.tenths().saturating_sub(a.tenths()) > max.tenths() {
            return Err(ControlError::refused(
                "max_dial_step",
                format!(
                    "ramp {} steps from {a} to {b}, more than safety.max_dial_step ({max})",
                    ramp.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::topology::for_test;
    use std::sync::atomic::Ordering;

    fn topo(safety: &str) -> Topology {
        for_test(&format!(
            "listen: {{ http: 127.0.0.1:1 }}
regions:
  a: {{ type: full, endpoints: [\"127.0.0.1:2\"], services: [api] }}
  b: {{ type: full, endpoints: [\"127.0.0.1:3\"], services: [api] }}
  c: {{ type: read-only, endpoints: [\"127.0.0.1:4\"], services: [api] }}
routing: {{ policy: weighted }}
consistency: {{ owners: {{ default: a }} }}
safety: {safety}
"
        ))
    }

    fn pct(p: f64) -> Percent {
        Percent::from_f64(p).expect("percent")
    }

    fn rule(r: Result<(), ControlError>) -> Option<&'static str> {
        r.err().and_then(|e| e.rule())
    }

    #[test]
    fn min_serving_regions_refuses_only_a_change_that_leaves_too_few() {
        let t = topo("{ min_serving_regions: 2, single_owner: false }");
        let h = DialHistory::default();
        assert_eq!(
            rule(check(&t, &h, Change::Dial(1, pct(0.0)))),
            None,
            "3 → 2"
        );
        t.regions[1].live.set_dial(pct(0.0));
        let refused = check(&t, &h, Change::Dial(2, pct(0.0))).expect_err("2 → 1");
        assert_eq!(refused.rule(), Some("min_serving_regions"));
        assert!(refused.to_string().contains("leave 1 serving"), "{refused}");
        assert_eq!(
            rule(check(&t, &h, Change::Drain(2))),
            Some("min_serving_regions")
        );
        // A change that does not lower the count passes even below the minimum.
        t.regions[2].live.healthy.store(false, Ordering::Relaxed);
        assert_eq!(rule(check(&t, &h, Change::Dial(1, pct(50.0)))), None);
    }

    #[test]
    fn max_dial_step_counts_every_dial_within_the_interval() {
        let t = topo("{ max_dial_step: 10, dial_step_interval: 1m, min_serving_regions: 0 }");
        let h = DialHistory::default();
        t.regions[1].live.set_dial(pct(20.0));
        assert_eq!(rule(check(&t, &h, Change::Dial(1, pct(30.0)))), None);
        assert_eq!(
            rule(check(&t, &h, Change::Dial(1, pct(30.1)))),
            Some("max_dial_step")
        );
        // 20 → 30 applied, then 30 → 40 would be 20 from where it was a moment ago.
        h.record("b", pct(20.0));
        t.regions[1].live.set_dial(pct(30.0));
        h.record("b", pct(30.0));
        assert_eq!(
            rule(check(&t, &h, Change::Dial(1, pct(40.0)))),
            Some("max_dial_step")
        );
        assert_eq!(rule(check(&t, &h, Change::Dial(1, pct(25.0)))), None);
    }

    #[test]
    fn single_owner_refuses_draining_an_owner() {
        let t = topo("{ min_serving_regions: 0 }");
        let h = DialHistory::default();
        let refused = check(&t, &h, Change::Drain(0)).expect_err("a owns default");
        assert_eq!(refused.rule(), Some("single_owner"));
        assert!(
            refused.to_string().contains("owns partition(s) default"),
            "{refused}"
        );
        assert_eq!(rule(check(&t, &h, Change::Drain(1))), None);
    }

    #[test]
    fn a_ramp_may_not_step_further_than_max_dial_step() {
        let safety = Safety {
            max_dial_step: Some(pct(25.0)),
            ..Safety::default()
        };
        let cfg = |steps: &str| {
            switchyard_config::parse_str(
                &format!(
                    "listen: {{ http: 127.0.0.1:1 }}
regions:
  b: {{ type: full, endpoints: [\"127.0.0.1:3\"], services: [api] }}
routing: {{ policy: weighted }}
ramps: {{ r: {{ region: b, steps: {steps}, hold: 1s }} }}
"
                ),
                std::path::Path::new("t.yaml"),
            )
            .expect("valid")
        };
        let ok = cfg("[5, 25, 50, 75, 100]");
        assert!(check_ramp_steps(&safety, &ok.ramps[0]).is_ok());
        let jump = cfg("[5, 50, 100]");
        let refused = check_ramp_steps(&safety, &jump.ramps[0]).expect_err("5 → 50");
        assert_eq!(refused.rule(), Some("max_dial_step"));
    }
}
