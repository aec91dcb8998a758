//! The pieces every fault drill uses, and the drills.

pub mod drills;
pub mod load;
pub mod overload;
pub mod peers;
pub mod procs;
pub mod proxy;
pub mod report;

pub use report::{Figure, Report};

/// How long and how hard a drill runs.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Requests a second the load sends, whatever the answers take.
    pub rate: u32,
    /// Seconds of load before the fault, and after it.
    pub phase: std::time::Duration,
    /// CI's quick mode: shorter phases, no peers.
    pub quick: bool,
}

impl Scale {
    pub fn quick() -> Scale {
        Scale {
            rate: 200,
            phase: std::time::Duration::from_secs(2),
            quick: true,
        }
    }

    pub fn full() -> Scale {
        Scale {
            rate: 1000,
            phase: std::time::Duration::from_secs(10),
            quick: false,
        }
    }
}
