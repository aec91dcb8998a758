//! The per-request state the proxy's phases carry.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use switchyard_config::RequestClass;

use crate::control::idempotency::KeyGuard;
use crate::control::{InflightGuard, RouterState};
use crate::proxy::write::OpInFlight;
use crate::route::decide::Order;
use crate::route::fields::Present;
use crate::route::live::RegionCount;
use crate::route::reject::Reject;
use crate::route::shadow::ShadowPlan;
use crate::route::topology::{RegionIdx, Topology};
use crate::route::trace::TraceContext;

/// Per-request state, carried through the phases.
pub(crate) struct Ctx {
    pub(super) topo: Arc<Topology>,
    pub(super) started: Instant,
    pub(super) reject: Option<Reject>,
    pub(super) class: RequestClass,
    /// Regions to try, best first; `next` indexes the one to try next.
    pub(super) order: Order,
    pub(super) next: usize,
    pub(super) region: Option<RegionIdx>,
    pub(super) addr: Option<SocketAddr>,
    /// Set once the one retry this request may have is spent.
    pub(super) retried: bool,
    /// Set when a phase of ours asked pingora to retry this attempt.
    pub(super) retry_requested: bool,
    pub(super) upstream_started: Option<Instant>,
    /// The current attempt got a response header.
    pub(super) answered: bool,
    /// Carries the synthetic marker with the right token.
    pub(super) synthetic: bool,
    /// A write's partition epoch: its fencing token.
    pub(super) epoch: u64,
    /// A write's partition, for its read-your-writes token.
    pub(super) partition: Option<String>,
    /// Served by a replica beyond the read's bound (`stale` fallback): its lag.
    pub(super) stale_ms: Option<u64>,
    /// A keyed write's hold on its idempotency key.
    pub(super) idempotency: Option<KeyGuard>,
    /// Counts this request on the region serving it.
    pub(super) region_inflight: Option<RegionCount>,
    /// A region was passed over for being at its concurrency limit.
    pub(super) at_limit: bool,
    /// Counts this request on the endpoint serving it.
    pub(super) endpoint_inflight: Option<crate::route::live::EndpointCount>,
    /// The read's service is in panic mode: health is ignored.
    pub(super) panic: bool,
    /// Set when this read is mirrored to a ramping region once answered.
    pub(super) shadow: Option<Box<ShadowPlan>>,
    /// Shadow targets this read's own candidate rules let it use.
    pub(super) shadow_ok: smallvec::SmallVec<[RegionIdx; 2]>,
    /// A write's record in the op log, until its outcome is written.
    pub(super) op: Option<Box<OpInFlight>>,
    /// A read whose token is from an older epoch: repair on read judges it.
    pub(super) suspect: Option<Box<crate::control::repair::Suspect>>,
    /// What repair on read did, for the response's headers.
    pub(super) repair: Option<Box<crate::control::repair::Repair>>,
    /// What the access log and the trace say about the request.
    pub(super) seen: Seen,
    /// The fields the request carries: found as it arrives, and kept up to
    /// date through the router's own changes to its header until it is
    /// forwarded (see `route::fields`).
    pub(super) present: Present,
    _inflight: InflightGuard,
}

/// Facts gathered along the way for the access log and the request's span.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) client: Option<IpAddr>,
    pub(crate) trace: Option<TraceContext>,
    /// The span of the current upstream attempt (what the region sees as parent).
    pub(crate) attempt_span: Option<[u8; 8]>,
    pub(crate) upstream_ms: Option<f64>,
    /// A read's freshness bound.
    pub(crate) freshness_ms: Option<u64>,
    pub(crate) ryw_used: bool,
    /// The read waited for its replica (`wait` fallback).
    pub(crate) waited: bool,
    pub(crate) idempotency: Option<&'static str>,
    pub(crate) grpc_status: Option<u16>,
    /// A WebSocket upgrade the route allows, and whether the region took it (101).
    pub(crate) websocket: bool,
    pub(crate) websocket_open: Option<RegionCount>,
    /// A gRPC call, and its deadline from `grpc-timeout`.
    pub(crate) grpc: bool,
    pub(crate) deadline: Option<Instant>,
    /// Upstream attempts, as spans (only for sampled requests with export on).
    pub(crate) attempt_spans: Vec<crate::control::spans::AttemptSpan>,
    /// The reason of the router's own answer, once it is written.
    pub(crate) refused: Option<std::borrow::Cow<'static, str>>,
}

impl Ctx {
    pub(super) fn new(state: &Arc<RouterState>) -> Self {
        Ctx {
            topo: state.topology.load_full(),
            started: Instant::now(),
            reject: None,
            class: RequestClass::Read,
            order: Order::new(),
            next: 0,
            region: None,
            addr: None,
            retried: false,
            retry_requested: false,
            upstream_started: None,
            answered: false,
            synthetic: false,
            epoch: 0,
            partition: None,
            stale_ms: None,
            idempotency: None,
            region_inflight: None,
            shadow: None,
            shadow_ok: smallvec::SmallVec::new(),
            op: None,
            suspect: None,
            at_limit: false,
            endpoint_inflight: None,
            panic: false,
            repair: None,
            seen: Seen::default(),
            present: Present::ANY,
            _inflight: InflightGuard::new(state),
        }
    }
}
