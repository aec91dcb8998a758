//! Black-box tests: the real `switchyard` binary in front of reference regions,
//! all on loopback with free ports.

mod access_log;
mod answers;
mod at_risk;
mod cli;
mod consistency;
mod console;
mod desync;
mod fleet;
mod geo;
mod grpc;
mod hygiene;
mod idle;
mod limits;
mod monitoring;
mod oplog_nats;
mod ops;
mod overload;
mod reconcile;
mod repair;
mod request_sends;
mod routing;
mod spans;
mod support;
mod tls;
mod traffic;
mod transport;
mod upgrade;
mod websocket;
