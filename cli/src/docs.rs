//! Shell completions and man pages, made from the same clap definitions the
//! binaries parse with, so they cannot drift from the flags.

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

fn reconcile() -> clap::Command {
    switchyard_reconciler::cli::Args::command()
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Binary {
    Switchyard,
    SwitchyardReconcile,
}

/// One binary's completions on stdout (shells load them per command name).
pub(crate) fn completions(
    switchyard: clap::Command,
    binary: Binary,
    shell: clap_complete::Shell,
) -> ExitCode {
    let mut cmd = match binary {
        Binary::Switchyard => switchyard,
        Binary::SwitchyardReconcile => reconcile(),
    };
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `switchyard.1`, `switchyard-SUBCOMMAND.1` for each subcommand, and
/// `switchyard-reconcile.1` in `out`.
pub(crate) fn man_pages(switchyard: clap::Command, out: &Path) -> ExitCode {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(out)?;
        clap_mangen::generate_to(switchyard, out)?;
        clap_mangen::generate_to(reconcile(), out)
    };
    match write() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: man --out {}: {e}", out.display());
            ExitCode::from(2)
        }
    }
}
