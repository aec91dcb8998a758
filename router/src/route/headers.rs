//! Header names Switchyard reads or writes, parsed once: an insert by a
//! `HeaderName` is neither parsed nor copied per request.

/// Prefix of every header Switchyard owns; clients may not set them.
pub(crate) const SWITCHYARD_PREFIX: &str = "x-switchyard-";
pub(crate) const REGION: http::HeaderName = http::HeaderName::from_static("x-switchyard-region");
/// The read-your-writes token: the one `X-Switchyard-*` header clients may send.
pub(crate) const RYW: http::HeaderName = http::HeaderName::from_static("x-switchyard-ryw");
pub(crate) const FENCING_TOKEN: http::HeaderName = http::HeaderName::from_static("x-fencing-token");
pub(crate) const FRESHNESS: http::HeaderName = http::HeaderName::from_static("x-freshness");
pub(crate) const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
pub(crate) const FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
/// A gRPC call's deadline, as the client sends it and as the region is told what is left of it.
pub(crate) const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
/// A region's mark on a write it refused for carrying an old fencing token.
pub(crate) const FENCED: http::HeaderName = http::HeaderName::from_static("x-fenced");
/// On a read served beyond its freshness bound (`stale` fallback): the replica's lag.
pub(crate) const STALE: http::HeaderName = http::HeaderName::from_static("x-switchyard-stale");
/// The owner's commit position for a write, when the region sends one.
pub(crate) const COMMIT_POSITION: http::HeaderName =
    http::HeaderName::from_static("x-commit-position");
/// On a read whose own write the partition's new owner may lack (repair on
/// read flagged it, or could not replay it): that write's op id.
pub(crate) const WRITE_PENDING: http::HeaderName =
    http::HeaderName::from_static("x-switchyard-write-pending");
/// On a read served after its own write was replayed to the new owner: that
/// write's op id.
pub(crate) const REPLAYED_ON_READ: http::HeaderName =
    http::HeaderName::from_static("x-switchyard-replayed-on-read");
