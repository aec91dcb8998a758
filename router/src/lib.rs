//! The Switchyard edge router: classifies each request, decides which region
//! serves it, and forwards it there on pingora.
//!
//! The crate is in layers; each uses only the ones listed before it
//! (`scripts/check-layers` enforces it, docs/architecture.md draws it):
//!
//! - `metrics`: the Prometheus names, for every layer.
//! - `route`: the decision, from plain inputs (a header view, the
//!   topology, `now`) to plain values: no tokio, no files, no sockets.
//! - `store`: what is kept on disk: traffic state, ownership, the op log.
//! - `fleet`: etcd I/O for fleet mode, returning data.
//! - `control`: the router's shared state and the loops that change it
//!   (health, DNS, ramps, brownout ejection, promotion, reload).
//! - `proxy`: the one `impl ProxyHttp`; the only code that sees pingora's session.
//! - `admin`: the admin API and the status document.
//! - `app`: builds all of it and runs it until a signal.
#![warn(unreachable_pub)]

mod admin;
mod app;
mod control;
mod fleet;
mod metrics;
mod proxy;
mod route;
mod store;

pub use app::open_files::{raise_open_files, OpenFiles};
pub use app::systemd::READY_FD_ENV;
pub use app::{App, Bound};

/// The decision code, for benches and property tests: no sockets needed.
pub mod decision {
    pub use crate::route::classify::{classify, Classified};
    pub use crate::route::decide::{decide, decide_with_fallback, take_rate_tokens, Decision};
    pub use crate::route::ratelimit::{nanos, TokenBucket};
    pub use crate::route::topology::{Secrets, Topology};
}

/// Read-your-writes tokens, for the token's fuzz target.
pub mod ryw {
    pub use crate::route::ryw::{Mark, Signer, Token};
}

/// The op log writer and the scan behind a promotion's dry run, for their benches.
pub mod oplog {
    pub use crate::store::oplog::OpLog;
    pub use crate::store::oplog_scan::{acked_writes, Acked, AckedScan, AckedScanner, Wanted};
}
