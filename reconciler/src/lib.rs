//! The reconciler's parts: reading op logs (folders or a JetStream stream),
//! planning (failovers, candidates, verdicts), replaying, the checkpoint,
//! and the reports. `main.rs` wires them to the command line.

pub mod apply;
pub mod checkpoint;
pub mod cli;
pub mod owners;
pub mod plan;
pub mod report;
pub mod source;
