//! The typed, validated configuration: what the router and reconciler run on.
//! Values here are checked; code that reads them need not check again.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// A region's name as declared under `regions:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionName(pub Arc<str>);

impl RegionName {
    pub fn new(s: &str) -> Self {
        RegionName(Arc::from(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A share of traffic from 0 to 100% in steps of 0.1%, kept in tenths of a
/// percent so that it compares and hashes exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Percent(u16);

impl Percent {
    pub const ZERO: Percent = Percent(0);
    pub const FULL: Percent = Percent(1000);

    /// `None` when over 1000 tenths (100%).
    pub fn from_tenths(t: u16) -> Option<Self> {
        (t <= 1000).then_some(Percent(t))
    }

    /// A percentage such as `12.5`; `None` when outside 0–100 or finer than 0.1.
    pub fn from_f64(v: f64) -> Option<Self> {
        if !v.is_finite() || !(0.0..=100.0).contains(&v) {
            return None;
        }
        let tenths = (v * 10.0).round();
        ((v * 10.0 - tenths).abs() < 1e-6).then_some(Percent(tenths as u16))
    }

    pub fn tenths(self) -> u16 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 10.0
    }

    /// As JSON: a whole number when it is one (`20`), else one decimal (`12.5`).
    pub fn to_json_number(self) -> serde_json::Number {
        if self.0.is_multiple_of(10) {
            serde_json::Number::from(self.0 / 10)
        } else {
            serde_json::Number::from_f64(self.as_f64()).unwrap_or_else(|| 0.into())
        }
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(10) {
            write!(f, "{}%", self.0 / 10)
        } else {
            write!(f, "{}.{}%", self.0 / 10, self.0 % 10)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub source: PathBuf,
    pub listen: Listen,
    pub admin: Option<Admin>,
    pub metrics: Option<Metrics>,
    pub state_dir: PathBuf,
    pub shutdown_grace: Duration,
    pub limits: Limits,
    /// In the order of the file.
    pub regions: Vec<Region>,
    pub routes: Vec<Route>,
    pub routing: Routing,
    pub consistency: Consistency,
    pub oplog: Oplog,
    pub synthetic: Option<Synthetic>,
    /// In the order of the file.
    pub ramps: Vec<Ramp>,
    pub safety: Safety,
    /// Fleet mode: shared ownership through etcd.
    pub etcd: Option<Etcd>,
    /// Peers whose `X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto`,
    /// `X-Real-IP` and geo header are believed; from anyone else they are
    /// dropped and the socket address is the client. Empty: nobody's.
    pub trusted_proxies: Vec<IpNet>,
    /// One JSON line per request, when set.
    pub access_log: Option<AccessLog>,
    /// Span export, when set (`traceparent` is propagated regardless).
    pub tracing: Option<Tracing>,
}

/// `coordination.etcd`: where a fleet of routers keeps owners and epochs.
#[derive(Debug, Clone)]
pub struct Etcd {
    /// `http://host:port` URLs.
    pub endpoints: Vec<String>,
    /// Key prefix, so several fleets can share one etcd.
    pub prefix: String,
    /// Lease of this router's membership (and leadership) key.
    pub lease_ttl: Duration,
    /// Without etcd contact this long, writes are refused: ownership cannot be confirmed.
    pub write_grace: Duration,
    /// This router's name in the fleet; default: from the state directory.
    pub edge_id: Option<String>,
}

impl Config {
    /// What is allowed but probably not meant: `switchyard check` prints
    /// these, and `run` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(h), true) = (&self.routing.geo.header, self.trusted_proxies.is_empty()) {
            out.push(format!(
                "routing.geo.header is {h}, but trusted_proxies is empty: the header is believed from no client, so residency rests on the CIDR table and the MaxMind database alone; list the CDN's addresses in trusted_proxies"
            ));
        }
        out
    }

    /// Whether `peer` is a trusted proxy.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }

    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name.as_str() == name)
    }

    /// The route a path takes: the longest matching prefix. Without one, the
    /// path belongs to [`Config::default_service`].
    pub fn route_for_path(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| path.starts_with(r.prefix.as_str()))
            .max_by_key(|r| r.prefix.len())
    }

