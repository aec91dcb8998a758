//! The routing decision, from plain inputs to plain values: what a request
//! is (classification), which regions may serve it and in what order (rules,
//! policies, dials, fallbacks), and the bookkeeping it reads (topology and
//! live region state, rate buckets, read-your-writes tokens, header hygiene).
//! Nothing here touches tokio, etcd or pingora's session, nor a file but
//! when a topology is built (the geo database, a region's TLS material);
//! the clock is passed in. `explain` runs the same code and changes nothing.

pub(crate) mod classify;
pub(crate) mod concurrency;
pub(crate) mod decide;
pub(crate) mod explain;
pub(crate) mod fields;
pub(crate) mod geo;
pub(crate) mod headers;
pub(crate) mod hygiene;
pub(crate) mod ids;
pub(crate) mod live;
pub(crate) mod owners;
pub(crate) mod policy;
pub(crate) mod ratelimit;
pub(crate) mod reject;
pub(crate) mod ryw;
pub(crate) mod shadow;
pub(crate) mod stats;
pub(crate) mod topology;
pub(crate) mod trace;
pub(crate) mod upstream;
