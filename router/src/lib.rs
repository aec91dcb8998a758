//! The Switchyard edge router: classifies each request, decides which region
//! serves it, and forwards it there on pingora. Decision code takes plain
//! inputs so tests and benches run it without sockets; only `proxy` touches
//! pingora's session.

pub mod admin;
pub mod app;
pub mod classify;
pub mod ctl;
pub mod decide;
pub mod demo;
pub mod error;
pub mod explain;
pub mod fleet;
pub mod fleet_ramps;
pub mod geo;
pub mod headers;
pub mod health;
pub mod hygiene;
pub mod idempotency;
pub mod live;
pub mod metrics;
pub mod oplog;
pub mod oplog_nats;
pub mod outlier;
pub mod ownership;
pub mod persist;
pub mod policy;
pub mod promote;
pub mod proxy;
pub mod ramp;
pub mod ratelimit;
pub mod reload;
pub mod resolve;
pub mod ryw;
pub mod safety;
pub mod shadow;
pub mod state;
pub mod stats;
pub mod topology;