    /// The first service any region declares.
    pub fn default_service(&self) -> Option<&str> {
        self.regions
            .iter()
            .flat_map(|r| r.services.iter())
            .next()
            .map(String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<Https>,
    /// HTTP/2 by prior knowledge (h2c) on the plain listener, beside HTTP/1.1.
    pub h2c: bool,
    /// HTTP/1 header names are passed on in the case they arrived in. Off
    /// (the default), they are passed on in canonical case (`Content-Type`;
    /// names not in the standard set lower case), which costs one header map
    /// per message instead of two; names are case-insensitive (RFC 9110).
    pub preserve_header_case: bool,
}

#[derive(Debug, Clone)]
pub struct Https {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    /// The environment variable holding the bearer token (at least 16 bytes).
    pub token_env: String,
    /// Allows the plain-HTTP admin API on a non-loopback address.
    pub allow_plaintext: bool,
}

/// The least a bearer token may hold: shorter ones are guessed.
pub const MIN_TOKEN_BYTES: usize = 16;

#[derive(Debug, Clone)]
pub struct Metrics {
    pub addr: SocketAddr,
    /// When set, `/metrics` wants `Authorization: Bearer` with this variable's token.
    pub token_env: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of the whole request header section.
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    /// Upper bound of one upstream attempt (connect plus response header).
    pub upstream_timeout: Duration,
    /// A request's whole header block, from its first byte.
    pub header_timeout: Duration,
    /// An idle connection between requests.
    pub keepalive_timeout: Duration,
    /// A request body that stops arriving (each wait for more of it): 408.
    pub body_timeout: Duration,
    /// Open client connections; beyond it new ones are refused at accept.
    /// Unset: what the process's open-files limit can hold, at most 10000
    /// (the router works it out at start).
    pub max_connections: Option<usize>,
    /// Requests one client connection may carry before it is closed.
    pub max_requests_per_connection: u32,
    /// Streams one HTTP/2 client connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// PING and SETTINGS frames one HTTP/2 client connection may send in a
    /// second; past it the connection is closed (a control-frame flood).
    pub h2_max_control_frames_per_sec: u32,
    /// A rate limit per client, so one client cannot spend a region's budget.
    pub per_client: Option<PerClient>,
}

/// `limits.per_client`.
#[derive(Debug, Clone, PartialEq)]
pub struct PerClient {
    pub rps: f64,
    pub burst: u32,
    pub key: ClientKey,
}

/// What tells clients apart for `limits.per_client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// The client address (after the trust boundary).
    Ip,
    /// A header's value (lowercased name), e.g. an API key.
    Header(String),
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_header_count: 100,
            upstream_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: None,
            max_requests_per_connection: 10_000,
            h2_max_concurrent_streams: 100,
            h2_max_control_frames_per_sec: 100,
            per_client: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    Full,
    Lightweight,
    ReadOnly,
}

impl RegionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RegionKind::Full => "full",
            RegionKind::Lightweight => "lightweight",
            RegionKind::ReadOnly => "read-only",
        }
    }
}

/// A `host:port` endpoint; the host may be a name to resolve. Written
/// `https://host:port` (or in a region with `tls:`), it is reached over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Location {
    pub continent: Option<String>,
    pub country: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that mark a healthy endpoint down.
    pub fall: u32,
    /// Consecutive successes that mark a down endpoint up.
    pub rise: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            fall: 3,
            rise: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub rps: f64,
    pub burst: u32,
}

/// The Region Artifact: what a region is and is promised to be.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: RegionName,
    pub kind: RegionKind,
    pub endpoints: Vec<Endpoint>,
    pub location: Location,
    pub services: Vec<String>,
    /// The residency zone this region's data lives in.
    pub data_residency: Option<String>,
    pub health: Health,
    pub rate_limit: Option<RateLimit>,
    pub dial: Percent,
    /// How its endpoints are reached over TLS (`None`: defaults for
    /// `https://` endpoints, plain HTTP for the others).
    pub tls: Option<UpstreamTls>,
    pub protocol: Protocol,
    /// How many requests it may have in flight from this router.
    pub concurrency: Concurrency,
}

