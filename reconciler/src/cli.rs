//! The command line of `switchyard-reconcile`, in the library so that the
//! package's man page and completions are made from the same definition.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-reconcile",
    about = "Replay lost writes after a failover and report every divergence"
)]
pub struct Args {
    /// A router's op log folder, or its state_dir (repeat for several routers).
    #[arg(long = "oplog", value_name = "DIR")]
    pub oplogs: Vec<PathBuf>,
    /// Read the records from this NATS server's JetStream instead.
    #[arg(long, value_name = "URL", requires = "stream")]
    pub nats: Option<String>,
    /// The JetStream stream the routers publish to (oplog.nats.stream).
    #[arg(long, value_name = "NAME", requires = "nats")]
    pub stream: Option<String>,
    /// The router's config (regions and their endpoints, the partition header).
    #[arg(long, value_name = "F")]
    pub config: PathBuf,
    /// Replay the safe writes; without it, a dry run that sends nothing.
    #[arg(long)]
    pub apply: bool,
    /// Where to write the report: .json, .md or .html (repeat for several).
    #[arg(long, value_name = "FILE")]
    pub report: Vec<PathBuf>,
    /// Replays per second at most.
    #[arg(long, default_value_t = 20.0, value_name = "N")]
    pub rate: f64,
    /// The current owners from this ownership file (default: etcd in fleet
    /// mode, else ownership.json in the config's state_dir).
    #[arg(long, value_name = "FILE")]
    pub ownership: Option<PathBuf>,
    /// Progress of an --apply run, so an interrupted one resumes
    /// (default: reconcile.checkpoint in the first --oplog folder).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
}
