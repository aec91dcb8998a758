//! `switchyard-reconcile`: after a failover, reads the routers' op logs,
//! finds the writes the old owner acknowledged that the new owner lacks,
//! replays the safe ones (with `--apply`) and reports every divergence.
//!
//! Exit codes: 0 nothing left unresolved, 1 conflicts or failures remain,
//! 2 bad usage or input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-reconcile",
    about = "Replay lost writes after a failover and report every divergence"
)]
struct Args {
    /// A folder of op log segments (repeat for several routers).
    #[arg(long = "oplog", required = true, value_name = "DIR")]
    oplogs: Vec<PathBuf>,
    /// The router's config (regions, owners).
    #[arg(long, value_name = "F")]
    config: PathBuf,
    /// Replay the safe writes; without it, a dry run.
    #[arg(long)]
    apply: bool,
    /// Where to write the report: .json, .md or .html.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// Checks the input: every op log folder exists, the config is valid, the
/// report has a known format. Returns the message for exit code 2.
fn check_input(args: &Args) -> Result<switchyard_config::Config, String> {
    for dir in &args.oplogs {
        if !dir.is_dir() {
            return Err(format!("--oplog {}: not a folder", dir.display()));
        }
    }
    if let Some(report) = &args.report {
        let ext = report.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "json" | "md" | "html") {
            return Err(format!(
                "--report {}: the report format comes from the extension: .json, .md or .html",
                report.display()
            ));
        }
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
    // This build writes no op log yet, so there is nothing it can read: say
    // so rather than report a reconciliation that did not happen.
    eprintln!(
        "switchyard-reconcile: {} op log folder(s) and {} checked, but this build cannot read op logs yet; nothing was reconciled",
        args.oplogs.len(),
        config.source.display()
    );
    ExitCode::from(1)
}