/// `regions.X.tls`: verification is on unless `verify: false` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent and verified; default: the endpoint's host.
    pub sni: Option<String>,
    /// A PEM bundle of the CAs to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    pub verify: bool,
    /// The client certificate chain and key presented to the region (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// `regions.X.protocol`: the HTTP version spoken to a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    H1,
    /// HTTP/2 only: negotiated by ALPN over TLS, prior knowledge (h2c) in the clear.
    H2,
    /// HTTP/2 where ALPN offers it, else HTTP/1.1; plain endpoints speak HTTP/1.1.
    #[default]
    Auto,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::H1 => "h1",
            Protocol::H2 => "h2",
            Protocol::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    pub service: String,
    /// Overrides read/write classification by method.
    pub class: Option<RequestClass>,
    /// Whether `Upgrade: websocket` is passed on (else answered 400).
    pub websocket: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Weighted,
    Geo,
    Latency,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Weighted => "weighted",
            Policy::Geo => "geo",
            Policy::Latency => "latency",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Routing {
    pub policy: Policy,
    /// Weight per region; regions not named weigh 0 when any weight is given,
    /// and all weigh 1 when none is.
    pub weights: BTreeMap<RegionName, u32>,
    pub geo: Geo,
    /// Country code → residency zone.
    pub residency: BTreeMap<String, String>,
    pub latency: LatencyTuning,
    /// Retries allowed as a share of requests (0.2 = 20%).
    pub retry_budget: f64,
    pub outlier: Outlier,
    /// Hedged reads: a second try when the first has not answered in time.
    pub hedge: Option<Hedge>,
    /// The longest one upstream try may take (connect to whole response header).
    pub try_timeout: Option<Duration>,
    /// Below this share of healthy regions serving a service, its reads
    /// ignore health (panic mode).
    pub panic_threshold: Percent,
}

/// `routing.hedge`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hedge {
    pub after: HedgeAfter,
    /// Hedges per read (the tries beyond the first).
    pub max: u32,
}

/// When a read is hedged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeAfter {
    Fixed(Duration),
    /// The first region's recent 95th percentile.
    P95,
}

/// `regions.X.max_inflight` or `regions.X.adaptive_concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Concurrency {
    #[default]
    Unlimited,
    Fixed(usize),
    Adaptive(Adaptive),
}

/// A gradient concurrency limit, moved by the region's measured latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    pub min: usize,
    pub max: usize,
    pub initial: usize,
    /// Latency above the best seen by more than this factor cuts the limit.
    pub tolerance: f64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            min: 4,
            max: 1000,
            initial: 20,
            tolerance: 1.5,
        }
    }
}

impl Routing {
    pub fn weight(&self, region: &RegionName) -> u32 {
        if self.weights.is_empty() {
            1
        } else {
            self.weights.get(region).copied().unwrap_or(0)
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Geo {
    /// CIDR → country code, most specific first at lookup time.
    pub networks: Vec<(IpNet, String)>,
    pub mmdb: Option<PathBuf>,
    /// A trusted header set by a CDN in front, carrying the country code.
    pub header: Option<String>,
    /// Country, continent or `default` → ordered region preference.
    pub prefer: BTreeMap<String, Vec<RegionName>>,
}

#[derive(Debug, Clone, Copy)]
pub struct LatencyTuning {
    /// Weight of a new sample in the moving average.
    pub ewma_alpha: f64,
    /// Scores within this factor of the best count as equally fast.
    pub tolerance: f64,
}

impl Default for LatencyTuning {
    fn default() -> Self {
        LatencyTuning {
            ewma_alpha: 0.3,
            tolerance: 1.2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Consistency {
    pub default_class: String,
    /// Class name → the replica lag bound it accepts and its fallback.
    pub classes: BTreeMap<String, FreshnessClass>,
    pub partition: PartitionKey,
    pub default_owner: Option<RegionName>,
    pub owners: BTreeMap<String, RegionName>,
    pub idempotency: Idempotency,
    /// How long the edge remembers an idempotency key it has seen.
    pub idempotency_window: Duration,
    /// The most idempotency keys the edge remembers; the oldest finished go first.
    pub idempotency_max_keys: usize,
    /// Partition → the residency zone its data must stay in.
    pub partition_residency: BTreeMap<String, String>,
    pub promotion: Promotion,
    pub auto_promote: Option<AutoPromote>,
    /// The environment variable holding the read-your-writes signing key.
    pub ryw_key_env: String,
    /// What a read does when its token proves its own write may be missing
    /// on a partition's new owner.
    pub repair_on_read: RepairOnRead,
}

/// `consistency.repair_on_read`: a read whose read-your-writes token names an
/// older epoch and a position the new owner had not applied when promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepairOnRead {
    /// Served as it is.
    #[default]
    Off,
    /// Served, marked `X-Switchyard-Write-Pending: <op id>`.
    Flag,
    /// The client's write is replayed to the new owner from the op log first.
    Replay,
}

impl RepairOnRead {
    pub fn as_str(self) -> &'static str {
        match self {
            RepairOnRead::Off => "off",
            RepairOnRead::Flag => "flag",
            RepairOnRead::Replay => "replay",
        }
    }
}

/// What happens to a read when no replica is fresh enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Read from the partition's owner.
    Owner,
    /// Wait up to the class's `wait` for a replica's lag to fall, then the owner.
    Wait,
    /// Serve the least-lagged replica, marked `X-Switchyard-Stale`.
    Stale,
    /// `503` with `Retry-After`.
    Reject,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Owner => "owner",
            Fallback::Wait => "wait",
            Fallback::Stale => "stale",
            Fallback::Reject => "reject",
        }
    }
}

/// A freshness class: the replica lag a read accepts, and what to do when
/// no replica is that fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessClass {
    pub bound: Duration,
    pub fallback: Fallback,
    /// With `fallback: wait`, the longest wait.
    pub wait: Duration,
}

