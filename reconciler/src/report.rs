//! The reconcile report: JSON (the contract's fields), Markdown for a
//! ticket, and one self-contained HTML page with a timeline of each failover
//! window and the conflicts side by side.

use std::fmt::Write as _;

use serde_json::{json, Value};
use switchyard_oplog::{Body, OutcomeKind};

use crate::plan::{replay_body, Candidate, Plan, Summary, Verdict};
use crate::source::{Logs, Op};

/// What the run was, for the report's header.
pub struct Run {
    pub mode: &'static str,
    pub sources: Vec<String>,
    pub generated_at_ms: u64,
}

fn body_text(op: &Op) -> String {
    match replay_body(op) {
        Some(b) => {
            let s = String::from_utf8_lossy(b);
            let mut t: String = s.chars().take(300).collect();
            if s.chars().count() > 300 {
                t.push('…');
            }
            t
        }
        None => match &op.intent.body {
            Body::Hashed { len, sha256 } => format!(
                "({len} bytes, sha256 {})",
                sha256
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
            _ => "(body not logged)".into(),
        },
    }
}

fn iso(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn op_json(op: &Op) -> Value {
    let i = &op.intent;
    let o = op.outcome.as_ref();
    json!({
        "op_id": i.op_id.to_string(),
        "edge_id": i.edge_id,
        "at": iso(i.at_ms),
        "at_ms": i.at_ms,
        "partition": i.partition,
        "method": i.method,
        "path": i.path,
        "idempotency_key": i.idempotency_key,
        "owner": i.owner,
        "epoch": i.epoch,
        "outcome": o.map_or("unknown", |o| o.outcome.as_str()),
        "status": o.map(|o| o.status),
        "commit_position": o.and_then(|o| o.commit_position),
        "body": body_text(op),
    })
}

fn candidate_json(c: &Candidate) -> Value {
    let mut v = op_json(&c.op);
    v["verdict"] = json!(c.verdict.as_str());
    v["reason"] = json!(c.reason);
    v["failover"] = json!(c.failover);
    if let Some(s) = c.replay_status {
        v["replay"] = json!({"status": s, "commit_position": c.replay_position});
    }
    if let Some(w) = &c.conflict_with {
        v["conflict_with"] = op_json(w);
    }
    v
}

pub fn json(run: &Run, logs: &Logs, plan: &Plan, summary: &Summary) -> Value {
    json!({
        "generated_at": iso(run.generated_at_ms),
        "mode": run.mode,
        "sources": run.sources,
        "summary": summary,
        "failovers": plan.failovers.iter().map(|f| {
            let p = &f.promotion;
            json!({
                "partition": p.partition,
                "from": p.from,
                "to": p.to,
                "from_epoch": p.from_epoch,
                "to_epoch": p.to_epoch,
                "time": iso(p.at_ms),
                "at_ms": p.at_ms,
                "applied_position": p.applied_position,
                "forced": p.forced,
                "reason": p.reason,
                "edge_id": p.edge_id,
                "replay_target": {"region": f.target, "epoch": f.target_epoch},
            })
        }).collect::<Vec<_>>(),
        "ops": plan.candidates.iter().map(candidate_json).collect::<Vec<_>>(),
        "problems": logs.problems,
        "duplicates_dropped": logs.duplicates,
        "outcomes_without_intent": logs.orphans.iter().map(|o| o.op_id.to_string()).collect::<Vec<_>>(),
    })
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(run: &Run, logs: &Logs, plan: &Plan, s: &Summary) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# Reconciliation report ({})\n",
        run.mode.replace('_', " ")
    );
    let _ = writeln!(
        m,
        "Generated {} from {}.\n",
        iso(run.generated_at_ms),
        run.sources.join(", ")
    );
    let _ = writeln!(m, "| ops scanned | in window | already present | replayed | replayed on read | to replay | conflicts | failed | not replayable | stale target | unreadable | lost | **unresolved** |");
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        m,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | **{}** |\n",
        s.ops_scanned,
        s.in_window,
        s.already_present,
        s.replayed,
        s.replayed_on_read,
        s.to_replay,
        s.conflicts,
        s.failed,
        s.not_replayable,
        s.stale_target,
        s.unreadable_records,
        s.lost_records,
        s.unresolved
    );
    let _ = writeln!(m, "## Failovers\n");
    for f in &plan.failovers {
        let p = &f.promotion;
        let _ = writeln!(
            m,
            "- {}: partition `{}` {} → {} (epoch {} → {}), applied position {}{}; reason: {}",
            iso(p.at_ms),
            p.partition,
            p.from,
            p.to,
            p.from_epoch,
            p.to_epoch,
            p.applied_position,
            if p.forced { ", **forced**" } else { "" },
            p.reason
        );
    }
    let conflicts: Vec<&Candidate> = plan.with_verdict(Verdict::Conflict).collect();
    if !conflicts.is_empty() {
        let _ = writeln!(m, "\n## Conflicts (not replayed: decide by hand)\n");
        let _ = writeln!(
            m,
            "| resource | lost write (old owner) | newer write (new owner) |"
        );
        let _ = writeln!(m, "|---|---|---|");
        for c in conflicts {
            let newer = c.conflict_with.as_ref();
            let _ = writeln!(
                m,
                "| `{} {}` | op {} epoch {} at {}: `{}` | {} |",
                c.op.intent.method,
                md_cell(c.op.intent.resource()),
                c.op.intent.op_id,
                c.op.intent.epoch,
                iso(c.op.intent.at_ms),
                md_cell(&body_text(&c.op)),
                newer.map_or("?".into(), |n| format!(
                    "op {} epoch {} at {}: `{}`",
                    n.intent.op_id,
                    n.intent.epoch,
                    iso(n.intent.at_ms),
                    md_cell(&body_text(n))
                ))
            );
        }
    }
    let open = left_unresolved(plan);
    if !open.is_empty() {
        let _ = writeln!(m, "\n## Left unresolved\n");
        let _ = writeln!(m, "| op | write | verdict | reason |");
        let _ = writeln!(m, "|---|---|---|---|");
        for c in open {
            let _ = writeln!(
                m,
                "| {} | `{} {}` | {} | {} |",
                c.op.intent.op_id,
                c.op.intent.method,
                md_cell(&c.op.intent.path),
                c.verdict.as_str(),
                md_cell(&c.reason)
            );
        }
    }
    if !logs.problems.is_empty() {
        let _ = writeln!(m, "\n## Problems reading the logs\n");
        for p in &logs.problems {
            let _ = writeln!(m, "- {}", md_cell(p));
        }
    }
    m
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes still needing a human or another run, conflicts aside (they
/// have their own section).
fn left_unresolved(plan: &Plan) -> Vec<&Candidate> {
    plan.candidates
        .iter()
        .filter(|c| c.verdict.unresolved() && c.verdict != Verdict::Conflict)
        .collect()
}

/// One row per write: when, what, its outcome and position, the verdict and why.
fn candidate_table(out: &mut String, rows: &[&Candidate]) {
    out.push_str("<table><thead><tr><th>time</th><th>write</th><th>outcome</th><th>position</th><th>verdict</th><th>reason</th></tr></thead>");
    for c in rows {
        let o = c.op.outcome.as_ref();
        let _ = write!(out, "<tr><td>{}</td><td><code>{} {}</code><br><small>op {}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&iso(c.op.intent.at_ms)), esc(&c.op.intent.method), esc(&c.op.intent.path), c.op.intent.op_id,
            o.map_or(OutcomeKind::Unknown, |o| o.outcome).as_str(),
            o.and_then(|o| o.commit_position).map_or(String::new(), |p| p.to_string()),
            c.verdict.as_str(), esc(&c.reason));
    }
    out.push_str("</table>");
}

/// Writes per second on each side of one failover, with the promotion and
/// the lost and replayed writes marked, as an inline SVG.
fn timeline(logs: &Logs, plan: &Plan, index: usize) -> String {
    let f = &plan.failovers[index];
    let p = &f.promotion;
    let window: Vec<&Candidate> = plan
        .candidates
        .iter()
        .filter(|c| c.failover == index)
        .collect();
    // Writes each side took: acknowledged, or sent and never answered.
    let taken = |o: &&Op| {
        matches!(
            o.outcome
                .as_ref()
                .map_or(OutcomeKind::Unknown, |x| x.outcome),
            OutcomeKind::Acked | OutcomeKind::Unknown
        )
    };
    let on_old = |o: &&Op| {
        taken(o)
            && o.intent.owner == p.from
            && o.intent.epoch == p.from_epoch
            && o.intent.owner_entry == p.partition
    };
    let on_new =
        |o: &&Op| taken(o) && o.intent.epoch >= p.to_epoch && o.intent.owner_entry == p.partition;
    let times: Vec<u64> = logs
        .ops
        .values()
        .filter(|o| on_old(o) || on_new(o))
        .map(|o| o.intent.at_ms)
        .chain([p.at_ms])
        .collect();
    let lo = times
        .iter()
        .min()
        .copied()
        .unwrap_or(p.at_ms)
        .max(p.at_ms.saturating_sub(120_000))
        / 1000
        * 1000;
    let hi = (times
        .iter()
        .max()
        .copied()
        .unwrap_or(p.at_ms)
        .min(p.at_ms + 120_000)
        / 1000
        + 1)
        * 1000;
    let secs = ((hi - lo) / 1000).max(1) as usize;
    let mut old = vec![0u32; secs];
    let mut new = vec![0u32; secs];
    for o in logs.ops.values() {
        let t = o.intent.at_ms;
        if t < lo || t >= hi {
            continue;
        }
        let b = ((t - lo) / 1000) as usize;
        if on_old(&o) {
            old[b] += 1;
        } else if on_new(&o) {
            new[b] += 1;
        }
    }
    let peak = old.iter().chain(&new).copied().max().unwrap_or(1).max(1) as f64;
    let (w, h, pad) = (900.0, 220.0, 30.0);
    let x = |ms: u64| pad + (ms.saturating_sub(lo)) as f64 / (hi - lo) as f64 * (w - 2.0 * pad);
    let y = |n: u32| h - pad - f64::from(n) / peak * (h - 2.0 * pad);
    let bar_w = (w - 2.0 * pad) / secs as f64;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="writes per second around the failover">"#
    );
    for (i, (a, b)) in old.iter().zip(&new).enumerate() {
        let bx = pad + i as f64 * bar_w;
        if *a > 0 {
            let _ = write!(
                svg,
                r##"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#8aa4c8"><title>{a} writes/s on {}</title></rect>"##,
                y(*a),
                bar_w * 0.45,
                h - pad - y(*a),
                esc(&p.from)
            );
        }
        if *b > 0 {
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#7cbf8e"><title>{b} writes/s on {}</title></rect>"##,
                bx + bar_w * 0.5,
                y(*b),
                bar_w * 0.45,
                h - pad - y(*b),
                esc(&p.to)
            );
        }
    }
    let px = x(p.at_ms);
    // The label goes on the side of the line with more room, so that it is
    // never cut by the chart's edge.
    let (label_x, anchor) = if px > w / 2.0 {
        (px - 4.0, "end")
    } else {
        (px + 4.0, "start")
    };
    let _ = write!(
        svg,
        r##"<line x1="{px:.1}" y1="10" x2="{px:.1}" y2="{:.1}" stroke="#c0392b" stroke-width="2"/><text x="{label_x:.1}" y="20" font-size="12" fill="#c0392b" text-anchor="{anchor}">promotion {} → {} (epoch {})</text>"##,
        h - pad,
        esc(&p.from),
        esc(&p.to),
        p.to_epoch
    );
    for c in &window {
        let (colour, what) = match c.verdict {
            Verdict::AlreadyPresent => continue,
            Verdict::Replayed | Verdict::ReplayedOnRead => ("#27ae60", "replayed"),
            Verdict::Conflict => ("#e67e22", "conflict"),
            _ => ("#c0392b", "lost"),
        };
        let cx = x(c.op.intent.at_ms);
        let _ = write!(
            svg,
            r#"<circle cx="{cx:.1}" cy="{:.1}" r="4" fill="{colour}"><title>{what}: {} {}</title></circle>"#,
            h - pad + 10.0,
            esc(&c.op.intent.method),
            esc(&c.op.intent.path)
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{pad}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#444"/><text x="{pad}" y="{:.1}" font-size="11">{}</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text></svg>"##,
        h - pad,
        w - pad,
        h - pad,
        h - 2.0,
        esc(&iso(lo)),
        w - pad,
        h - 2.0,
        esc(&iso(hi))
    );
    svg
}

pub fn html(run: &Run, logs: &Logs, plan: &Plan, s: &Summary) -> String {
    let mut out = String::from(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Switchyard reconciliation report</title><style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;width:100%;margin:1em 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.num td{text-align:right}.bad{color:#c0392b;font-weight:bold}.ok{color:#27ae60;font-weight:bold}
code,pre{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;word-break:break-all}
.legend span{display:inline-block;margin-right:1.5em}.sw{display:inline-block;width:10px;height:10px;margin-right:4px}
svg{overflow:visible;max-width:100%}details>summary{cursor:pointer;font-weight:600;margin:1em 0}
@media print{body{max-width:none;margin:0;font-size:11px}tr,svg,pre{break-inside:avoid}thead{display:table-header-group}
h2{break-after:avoid}*{print-color-adjust:exact;-webkit-print-color-adjust:exact}}
</style><script>
// Printed, every section is open.
addEventListener("beforeprint", () => document.querySelectorAll("details").forEach((d) => { d.open = true; }));
</script></head><body>"#,
    );
    let _ = write!(
        out,
        "<h1>Reconciliation report <small>({})</small></h1><p>Generated {} from {}.</p>",
        esc(&run.mode.replace('_', " ")),
        esc(&iso(run.generated_at_ms)),
        esc(&run.sources.join(", "))
    );
    let verdict_class = if s.unresolved == 0 { "ok" } else { "bad" };
    let _ = write!(
        out,
        r#"<p class="{verdict_class}">{} unresolved</p>"#,
        s.unresolved
    );
    let _ = write!(out, "<table class=\"num\"><thead><tr><th>ops scanned</th><th>in window</th><th>already present</th><th>replayed</th><th>replayed on read</th><th>to replay</th><th>conflicts</th><th>failed</th><th>not replayable</th><th>stale target</th><th>unreadable</th><th>lost</th><th>unresolved</th></tr></thead><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        s.ops_scanned, s.in_window, s.already_present, s.replayed, s.replayed_on_read, s.to_replay, s.conflicts, s.failed, s.not_replayable, s.stale_target, s.unreadable_records, s.lost_records, s.unresolved);
    // What needs a decision comes first, then what was done, then the
    // failovers' pictures; what was already in place is only counted
    // unless opened.
    let conflicts: Vec<&Candidate> = plan.with_verdict(Verdict::Conflict).collect();
    if !conflicts.is_empty() {
        out.push_str("<h2>Conflicts</h2><p>Not replayed: the new owner has written the same resource since. Decide by hand.</p><table><thead><tr><th>resource</th><th>lost write (old owner)</th><th>newer write (new owner)</th></tr></thead>");
        for c in conflicts {
            let newer = c.conflict_with.as_ref();
            let _ = write!(out, "<tr><td><code>{} {}</code></td><td>op {}<br>epoch {} at {}<pre>{}</pre></td><td>{}</td></tr>",
                esc(&c.op.intent.method), esc(c.op.intent.resource()), c.op.intent.op_id, c.op.intent.epoch, esc(&iso(c.op.intent.at_ms)), esc(&body_text(&c.op)),
                newer.map_or("?".into(), |n| format!("op {}<br>epoch {} at {}<pre>{}</pre>", n.intent.op_id, n.intent.epoch, esc(&iso(n.intent.at_ms)), esc(&body_text(n)))));
        }
        out.push_str("</table>");
    }
    let open = left_unresolved(plan);
    if !open.is_empty() {
        out.push_str("<h2>Left unresolved</h2><p>Failed replays, writes that cannot be replayed, and replays a dry run leaves pending.</p>");
        candidate_table(&mut out, &open);
    }
    let replayed: Vec<&Candidate> = plan.with_verdict(Verdict::Replayed).collect();
    if !replayed.is_empty() {
        out.push_str("<h2>Replayed</h2>");
        candidate_table(&mut out, &replayed);
    }
    let on_read: Vec<&Candidate> = plan.with_verdict(Verdict::ReplayedOnRead).collect();
    if !on_read.is_empty() {
        out.push_str("<h2>Replayed on read</h2><p>A router replayed these to the new owner when the client that wrote them read after the failover; not sent again.</p>");
        candidate_table(&mut out, &on_read);
    }
    for (i, f) in plan.failovers.iter().enumerate() {
        let p = &f.promotion;
        let _ = write!(out, "<h2>Failover: partition <code>{}</code>, {} → {} (epoch {} → {})</h2><p>At {}; {}'s applied position then: {}{}. Reason: {}. Replays go to {} with fencing token {}.</p>",
            esc(&p.partition), esc(&p.from), esc(&p.to), p.from_epoch, p.to_epoch, esc(&iso(p.at_ms)), esc(&p.to), p.applied_position,
            if p.forced { " (<b>forced</b>)" } else { "" }, esc(&p.reason), esc(&f.target), f.target_epoch);
        let _ = write!(
            out,
            r##"<div class="legend"><span><i class="sw" style="background:#8aa4c8"></i>writes/s on {}</span><span><i class="sw" style="background:#7cbf8e"></i>writes/s on {}</span><span><i class="sw" style="background:#c0392b"></i>lost</span><span><i class="sw" style="background:#27ae60"></i>replayed</span><span><i class="sw" style="background:#e67e22"></i>conflict</span></div>"##,
            esc(&p.from),
            esc(&p.to)
        );
        out.push_str(&timeline(logs, plan, i));
    }
    let present: Vec<&Candidate> = plan.with_verdict(Verdict::AlreadyPresent).collect();
    if !present.is_empty() {
        let _ = write!(
            out,
            "<details id=\"already-present\"><summary>{} writes already present on the new owner (nothing to do)</summary>",
            present.len()
        );
        candidate_table(&mut out, &present);
        out.push_str("</details>");
    }
    if !logs.problems.is_empty() {
        out.push_str("<h2>Problems reading the logs</h2><ul>");
        for p in &logs.problems {
            let _ = write!(out, "<li>{}</li>", esc(p));
        }
        out.push_str("</ul>");
    }
    out.push_str("</body></html>\n");
    out
}
