//! Ramps: move one region's dial through its steps (synthetic first, then
//! growing real percentages). A step holds for `hold` and advances only while
//! its gates hold, judged on the ramping region against the others over the
//! step; a breach halts the ramp and steps the dial down gradually. Progress
//! is persisted, so a restarted router resumes where it was.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_config::{Gates, Percent, Ramp, RampStep};

use crate::control::error::ControlError;
use crate::control::RouterState;
use crate::route::stats::StatsSnapshot;
use crate::route::topology::{RegionIdx, Topology};
use crate::store::traffic::{RampEvent, RampRecord, RampState};

/// History lines a ramp keeps.
const HISTORY: usize = 50;

/// Adds a line to a ramp's history (and the log).
fn note(run: &mut RampRecord, name: &str, what: String) {
    tracing::info!(ramp = name, "{what}");
    run.history.push(RampEvent {
        at_ms: switchyard_oplog::unix_ms(),
        what,
    });
    if run.history.len() > HISTORY {
        run.history.remove(0);
    }
}

/// The running step's clock and the gates' baseline: this router's own,
/// never saved or shared (a restart, or a new leader, restarts the hold).
#[derive(Debug, Clone, Default)]
pub(crate) struct StepClock {
    /// When the current step started.
    step_started: Option<Instant>,
    /// The region's and the others' figures at the start of the step.
    baseline: Option<(StatsSnapshot, StatsSnapshot)>,
    last_step_down: Option<Instant>,
    last_judgement: Option<Judgement>,
}

impl StepClock {
    fn start_step(&mut self, topo: &Topology, region: RegionIdx) {
        self.step_started = Some(Instant::now());
        self.baseline = Some(figures(topo, region));
        self.last_judgement = None;
    }
}

/// Every ramp's step clock, by ramp name. Taken after the traffic store's
/// lock whenever both are held.
#[derive(Default)]
pub(crate) struct StepClocks(Mutex<HashMap<String, StepClock>>);

impl StepClocks {
    /// Runs `f` on the clocks.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, StepClock>) -> T) -> T {
        match self.0.lock() {
            Ok(mut clocks) => f(&mut clocks),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Forgets a ramp's clock: its step moved elsewhere (another router).
    pub(crate) fn restart(&self, ramp: &str) {
        self.with(|c| c.remove(ramp));
    }
}

/// The ramping region's figures and the others' together.
fn figures(topo: &Topology, region: RegionIdx) -> (StatsSnapshot, StatsSnapshot) {
    let mut others = StatsSnapshot::default();
    for (i, r) in topo.regions.iter().enumerate() {
        if i != region as usize {
            others.add(&r.live.stats.snapshot());
        }
    }
    (topo.regions[region as usize].live.stats.snapshot(), others)
}

/// The gates' reading of one step so far.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Judgement {
    pub(crate) answers: u64,
    pub(crate) error_rate: Option<f64>,
    pub(crate) burn_rate: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) others_p99_ms: Option<f64>,
    pub(crate) p99_ratio: Option<f64>,
    /// The gate breached and why.
    pub(crate) breach: Option<(&'static str, String)>,
}

impl Judgement {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "answers": self.answers,
            "error_rate": self.error_rate,
            "burn_rate": self.burn_rate,
            "p99_ms": self.p99_ms,
            "others_p99_ms": self.others_p99_ms,
            "p99_ratio": self.p99_ratio,
        })
    }
}

/// Fewest timed answers on each side before a p99 comparison means anything.
const MIN_P99_SAMPLES: u64 = 10;

