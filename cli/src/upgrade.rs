//! `switchyard upgrade`: starts `switchyard run --upgrade` in the background
//! (its own process group, the same stdout and stderr), waits until it says
//! it serves, and returns. It exists for service managers, whose reload
//! command must return while the new router goes on: systemd's ExecReload.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

pub(crate) fn run(config: &Path) -> ExitCode {
    match start(config) {
        Ok(pid) => {
            println!(
                "switchyard upgrade: pid {pid} serves; the router it replaced drains and exits"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard upgrade: {e:#}; the running router goes on serving");
            ExitCode::from(2)
        }
    }
}

fn start(config: &Path) -> anyhow::Result<u32> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    // Without CLOEXEC, so the new router inherits the write end.
    let (read, write) = rustix::pipe::pipe().context("cannot make a pipe")?;
    let mut child = Command::new(exe)
        .arg("run")
        .arg("--upgrade")
        .arg("--config")
        .arg(config)
        .env(
            switchyard_router::READY_FD_ENV,
            write.as_raw_fd().to_string(),
        )
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the new router")?;
    drop(write);
    let mut line = String::new();
    BufReader::new(std::fs::File::from(read))
        .read_line(&mut line)
        .context("waiting for the new router")?;
    if let Some(pid) = line.strip_prefix("ready ") {
        return pid.trim().parse().context("the new router's ready line");
    }
    let status = child.wait().context("waiting for the new router")?;
    anyhow::bail!("the new router did not start ({status}; its reason is above)")
}
