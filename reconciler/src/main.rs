//! `switchyard-reconcile`: after a failover, reads the routers' op logs,
//! finds the writes the old owner acknowledged that the new owner lacks,
//! replays the safe ones (with `--apply`) and reports every divergence.
//!
//! Exit codes: 0 nothing left unresolved, 1 conflicts or failures remain,
//! 2 bad usage or input.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard_reconciler::cli::Args;
use switchyard_reconciler::{apply, checkpoint, owners, plan, report, source};

/// Checks the input: every op log folder exists, the config is valid, the
/// report has a known format. Returns the message for exit code 2.
fn check_input(args: &Args) -> Result<switchyard_config::Config, String> {
    if args.oplogs.is_empty() && args.nats.is_none() {
        return Err(
            "give the op logs to read: --oplog DIR (repeatable) or --nats URL --stream NAME".into(),
        );
    }
    for dir in &args.oplogs {
        if !dir.is_dir() {
            return Err(format!("--oplog {}: not a folder", dir.display()));
        }
    }
    for report in &args.report {
        let ext = report.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "json" | "md" | "html") {
            return Err(format!(
                "--report {}: the report format comes from the extension: .json, .md or .html",
                report.display()
            ));
        }
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err(format!("--rate must be above 0, found {}", args.rate));
    }
    switchyard_config::load(&args.config).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match check_input(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("switchyard-reconcile: {msg}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard-reconcile: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let (logs, sources) = match (&args.nats, &args.stream) {
        (Some(url), Some(stream)) => (
            rt.block_on(source::read_stream(url, stream)),
            vec![format!("{url} stream {stream}")],
        ),
        _ => (
            source::read_dirs(&args.oplogs),
            args.oplogs
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
        ),
    };
    let logs = match logs {
        Ok(l) => l,
        Err(e) => {
            eprintln!("switchyard-reconcile: {e:#}");
            return ExitCode::from(2);
        }
    };
    for p in &logs.problems {
        eprintln!("switchyard-reconcile: warning: {p}");
    }
    let mut plan = plan::plan(&logs);
    // Replays go to the owner the logs end with: only if that is the owner now.
    let current = rt.block_on(owners::current(&config, args.ownership.as_deref()));
    if let Err(e) = &current {
        eprintln!("switchyard-reconcile: warning: {e}; nothing will be replayed");
    }
    plan::check_targets(&mut plan, &current);
    if args.apply {
        let path = args.checkpoint.clone().unwrap_or_else(|| {
            args.oplogs
                .first()
                .map(|d| source::oplog_dir(d))
                .unwrap_or_default()
                .join("reconcile.checkpoint")
        });
        let mut ckpt = match checkpoint::Checkpoint::open(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("switchyard-reconcile: --checkpoint {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        if ckpt.resumed > 0 {
            eprintln!(
                "switchyard-reconcile: resuming: {} ops settled by an interrupted run ({})",
                ckpt.resumed,
                path.display()
            );
        }
        let opts = apply::Options {
            rate: args.rate,
            timeout: Duration::from_secs(10),
        };
        if let Err(e) = rt.block_on(apply::apply(&mut plan, &config, &mut ckpt, &opts)) {
            eprintln!("switchyard-reconcile: replay stopped: {e:#}");
            return ExitCode::from(1);
        }
        if let Err(e) = ckpt.complete() {
            eprintln!("switchyard-reconcile: cannot mark the checkpoint complete: {e}");
        }
    }
    let summary = plan::summarize(&logs, &plan);
    let run = report::Run {
        mode: if args.apply { "apply" } else { "dry_run" },
        sources,
        generated_at_ms: switchyard_oplog::unix_ms(),
    };
    for path in &args.report {
        let text = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                serde_json::to_string_pretty(&report::json(&run, &logs, &plan, &summary))
                    .unwrap_or_default()
            }
            Some("md") => report::markdown(&run, &logs, &plan, &summary),
            _ => report::html(&run, &logs, &plan, &summary),
        };
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("switchyard-reconcile: --report {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    println!(
        "{}: {} ops scanned, {} failover(s), {} in window: {} already present, {} replayed, {} replayed on read, {} to replay, {} conflicts, {} failed, {} not replayable; {} unresolved",
        run.mode.replace('_', " "),
        summary.ops_scanned,
        plan.failovers.len(),
        summary.in_window,
        summary.already_present,
        summary.replayed,
        summary.replayed_on_read,
        summary.to_replay,
        summary.conflicts,
        summary.failed,
        summary.not_replayable,
        summary.unresolved
    );
    for path in &args.report {
        println!("report: {}", path.display());
    }
    if summary.unresolved == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
