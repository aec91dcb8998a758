//! Replaying: each `replay` op goes to its partition's current owner with
//! its original `Idempotency-Key`, the current fencing token and a replay
//! marker, at most `rate` per second. The owner's answer settles it:
//! `Idempotent-Replayed: true` → already present; 2xx → replayed; anything
//! else (fenced, 4xx, 5xx, unreachable) → failed, with the reason.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use switchyard_config::Config;

use crate::checkpoint::{Checkpoint, Entry};
use crate::plan::{replay_body, Candidate, Plan, Verdict};

/// The header that marks a request as a reconciler's replay (its value: the op id).
pub const REPLAY_HEADER: &str = "X-Switchyard-Replay";

pub struct Options {
    /// Replays per second.
    pub rate: f64,
    pub timeout: Duration,
}

/// Sends every `replay` op of `plan`, updating verdicts in place.
pub async fn apply(
    plan: &mut Plan,
    config: &Config,
    checkpoint: &mut Checkpoint,
    opts: &Options,
) -> anyhow::Result<()> {
    let todo: Vec<usize> = plan
        .candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.verdict == Verdict::Replay)
        .map(|(i, _)| i)
        .collect();
    let client = reqwest::Client::builder().timeout(opts.timeout).build()?;
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "replaying {bar:40} {pos}/{len} ({per_sec}, {eta} left) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate.max(0.01)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in todo {
        let failover = plan.failovers[plan.candidates[i].failover].clone();
        let c = &mut plan.candidates[i];
        let id = c.op.intent.op_id.to_string();
        if let Some(e) = checkpoint.settled(&id) {
            c.verdict = if e.verdict == "replayed" {
                Verdict::Replayed
            } else {
                Verdict::AlreadyPresent
            };
            c.replay_status = e.status;
            c.replay_position = e.position;
            c.reason = format!(
                "settled by an interrupted earlier run ({}); not sent again",
                checkpoint.path.display()
            );
            bar.inc(1);
            continue;
        }
        tick.tick().await;
        send(&client, config, &failover.target, failover.target_epoch, c).await;
        if matches!(c.verdict, Verdict::Replayed | Verdict::AlreadyPresent) {
            checkpoint.record(Entry {
                op: id,
                verdict: c.verdict.as_str().into(),
                status: c.replay_status,
                position: c.replay_position,
            })?;
        }
        bar.set_message(c.verdict.as_str());
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

async fn send(
    client: &reqwest::Client,
    config: &Config,
    target: &str,
    epoch: u64,
    c: &mut Candidate,
) {
    let Some(region) = config.regions.iter().find(|r| r.name.as_str() == target) else {
        c.verdict = Verdict::Failed;
        c.reason = format!("the new owner {target} is not a region in the config");
        return;
    };
    let Some(endpoint) = region.endpoints.first() else {
        c.verdict = Verdict::Failed;
        c.reason = format!("region {target} has no endpoint");
        return;
    };
    let i = &c.op.intent;
    let Ok(method) = reqwest::Method::from_bytes(i.method.as_bytes()) else {
        c.verdict = Verdict::Failed;
        c.reason = format!("the logged method {:?} is not one HTTP knows", i.method);
        return;
    };
    let url = format!("http://{endpoint}{}", i.path);
    let mut req = client
        .request(method, &url)
        .header("X-Fencing-Token", epoch.to_string())
        .header(REPLAY_HEADER, i.op_id.to_string());
    for (k, v) in &i.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(key) = &i.idempotency_key {
        req = req.header("Idempotency-Key", key.as_str());
    }
    if let Some(h) = &config.consistency.partition.header {
        if i.partition != "default" {
            req = req.header(h.as_str(), i.partition.as_str());
        }
    }
    let body = replay_body(&c.op).map(<[u8]>::to_vec).unwrap_or_default();
    match req.body(body).send().await {
        Err(e) => {
            c.verdict = Verdict::Failed;
            c.reason = format!("{target} ({url}) could not be reached: {e}");
        }
        Ok(resp) => {
            let status = resp.status().as_u16();
            let replayed = resp
                .headers()
                .get("Idempotent-Replayed")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            let fenced = resp
                .headers()
                .get("X-Fenced")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            c.replay_status = Some(status);
            c.replay_position = resp
                .headers()
                .get("X-Commit-Position")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let text: String = resp
                .text()
                .await
                .unwrap_or_default()
                .trim()
                .chars()
                .take(200)
                .collect();
            (c.verdict, c.reason) = match status {
                200..=299 if replayed => (
                    Verdict::AlreadyPresent,
                    format!("{target} answered from its idempotency store (Idempotent-Replayed): it already has this write"),
                ),
                200..=299 => (
                    Verdict::Replayed,
                    format!("replayed to {target} with fencing token {epoch}: {status}"),
                ),
                409 if fenced => (
                    Verdict::Failed,
                    format!("{target} refused token {epoch} as fenced: ownership moved on since; run again"),
                ),
                _ => (
                    Verdict::Failed,
                    format!("{target} answered {status} to the replay: {text}"),
                ),
            };
        }
    }
}