/// Judges a step: the region's figures against the others', both over the step.
pub(crate) fn judge(gates: &Gates, region: &StatsSnapshot, others: &StatsSnapshot) -> Judgement {
    let error_rate = region.error_rate();
    let burn_rate = error_rate.map(|e| e / (1.0 - gates.slo));
    let p99 = region.quantile_secs(0.99);
    let others_p99 = others.quantile_secs(0.99);
    let p99_ratio = match (p99, others_p99) {
        (Some(a), Some(b))
            if region.timed() >= MIN_P99_SAMPLES.max(gates.min_requests)
                && others.timed() >= MIN_P99_SAMPLES
                && b > 0.0 =>
        {
            Some(a / b)
        }
        _ => None,
    };
    let mut breach = None;
    if region.answers >= gates.min_requests.max(1) {
        if let (Some(max), Some(e)) = (gates.max_error_rate, error_rate) {
            if e > max {
                breach = Some((
                    "error_rate",
                    format!(
                        "error rate {:.2}% over {} answers is above the gate's {:.2}%",
                        e * 100.0,
                        region.answers,
                        max * 100.0
                    ),
                ));
            }
        }
        if breach.is_none() {
            if let (Some(max), Some(b)) = (gates.max_burn_rate, burn_rate) {
                if b > max {
                    breach = Some((
                        "burn_rate",
                        format!(
                            "error-budget burn rate {b:.1}x (SLO {}) is above the gate's {max}x",
                            gates.slo
                        ),
                    ));
                }
            }
        }
    }
    if breach.is_none() {
        if let (Some(max), Some(r)) = (gates.max_p99_ratio, p99_ratio) {
            if r > max {
                breach = Some((
                    "p99_ratio",
                    format!(
                        "p99 {:.1} ms is {r:.2}x the other regions' {:.1} ms, above the gate's {max}x",
                        p99.unwrap_or(0.0) * 1e3,
                        others_p99.unwrap_or(0.0) * 1e3
                    ),
                ));
            }
        }
    }
    Judgement {
        answers: region.answers,
        error_rate,
        burn_rate,
        p99_ms: p99.map(|s| s * 1e3),
        others_p99_ms: others_p99.map(|s| s * 1e3),
        p99_ratio,
        breach,
    }
}

/// The next dial on the way down: the next lower step, but never less than
/// half the current dial (nor a fall larger than `max_step`); from 1% or
/// below, 0.
pub(crate) fn step_down(
    current: Percent,
    steps: &[RampStep],
    max_step: Option<Percent>,
) -> Percent {
    let cur = current.tenths();
    if cur <= 10 {
        return Percent::ZERO;
    }
    let lower = steps
        .iter()
        .map(|s| s.dial().tenths())
        .filter(|t| *t < cur)
        .max()
        .unwrap_or(0);
    let mut next = lower.max(cur / 2);
    if let Some(m) = max_step {
        next = next.max(cur.saturating_sub(m.tenths()));
    }
    Percent::from_tenths(next).unwrap_or(Percent::ZERO)
}

/// What an operator asks of a ramp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RampAction {
    Start,
    Pause,
    Abort,
}

impl RampAction {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "start" => Some(RampAction::Start),
            "pause" => Some(RampAction::Pause),
            "abort" => Some(RampAction::Abort),
            _ => None,
        }
    }
}

/// Applies an operator's action to ramp `spec`; persists the result.
pub(crate) fn act(
    state: &RouterState,
    spec: &Ramp,
    action: RampAction,
) -> Result<Value, ControlError> {
    let topo = state.topology.load_full();
    let Some(region) = topo.index_of(spec.region.as_str()) else {
        return Err(ControlError::NotFound(format!(
            "ramp {} names region {}, which is not configured",
            spec.name, spec.region
        )));
    };
    let live = &topo.regions[region as usize].live;
    if action == RampAction::Start {
        crate::control::safety::check_ramp_steps(&topo.config.safety, spec)?;
    }
    let last = spec.steps.len() - 1;
    let result = state.traffic.update(|t| {
        let run = t.ramps.entry(spec.name.clone()).or_default();
        state.ramp_clocks.with(|clocks| {
            let clock = clocks.entry(spec.name.clone()).or_default();
            match action {
                RampAction::Start => match run.state {
                    RampState::Running => {}
                    RampState::Paused => {
                        run.state = RampState::Running;
                        clock.start_step(&topo, region);
                        let at = spec.steps[run.step.min(last)];
                        note(run, &spec.name, format!("resumed at step {at}"));
                    }
                    _ => {
                        let dial = live.dial();
                        run.step = spec
                            .steps
                            .iter()
                            .position(|s| s.dial() >= dial)
                            .unwrap_or(last);
                        run.state = RampState::Running;
                        run.reason = None;
                        run.stepping_down = false;
                        live.set_dial(spec.steps[run.step].dial());
                        clock.start_step(&topo, region);
                        let at = spec.steps[run.step];
                        note(run, &spec.name, format!("started at step {at}"));
                    }
                },
                RampAction::Pause => {
                    if run.state != RampState::Running {
                        return Err(ControlError::refused(
                            "state",
                            format!("ramp {} is {}, not running", spec.name, run.state.as_str()),
                        ));
                    }
                    run.state = RampState::Paused;
                    let at = spec.steps[run.step.min(last)];
                    note(run, &spec.name, format!("paused at step {at}"));
                }
                RampAction::Abort => {
                    if !matches!(
                        run.state,
                        RampState::Running | RampState::Paused | RampState::Halted
                    ) {
                        return Err(ControlError::refused(
                            "state",
                            format!(
                                "ramp {} is {}; nothing to abort",
                                spec.name,
                                run.state.as_str()
                            ),
                        ));
                    }
                    run.state = RampState::Aborted;
                    run.reason = Some("aborted by an operator".into());
                    run.stepping_down = live.dial() > Percent::ZERO;
                    let dial = live.dial();
                    note(
                        run,
                        &spec.name,
                        format!("aborted at dial {dial}; stepping down"),
                    );
                }
            }
            Ok(run_json(spec, run, Some(clock), live.dial()))
        })
    });
    match result {
        Ok(r) => {
            live.publish_gauges(&topo.regions[region as usize].spec.name);
            r
        }
        Err(e) => Err(ControlError::Internal(format!(
            "cannot persist the ramp state: {e:#}"
        ))),
    }
}