impl FreshnessClass {
    pub fn bounded(bound: Duration) -> Self {
        FreshnessClass {
            bound,
            fallback: Fallback::Owner,
            wait: Duration::from_millis(500),
        }
    }
}

/// Rules for a manual promotion.
#[derive(Debug, Clone, Copy)]
pub struct Promotion {
    /// A target lagging more than this is refused unless forced.
    pub max_lag: Duration,
    /// A target that lacks more acknowledged writes than this (the op log's
    /// writes above its applied position) is refused unless forced.
    pub max_writes_at_risk: Option<u64>,
}

impl Default for Promotion {
    fn default() -> Self {
        Promotion {
            max_writes_at_risk: None,
            max_lag: Duration::from_secs(5),
        }
    }
}

/// Automatic promotion: when the owner has been unhealthy for `after`,
/// promote the least-lagged eligible full region lagging at most `max_lag`.
#[derive(Debug, Clone, Copy)]
pub struct AutoPromote {
    pub after: Duration,
    pub max_lag: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct PartitionKey {
    pub header: Option<String>,
    /// 0-based segment of the path (after the leading `/`).
    pub path_segment: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    Generate,
    Require,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Batch,
    Off,
}

#[derive(Debug, Clone)]
pub struct Oplog {
    pub fsync: Fsync,
    /// Bodies larger than this are logged by hash and are not replayable.
    pub max_body_bytes: usize,
    /// A segment is sealed at this size.
    pub segment_bytes: u64,
    /// Sealed segments older than this are deleted (`None`: kept).
    pub retain_age: Option<Duration>,
    /// Sealed segments beyond this total are deleted, oldest first.
    pub retain_bytes: Option<u64>,
    /// Records waiting for the writer; writes wait when it is full.
    pub queue: usize,
    /// Fleet sink: NATS JetStream.
    pub nats: Option<Nats>,
    /// The most bytes of sealed segments kept for a sink that has not
    /// forwarded them (NATS away): past it the oldest go, and a gap record
    /// says which records the sink never had.
    pub max_backlog_bytes: u64,
}

impl Default for Oplog {
    fn default() -> Self {
        Oplog {
            fsync: Fsync::Batch,
            max_body_bytes: 1 << 20,
            segment_bytes: 64 << 20,
            retain_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retain_bytes: None,
            queue: 4096,
            nats: None,
            max_backlog_bytes: 1 << 30,
        }
    }
}

/// Where the op log is published in fleet mode.
#[derive(Debug, Clone)]
pub struct Nats {
    pub url: String,
    pub stream: String,
}

impl Nats {
    /// The subject records are published on.
    pub fn subject(&self) -> String {
        format!("{}.records", self.stream.to_lowercase())
    }
}

/// The marker that lets synthetic traffic reach a region in its synthetic stage.
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub header: String,
    /// The environment variable holding the shared token.
    pub token_env: String,
}

