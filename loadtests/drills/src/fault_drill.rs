//! `fault-drill NAME|all [--quick]`: runs fault drills against the real
//! router on loopback, prints each one's table, exits 1 when a goal-0
//! figure is not 0 (2 on bad usage).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchyard_drills::fault::{drills, Scale};

#[derive(Parser)]
#[command(about = "Fault drills: the real router under load while something fails")]
struct Args {
    /// A drill (sigkill, upgrade, reload, nats, disk-full, partition,
    /// owner-killed, split-brain), or `all`.
    drill: String,
    /// CI's quick mode: short phases, a low rate, no peers.
    #[arg(long)]
    quick: bool,
    /// Requests a second (default 1000, or 200 with --quick).
    #[arg(long)]
    rate: Option<u32>,
    /// The switchyard binary (default: beside this one).
    #[arg(long)]
    router: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bin = args.router.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("switchyard")))
            .unwrap_or_else(|| PathBuf::from("target/release/switchyard"))
    });
    if !bin.exists() {
        eprintln!(
            "fault-drill: {} is missing: cargo build --release -p switchyard-cli",
            bin.display()
        );
        return ExitCode::from(2);
    }
    let mut scale = if args.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    if let Some(r) = args.rate {
        scale.rate = r;
    }
    let names: Vec<&str> = if args.drill == "all" {
        drills::ALL.to_vec()
    } else if drills::ALL.contains(&args.drill.as_str()) {
        vec![args.drill.as_str()]
    } else {
        eprintln!(
            "fault-drill: no drill named {:?}; drills: {}, all",
            args.drill,
            drills::ALL.join(", ")
        );
        return ExitCode::from(2);
    };
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        eprintln!("fault-drill: cannot start a runtime");
        return ExitCode::from(2);
    };
    let mut passed = true;
    for name in names {
        match rt.block_on(drills::run(name, &bin, scale)) {
            Ok(report) => {
                print!("{}", report.table());
                passed &= report.passed();
            }
            Err(e) => {
                println!("== {name} ==\n  could not run: {e:#}");
                passed = false;
            }
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
