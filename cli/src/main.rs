//! `switchyard`: run the edge router, check a config, run the demo, or talk
//! to a running router's admin API. Flags in, the library's app out; every
//! failure to start exits 2 with its reason.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod ctl;
mod docs;
mod upgrade;

/// glibc's malloc was a sixth of the proxy's CPU under load; mimalloc's
/// thread-local free lists take most of that away.
#[global_allocator]
static GLOBAL: switchyard_alloc::Allocator = switchyard_alloc::Allocator;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Edge traffic router for multi-region APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Take the listening sockets over from the router running on the
        /// same state_dir, which then drains and exits: no connection is refused.
        #[arg(long)]
        upgrade: bool,
    },
    /// Replace the running router with this binary and config, with no
    /// downtime: starts `run --upgrade` in the background and returns once
    /// it serves (for systemd's ExecReload).
    Upgrade {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file; prints FILE:LINE:COL: message for each error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start three reference regions, the router and a client mix, and show how traffic splits.
    Demo(switchyard_demo::DemoArgs),
    /// Talk to a running router's admin API (token from SWITCHYARD_ADMIN_TOKEN).
    Ctl(ctl::CtlArgs),
    /// Print shell completions for switchyard (or switchyard-reconcile).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
        #[arg(long, value_enum, default_value = "switchyard")]
        binary: docs::Binary,
    },
    /// Write man pages for switchyard (and each subcommand) and
    /// switchyard-reconcile into a folder.
    Man {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// How long freed memory stays with the process before it goes back to the
/// system: long enough that a burst of large bodies does not fault its
/// pages in again on the next burst (`switchyard_alloc::keep_freed_memory_for`).
const KEEP_FREED_MEMORY: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    switchyard_alloc::keep_freed_memory_for(KEEP_FREED_MEMORY);
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,pingora=warn,pingora_core::connectors=off")
        });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // SWITCHYARD_LOG_FORMAT=json: one JSON object per process log line, for
    // collectors that parse; anything else is the human format.
    match std::env::var("SWITCHYARD_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().flatten_event(true).init(),
        _ => logs.init(),
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match switchyard_config::load(&config) {
            Ok(cfg) => {
                for w in cfg.warnings() {
                    eprintln!("{}: warning: {w}", config.display());
                }
                // What `run` would have from this shell's limits.
                let files = switchyard_router::raise_open_files(cfg.limits.max_connections);
                if let Some(w) = files.warning {
                    eprintln!("{}: warning: {w}", config.display());
                }
                let n = cfg.regions.len();
                println!(
                    "{}: ok ({n} region{}, policy {:?})",
                    config.display(),
                    if n == 1 { "" } else { "s" },
                    cfg.routing.policy
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Upgrade { config } => upgrade::run(&config),
        Command::Run { config, upgrade } => {
            match switchyard_router::App::build(config, upgrade).and_then(|app| app.run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Demo(args) => match switchyard_demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard demo: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Ctl(args) => ctl::run(args),
        Command::Completions { shell, binary } => docs::completions(Cli::command(), binary, shell),
        Command::Man { out } => docs::man_pages(Cli::command(), &out),
    }
}
