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
