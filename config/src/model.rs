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

/// A share of traffic, 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u8);

impl Percent {
    pub const FULL: Percent = Percent(100);
    /// `None` when over 100.
    pub fn new(v: u8) -> Option<Self> {
        (v <= 100).then_some(Percent(v))
    }
    pub fn get(self) -> u8 {
        self.0
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
}

impl Config {
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
    /// The environment variable holding the bearer token.
    pub token_env: String,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of the whole request header section.
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    /// Upper bound of one upstream attempt (connect plus response header).
    pub upstream_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_header_count: 100,
            upstream_timeout: Duration::from_secs(30),
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

/// A `host:port` endpoint; the host may be a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
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
}

#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    pub service: String,
    /// Overrides read/write classification by method.
    pub class: Option<RequestClass>,
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
    /// Class name → the replica lag bound it accepts.
    pub classes: BTreeMap<String, Duration>,
    pub partition: PartitionKey,
    pub default_owner: Option<RegionName>,
    pub owners: BTreeMap<String, RegionName>,
    pub idempotency: Idempotency,
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
}
