//! Fault drills: each starts everything it needs on loopback (reference
//! regions in-process, the real `switchyard` binary, etcd, NATS, nginx,
//! HAProxy), runs a constant request rate, injects one fault, and returns a
//! table of figures; a figure whose goal is 0 and is not fails the drill.
//!
//! Faults on the network path go through [`fault::proxy::FaultProxy`], a
//! TCP proxy in front of the thing cut off: `blackhole` forwards nothing
//! more and answers nothing (what a dropped-packet partition looks like
//! from either end), `reset` closes every connection and refuses new ones
//! (a dead process).

pub mod fault;