/// A ramp's status entry.
pub(crate) fn run_json(
    spec: &Ramp,
    run: &RampRecord,
    clock: Option<&StepClock>,
    dial: Percent,
) -> Value {
    let step = spec
        .steps
        .get(run.step)
        .copied()
        .unwrap_or(RampStep::Synthetic);
    let step_value = match step {
        RampStep::Synthetic => json!("synthetic"),
        RampStep::Real(p) => Value::Number(p.to_json_number()),
    };
    let held = clock
        .and_then(|c| c.step_started)
        .filter(|_| run.state == RampState::Running)
        .map(|t| t.elapsed().as_secs_f64());
    json!({
        "region": spec.region.as_str(),
        "state": run.state.as_str(),
        "step": step_value,
        "step_index": run.step,
        "steps": spec.steps.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "dial": dial.to_json_number(),
        "held_s": held.map(|h| (h * 10.0).round() / 10.0),
        "hold_s": spec.hold.as_secs_f64(),
        "reason": run.reason,
        "stepping_down": run.stepping_down,
        "gates": clock.and_then(|c| c.last_judgement.as_ref()).map(Judgement::to_json),
        "history": run.history.iter().rev().take(HISTORY).map(|e| json!({"at_ms": e.at_ms, "what": e.what})).collect::<Vec<_>>(),
    })
}

/// Every configured ramp's status, for `GET /admin/v1/status`.
pub(crate) fn status(state: &RouterState, topo: &Topology) -> Value {
    let runs = state.traffic.snapshot().ramps;
    let clocks = state.ramp_clocks.with(|c| c.clone());
    let shadows = state
        .shadow_all
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for spec in &topo.config.ramps {
        let run = runs.get(&spec.name).cloned().unwrap_or_default();
        let dial = topo
            .region(spec.region.as_str())
            .map_or(Percent::ZERO, |r| r.live.dial());
        let mut entry = run_json(spec, &run, clocks.get(&spec.name), dial);
        if let Some(s) = shadows.get(&spec.name) {
            entry["shadow"] = s.to_json();
        }
        out.insert(spec.name.clone(), entry);
    }
    Value::Object(out)
}

/// How often ramps are looked at.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// Drives every ramp one tick: gates, holds, step-downs. Runs on the control
/// runtime. In fleet mode only the leader drives, and publishes what moved.
pub(crate) async fn run_controller(state: std::sync::Arc<RouterState>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let topo = state.topology.load_full();
        if topo.config.ramps.is_empty() {
            continue;
        }
        let leads = state.presence.as_ref().is_none_or(|p| p.is_leader());
        match (&state.fleet, leads) {
            (_, false) => {}
            (None, true) => {
                drive(&state, &topo);
            }
            (Some(fleet), true) => {
                let mut revisions = fleet.ramp_revisions().lock().await;
                let before = ramp_dials(&topo);
                let changed = drive(&state, &topo);
                let dials: Vec<_> = ramp_dials(&topo)
                    .into_iter()
                    .filter(|d| !before.contains(d))
                    .collect();
                crate::control::fleet_sync::publish_ramps(
                    &state,
                    fleet,
                    &mut revisions,
                    &changed,
                    &dials,
                )
                .await;
            }
        }
        let runs = state.traffic.snapshot().ramps;
        for spec in &topo.config.ramps {
            if let Some(run) = runs.get(&spec.name) {
                crate::metrics::ramp(&spec.name, run.step, run.state.as_str(), RampState::NAMES);
            }
        }
        refresh_shadow_targets(&state, &topo, &runs);
    }
}