/// One step of a ramp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RampStep {
    /// Real dial 0; only requests with the synthetic marker reach the region.
    Synthetic,
    /// A real dial.
    Real(Percent),
}

impl RampStep {
    /// The real dial this step sets.
    pub fn dial(self) -> Percent {
        match self {
            RampStep::Synthetic => Percent::ZERO,
            RampStep::Real(p) => p,
        }
    }
}

impl fmt::Display for RampStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RampStep::Synthetic => f.write_str("synthetic"),
            RampStep::Real(p) => write!(f, "{p}"),
        }
    }
}

/// What must hold, on the ramping region against the others, for a step to advance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gates {
    /// Share of the region's answers that may be errors (5xx or no answer).
    pub max_error_rate: Option<f64>,
    /// The region's p99 over the others' p99.
    pub max_p99_ratio: Option<f64>,
    /// Error-budget burn rate: error rate over `1 - slo`.
    pub max_burn_rate: Option<f64>,
    pub slo: f64,
    /// Requests the region must have answered in a step before a gate judges it.
    pub min_requests: u64,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            max_error_rate: Some(0.01),
            max_p99_ratio: None,
            max_burn_rate: None,
            slo: 0.999,
            min_requests: 1,
        }
    }
}

/// Mirroring of real reads to the ramping region during its synthetic stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Shadow {
    pub percent: Percent,
    /// Compare a hash of the bodies as well as the status classes.
    pub compare_body: bool,
    /// Headers never copied to the shadow (lowercased), besides
    /// `Authorization` and `Cookie`, which never are.
    pub strip_headers: Vec<String>,
    /// Shadow requests in flight at once; beyond it a read is not mirrored.
    pub max_inflight: usize,
}

#[derive(Debug, Clone)]
pub struct Ramp {
    pub name: String,
    pub region: RegionName,
    pub steps: Vec<RampStep>,
    pub hold: Duration,
    pub gates: Gates,
    /// How often a halted ramp steps the dial down.
    pub step_down_every: Duration,
    pub shadow: Option<Shadow>,
}

/// Interlocks that refuse an admin change breaking them.
#[derive(Debug, Clone, Copy)]
pub struct Safety {
    /// Regions that must stay serving (healthy, not drained, dial above 0).
    pub min_serving_regions: usize,
    /// The most a region's dial may move within `dial_step_interval`.
    pub max_dial_step: Option<Percent>,
    pub dial_step_interval: Duration,
    /// Refuse a change that leaves a partition without exactly one serving owner.
    pub single_owner: bool,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            min_serving_regions: 1,
            max_dial_step: None,
            dial_step_interval: Duration::from_secs(60),
            single_owner: true,
        }
    }
}

/// Passive outlier detection: brownout ejection from live traffic.
#[derive(Debug, Clone, Copy)]
pub struct Outlier {
    pub enabled: bool,
    /// How often the detector looks, and the window it judges over.
    pub interval: Duration,
    pub window: Duration,
    /// Failures in a row (5xx or no answer) that eject.
    pub consecutive_failures: u32,
    /// Error rate over the window that ejects (with `min_requests`).
    pub max_error_rate: f64,
    pub min_requests: u64,
    /// Slow, not dead: mean latency over this factor of the others' median…
    pub slow_ratio: f64,
    /// …and at least this much above it.
    pub slow_min_excess: Duration,
    /// First ejection time; each repeat adds as much again, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this share of regions is ejected at once (at least one may be).
    pub max_ejected_percent: u8,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            enabled: true,
            interval: Duration::from_millis(250),
            window: Duration::from_secs(1),
            consecutive_failures: 5,
            max_error_rate: 0.5,
            min_requests: 10,
            slow_ratio: 3.0,
            slow_min_excess: Duration::from_millis(200),
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
}

/// `access_log: { path | stdout, format: json, include_query, buffer }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub target: AccessLogTarget,
    /// Whether the logged path keeps its query string (it may carry secrets).
    pub include_query: bool,
    /// Lines held for the writer; a full buffer drops lines (counted).
    pub buffer: usize,
}

/// `tracing: { otlp, sample, service_name }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// The OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub otlp: String,
    /// The share of new traces (no sampled parent) that are recorded.
    pub sample: f64,
    pub service_name: String,
}