/// The dials of the regions ramps move.
fn ramp_dials(topo: &Topology) -> Vec<(String, Percent)> {
    topo.config
        .ramps
        .iter()
        .filter_map(|spec| {
            let r = topo.region(spec.region.as_str())?;
            Some((spec.region.to_string(), r.live.dial()))
        })
        .collect()
}

/// One tick of every ramp, persisted; the names of the runs that changed.
fn drive(state: &RouterState, topo: &Topology) -> Vec<String> {
    let result = state.traffic.update_if(|t| {
        let mut changed = Vec::new();
        state.ramp_clocks.with(|clocks| {
            for spec in &topo.config.ramps {
                let Some(run) = t.ramps.get_mut(&spec.name) else {
                    continue;
                };
                let clock = clocks.entry(spec.name.clone()).or_default();
                if advance(topo, spec, run, clock) {
                    changed.push(spec.name.clone());
                }
            }
        });
        let any = !changed.is_empty();
        (changed, any)
    });
    result.unwrap_or_else(|e| {
        tracing::error!(error = %format!("{e:#}"), "cannot persist ramp progress");
        Vec::new()
    })
}

/// Points shadow reads at the regions whose ramp runs its synthetic stage.
fn refresh_shadow_targets(
    state: &RouterState,
    topo: &Topology,
    runs: &std::collections::BTreeMap<String, RampRecord>,
) {
    let Ok(mut all) = state.shadow_all.lock() else {
        return;
    };
    let mut active = Vec::new();
    for spec in &topo.config.ramps {
        let Some(shadow) = &spec.shadow else {
            continue;
        };
        let at_synthetic = runs.get(&spec.name).is_some_and(|r| {
            r.state == RampState::Running && spec.steps.get(r.step) == Some(&RampStep::Synthetic)
        });
        if !at_synthetic {
            continue;
        }
        let current = all
            .get(&spec.name)
            .filter(|t| t.region == spec.region && t.spec == *shadow);
        let target = match current {
            Some(t) => t.clone(),
            None => {
                // New, or its settings changed with a reload: fresh counters.
                let t = std::sync::Arc::new(crate::route::shadow::ShadowTarget::new(
                    spec.region.clone(),
                    shadow.clone(),
                ));
                all.insert(spec.name.clone(), t.clone());
                t
            }
        };
        active.push(target);
    }
    let current = state.shadow_active.load();
    let same = current.len() == active.len()
        && current
            .iter()
            .zip(&active)
            .all(|(a, b)| std::sync::Arc::ptr_eq(a, b));
    if !same {
        state.shadow_active.store(std::sync::Arc::new(active));
    }
}

/// One tick of one ramp; true when something changed.
fn advance(topo: &Topology, spec: &Ramp, run: &mut RampRecord, clock: &mut StepClock) -> bool {
    let Some(region) = topo.index_of(spec.region.as_str()) else {
        return false;
    };
    let entry = &topo.regions[region as usize];
    let live = &entry.live;
    let now = Instant::now();
    if run.stepping_down {
        let due = clock
            .last_step_down
            .is_none_or(|t| now.duration_since(t) >= spec.step_down_every);
        if !due {
            return false;
        }
        let next = step_down(live.dial(), &spec.steps, topo.config.safety.max_dial_step);
        live.set_dial(next);
        clock.last_step_down = Some(now);
        note(run, &spec.name, format!("stepped the dial down to {next}"));
        if next == Percent::ZERO {
            run.stepping_down = false;
            note(run, &spec.name, "dial at 0: step-down done".into());
        }
        live.publish_gauges(&entry.spec.name);
        return true;
    }
    if run.state != RampState::Running {
        return false;
    }
    let step = run.step.min(spec.steps.len() - 1);
    if live.dial() != spec.steps[step].dial() {
        live.set_dial(spec.steps[step].dial());
        live.publish_gauges(&entry.spec.name);
    }
    let (Some(started), Some((base_region, base_others))) =
        (clock.step_started, clock.baseline.clone())
    else {
        clock.start_step(topo, region);
        return false;
    };
    let (now_region, now_others) = figures(topo, region);
    let j = judge(
        &spec.gates,
        &now_region.since(&base_region),
        &now_others.since(&base_others),
    );
    if let Some((gate, why)) = j.breach.clone() {
        run.state = RampState::Halted;
        run.reason = Some(format!(
            "gate {gate} breached at step {}: {why}",
            spec.steps[step]
        ));
        run.stepping_down = live.dial() > Percent::ZERO;
        clock.last_step_down = Some(now);
        clock.last_judgement = Some(j);
        crate::metrics::ramp_halt(&spec.name, gate);
        let reason = run.reason.clone().unwrap_or_default();
        tracing::warn!(ramp = %spec.name, region = %spec.region, "ramp halted: {reason}");
        note(run, &spec.name, format!("halted: {reason}"));
        return true;
    }
    clock.last_judgement = Some(j);
    if now.duration_since(started) < spec.hold {
        return false;
    }
    if step + 1 >= spec.steps.len() {
        run.state = RampState::Completed;
        run.reason = None;
        note(
            run,
            &spec.name,
            format!("completed at {}", spec.steps[step]),
        );
        return true;
    }
    let next = spec.steps[step + 1];
    if next.dial() > Percent::ZERO && live.is_drifted() {
        let why = format!(
            "holding at step {}: region drifted from its artifact ({})",
            spec.steps[step],
            live.drift().join("; ")
        );
        if run.reason.as_deref() != Some(why.as_str()) {
            run.reason = Some(why.clone());
            note(run, &spec.name, why);
            return true;
        }
        return false;
    }
    run.step = step + 1;
    run.reason = None;
    live.set_dial(next.dial());
    clock.start_step(topo, region);
    live.publish_gauges(&entry.spec.name);
    note(run, &spec.name, format!("advanced to step {next}"));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::stats::RegionStats;

    fn pct(t: u16) -> Percent {
        Percent::from_tenths(t).expect("pct")
    }

    #[test]
    fn stepping_down_is_gradual() {
        let steps = [
            RampStep::Synthetic,
            RampStep::Real(pct(10)),
            RampStep::Real(pct(50)),
            RampStep::Real(pct(250)),
            RampStep::Real(pct(1000)),
        ];
        let mut d = Percent::FULL;
        let mut seen = vec![d.tenths()];
        while d > Percent::ZERO {
            let next = step_down(d, &steps, None);
            assert!(next < d);
            assert!(
                next.tenths() >= d.tenths() / 2 || d.tenths() <= 10,
                "{d} → {next}"
            );
            d = next;
            seen.push(d.tenths());
        }
        assert_eq!(seen, vec![1000, 500, 250, 125, 62, 50, 25, 12, 10, 0]);
        assert_eq!(
            step_down(pct(1000), &[RampStep::Real(pct(1000))], Some(pct(100))),
            pct(900)
        );
    }

    #[test]
    fn gates_judge_the_region_against_the_others() {
        let gates = Gates {
            max_error_rate: Some(0.05),
            max_p99_ratio: Some(1.5),
            max_burn_rate: None,
            slo: 0.999,
            min_requests: 1,
        };
        let (region, others) = (RegionStats::default(), RegionStats::default());
        for _ in 0..50 {
            region.answer(true, 0.010);
            others.answer(true, 0.010);
        }
        let j = judge(&gates, &region.snapshot(), &others.snapshot());
        assert_eq!(j.breach, None, "{j:?}");
        for _ in 0..5 {
            region.answer(true, 0.100);
        }
        let j = judge(&gates, &region.snapshot(), &others.snapshot());
        assert_eq!(j.breach.as_ref().map(|b| b.0), Some("p99_ratio"), "{j:?}");
        for _ in 0..10 {
            region.no_answer();
        }
        let j = judge(&gates, &region.snapshot(), &others.snapshot());
        assert_eq!(j.breach.as_ref().map(|b| b.0), Some("error_rate"), "{j:?}");
    }

    #[test]
    fn too_few_answers_are_not_judged() {
        let gates = Gates {
            min_requests: 5,
            ..Gates::default()
        };
        let region = RegionStats::default();
        region.no_answer();
        let j = judge(&gates, &region.snapshot(), &StatsSnapshot::default());
        assert_eq!(j.breach, None);
    }
}
