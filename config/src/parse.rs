//! From a YAML node tree to the typed [`Config`]: every key read, every value
//! checked, every problem collected with its position.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use crate::diag::{self, found, Diags, Fields};
use crate::model::*;
use crate::traffic::{self, positive};
use crate::yaml::{Node, Pos};

const TOP_KEYS: &[&str] = &[
    "listen",
    "admin",
    "metrics",
    "state_dir",
    "shutdown_grace",
    "limits",
    "regions",
    "routes",
    "routing",
    "consistency",
    "oplog",
    "synthetic",
    "ramps",
    "safety",
    "coordination",
    "trusted_proxies",
    "access_log",
    "tracing",
];

/// Builds the config; `base` is the folder relative paths are resolved against.
pub fn config(root: &Node, source: &Path, base: &Path, d: &mut Diags) -> Option<Config> {
    let f = Fields::new(root, "", TOP_KEYS, d)?;
    let listen = f.require("listen", d).and_then(|n| listen(n, base, d));
    let admin = f.get("admin").and_then(|n| admin(n, d));
    let metrics = f.get("metrics").and_then(|n| metrics(n, d));
    let state_dir = f
        .get("state_dir")
        .and_then(|n| diag::string(n, "state_dir", d))
        .map_or_else(|| base.join("var/switchyard"), |s| base.join(s));
    let shutdown_grace = f
        .get("shutdown_grace")
        .and_then(|n| diag::duration(n, "shutdown_grace", d))
        .unwrap_or(Duration::from_secs(5));
    let limits = f
        .get("limits")
        .map_or_else(Limits::default, |n| limits(n, d));
    let regions = match f.require("regions", d) {
        Some(n) => regions(n, base, d),
        None => Vec::new(),
    };
    let routes = f.get("routes").map_or_else(Vec::new, |n| routes(n, d));
    let routing = f.require("routing", d).and_then(|n| routing(n, base, d));
    let consistency = consistency(f.get("consistency"), d);
    let oplog = oplog(f.get("oplog"), d);
    let synthetic = f.get("synthetic").and_then(|n| traffic::synthetic(n, d));
    let ramps = f
        .get("ramps")
        .map_or_else(Vec::new, |n| traffic::ramps(n, d));
    let safety = f
        .get("safety")
        .map_or_else(Safety::default, |n| traffic::safety(n, d));
    let etcd = f
        .get("coordination")
        .and_then(|n| crate::consistency::coordination(n, d));
    let trusted_proxies = f
        .get("trusted_proxies")
        .map_or_else(Vec::new, |n| trusted_proxies(n, d));
    let access_log = f
        .get("access_log")
        .and_then(|n| crate::transport::access_log(n, base, d));
    let tracing = f
        .get("tracing")
        .and_then(|n| crate::transport::tracing(n, d));

    let cfg = Config {
        source: source.to_path_buf(),
        listen: listen?,
        admin,
        metrics,
        state_dir,
        shutdown_grace,
        limits,
        regions,
        routes,
        routing: routing?,
        consistency,
        oplog,
        synthetic,
        ramps,
        safety,
        etcd,
        trusted_proxies,
        access_log,
        tracing,
    };
    crate::validate::cross_check(&cfg, root, d);
    Some(cfg)
}

/// `trusted_proxies: [CIDR, …]`: the peers whose forwarding headers count.
fn trusted_proxies(n: &Node, d: &mut Diags) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (s, pos) in diag::strings(n, "trusted_proxies", d) {
        match cidr(&s) {
            Some(net) => out.push(net),
            None => d.error(
                pos,
                format!("`trusted_proxies` entries must be CIDR blocks or addresses such as 10.0.0.0/8, found {s:?}"),
            ),
        }
    }
    out
}

/// A CIDR block, or a single address as its own /32 or /128.
fn cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn listen(n: &Node, base: &Path, d: &mut Diags) -> Option<Listen> {
    let f = Fields::new(
        n,
        "listen",
        &["http", "https", "h2c", "preserve_header_case"],
        d,
    )?;
    let http = f
        .get("http")
        .and_then(|n| diag::socket_addr(n, "listen.http", d));
    let https = f.get("https").and_then(|n| {
        let h = Fields::new(n, "listen.https", &["addr", "cert", "key"], d)?;
        let addr = h
            .require("addr", d)
            .and_then(|n| diag::socket_addr(n, "listen.https.addr", d));
        let cert = h
            .require("cert", d)
            .and_then(|n| diag::string(n, "listen.https.cert", d));
        let key = h
            .require("key", d)
            .and_then(|n| diag::string(n, "listen.https.key", d));
        Some(Https {
            addr: addr?,
            cert: base.join(cert?),
            key: base.join(key?),
        })
    });
    if f.get("http").is_none() && f.get("https").is_none() {
        d.error(n.pos, "`listen` needs `http`, `https` or both");
    }
    let h2c = f
        .get("h2c")
        .and_then(|n| diag::boolean(n, "listen.h2c", d))
        .unwrap_or(false);
    if let (true, None) = (h2c, http) {
        if let Some(n) = f.get("h2c") {
            d.error(
                n.pos,
                "`listen.h2c` enables HTTP/2 on the plain listener, but `listen.http` is not set",
            );
        }
    }
    let preserve_header_case = f
        .get("preserve_header_case")
        .and_then(|n| diag::boolean(n, "listen.preserve_header_case", d))
        .unwrap_or(false);
    Some(Listen {
        http,
        https,
        h2c,
        preserve_header_case,
    })
}

fn admin(n: &Node, d: &mut Diags) -> Option<Admin> {
    let f = Fields::new(n, "admin", &["addr", "token_env", "allow_plaintext"], d)?;
    let addr_node = f.require("addr", d);
    let addr = addr_node.and_then(|n| diag::socket_addr(n, "admin.addr", d));
    let token_env = f
        .get("token_env")
        .and_then(|n| diag::string(n, "admin.token_env", d))
        .unwrap_or_else(|| "SWITCHYARD_ADMIN_TOKEN".into());
    let allow_plaintext = f
        .get("allow_plaintext")
        .and_then(|n| diag::boolean(n, "admin.allow_plaintext", d))
        .unwrap_or(false);
    if let (Some(a), Some(node)) = (addr, addr_node) {
        if !a.ip().is_loopback() && !allow_plaintext {
            d.error(
                node.pos,
                format!(
                    "`admin.addr` {a} is not a loopback address, and the admin API speaks plain HTTP: its bearer token would cross the network in the clear; listen on 127.0.0.1 (and reach it through a tunnel), or set `admin.allow_plaintext: true`"
                ),
            );
        }
    }
    Some(Admin {
        addr: addr?,
        token_env,
        allow_plaintext,
    })
}

fn metrics(n: &Node, d: &mut Diags) -> Option<Metrics> {
    let f = Fields::new(n, "metrics", &["addr", "token_env"], d)?;
    let addr = f
        .require("addr", d)
        .and_then(|n| diag::socket_addr(n, "metrics.addr", d))?;
    let token_env = f
        .get("token_env")
        .and_then(|n| diag::string(n, "metrics.token_env", d));
    Some(Metrics { addr, token_env })
}

fn limits(n: &Node, d: &mut Diags) -> Limits {
    let mut out = Limits::default();
    let Some(f) = Fields::new(
        n,
        "limits",
        &[
            "max_header_bytes",
            "max_header_count",
            "upstream_timeout",
            "header_timeout",
            "keepalive_timeout",
            "body_timeout",
            "max_connections",
            "max_requests_per_connection",
            "h2_max_concurrent_streams",
            "h2_max_control_frames_per_sec",
            "per_client",
        ],
        d,
    ) else {
        return out;
    };
    for (key, slot) in [
        ("header_timeout", &mut out.header_timeout),
        ("keepalive_timeout", &mut out.keepalive_timeout),
        ("body_timeout", &mut out.body_timeout),
    ] {
        if let Some(v) = f
            .get(key)
            .and_then(|n| positive(n, &format!("limits.{key}"), d))
        {
            *slot = v;
        }
    }
    if let Some(v) = f
        .get("max_connections")
        .and_then(|n| diag::integer(n, "limits.max_connections", 1, 10_000_000, d))
    {
        out.max_connections = Some(v as usize);
    }
    if let Some(v) = f.get("max_requests_per_connection").and_then(|n| {
        diag::integer(
            n,
            "limits.max_requests_per_connection",
            1,
            u64::from(u32::MAX),
            d,
        )
    }) {
        out.max_requests_per_connection = v as u32;
    }
    if let Some(v) = f
        .get("h2_max_concurrent_streams")
        .and_then(|n| diag::integer(n, "limits.h2_max_concurrent_streams", 1, 10_000, d))
    {
        out.h2_max_concurrent_streams = v as u32;
    }
    if let Some(v) = f
        .get("h2_max_control_frames_per_sec")
        .and_then(|n| diag::integer(n, "limits.h2_max_control_frames_per_sec", 10, 1_000_000, d))
    {
        out.h2_max_control_frames_per_sec = v as u32;
    }
    if let Some(n) = f.get("per_client") {
        out.per_client = per_client(n, d);
    }
    if let Some(v) = f
        .get("max_header_bytes")
        .and_then(|n| diag::integer(n, "limits.max_header_bytes", 1024, 1 << 20, d))
    {
        out.max_header_bytes = v as usize;
    }
    if let Some(v) = f
        .get("max_header_count")
        .and_then(|n| diag::integer(n, "limits.max_header_count", 1, 256, d))
    {
        out.max_header_count = v as usize;
    }
    if let Some(v) = f
        .get("upstream_timeout")
        .and_then(|n| diag::duration(n, "limits.upstream_timeout", d))
    {
        out.upstream_timeout = v;
    }
    out
}

/// `limits.per_client: { rps, burst, key: ip | header:NAME }`.
fn per_client(n: &Node, d: &mut Diags) -> Option<PerClient> {
    let f = Fields::new(n, "limits.per_client", &["rps", "burst", "key"], d)?;
    let rps = f
        .require("rps", d)
        .and_then(|n| diag::number(n, "limits.per_client.rps", 0.001, 1e9, d))?;
    let burst = match f.get("burst") {
        Some(n) => diag::integer(n, "limits.per_client.burst", 1, 1_000_000_000, d)? as u32,
        None => (rps.ceil() as u32).max(1),
    };
    let key = match f.get("key") {
        None => ClientKey::Ip,
        Some(n) => {
            let s = diag::string(n, "limits.per_client.key", d)?;
            match s.split_once(':') {
                None if s == "ip" => ClientKey::Ip,
                Some(("header", name)) if http_token(name.trim()) => {
                    ClientKey::Header(name.trim().to_ascii_lowercase())
                }
                _ => {
                    d.error(
                        n.pos,
                        format!(
                            "`limits.per_client.key` must be `ip` or `header:NAME`, found {s:?}"
                        ),
                    );
                    return None;
                }
            }
        }
    };
    Some(PerClient { rps, burst, key })
}

/// Whether `s` can be a header name.
fn http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

const REGION_KEYS: &[&str] = &[
    "type",
    "endpoints",
    "location",
    "services",
    "compliance",
    "health",
    "rate_limit",
    "dial",
    "tls",
    "protocol",
    "max_inflight",
    "adaptive_concurrency",
];

fn regions(n: &Node, base: &Path, d: &mut Diags) -> Vec<Region> {
    let Some(entries) = diag::map_entries(n, "regions", d) else {
        return Vec::new();
    };
    if entries.is_empty() {
        d.error(n.pos, "`regions` must declare at least one region");
    }
    entries
        .into_iter()
        .filter_map(|(name, key, node)| region(name, key.pos, node, base, d))
        .collect()
}

fn region(name: &str, pos: Pos, n: &Node, base: &Path, d: &mut Diags) -> Option<Region> {
    let path = format!("regions.{name}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        d.error(
            pos,
            format!("region name {name:?} may hold only letters, digits, `-` and `_`"),
        );
    }
    let f = Fields::new(n, &path, REGION_KEYS, d)?;
    let kind = f.require("type", d).and_then(|n| {
        diag::one_of(
            n,
            &f.child("type"),
            &[
                ("full", RegionKind::Full),
                ("lightweight", RegionKind::Lightweight),
                ("read-only", RegionKind::ReadOnly),
            ],
            d,
        )
    });
    let endpoints = f.require("endpoints", d).map_or_else(Vec::new, |n| {
        let list = diag::strings(n, &f.child("endpoints"), d);
        if list.is_empty() && diag::seq(n, "", &mut Diags::default()).is_some() {
            d.error(
                n.pos,
                format!("`{}` must list at least one endpoint", f.child("endpoints")),
            );
        }
        list.into_iter()
            .filter_map(|(s, p)| endpoint(&s, p, &f.child("endpoints"), d))
            .collect()
    });
    let location = f
        .get("location")
        .and_then(|n| location(n, &f.child("location"), d))
        .unwrap_or_default();
    let services: Vec<String> = f.require("services", d).map_or_else(Vec::new, |n| {
        diag::strings(n, &f.child("services"), d)
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    });
    let data_residency = f.get("compliance").and_then(|n| {
        let c = Fields::new(n, &f.child("compliance"), &["data_residency"], d)?;
        c.get("data_residency")
            .and_then(|n| diag::string(n, &c.child("data_residency"), d))
    });
    let health = f
        .get("health")
        .map_or_else(Health::default, |n| health(n, &f.child("health"), d));
    let rate_limit = f
        .get("rate_limit")
        .and_then(|n| rate_limit(n, &f.child("rate_limit"), d));
    let dial = f
        .get("dial")
        .and_then(|n| traffic::percent(n, &f.child("dial"), d))
        .unwrap_or(Percent::FULL);
    let tls = f
        .get("tls")
        .and_then(|n| crate::transport::upstream_tls(n, &f.child("tls"), base, d));
    let protocol = f
        .get("protocol")
        .and_then(|n| crate::transport::protocol(n, &f.child("protocol"), d))
        .unwrap_or_default();
    let concurrency = crate::overload::concurrency(&f, d);
    let mut endpoints = endpoints;
    if tls.is_some() {
        if let (Some(n), true) = (f.get("endpoints"), endpoints.iter().any(|e| e.plain_scheme)) {
            d.error(
                n.pos,
                format!("`{}` names an http:// endpoint, but the region has `tls:`: its endpoints are reached over TLS only", f.child("endpoints")),
            );
        }
        for e in &mut endpoints {
            e.endpoint.tls = true;
        }
    }
    let endpoints = endpoints.into_iter().map(|e| e.endpoint).collect();
    // A bad `type` is already reported; keep the region so that checks naming
    // it do not report it again as undeclared.
    Some(Region {
        name: RegionName::new(name),
        kind: kind.unwrap_or(RegionKind::Full),
        endpoints,
        location,
        services,
        data_residency,
        health,
        rate_limit,
        dial,
        tls,
        protocol,
        concurrency,
    })
}

/// An endpoint as written, and whether it said `http://` in so many words.
struct WrittenEndpoint {
    endpoint: Endpoint,
    plain_scheme: bool,
}

/// Parses `host:port` or `[v6]:port`, optionally after `https://` or `http://`.
pub fn parse_endpoint(s: &str) -> Option<Endpoint> {
    let (tls, s) = match (s.strip_prefix("https://"), s.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => (false, s),
    };
    let s = s.strip_suffix('/').unwrap_or(s);
    let bracketed = s.starts_with('[');
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok()?;
    let host_ok = !host.is_empty()
        && !host.contains(['/', ' ', '@'])
        && (!host.contains(':') || (bracketed && host.parse::<std::net::Ipv6Addr>().is_ok()));
    (host_ok && port != 0).then(|| Endpoint {
        host: host.to_string(),
        port,
        tls,
    })
}

fn endpoint(s: &str, pos: Pos, path: &str, d: &mut Diags) -> Option<WrittenEndpoint> {
    let e = parse_endpoint(s);
    if e.is_none() {
        d.error(
            pos,
            format!("`{path}` entries must be host:port (or https://host:port) with a port from 1 to 65535, found {s:?}"),
        );
    }
    e.map(|endpoint| WrittenEndpoint {
        endpoint,
        plain_scheme: s.starts_with("http://"),
    })
}

fn location(n: &Node, path: &str, d: &mut Diags) -> Option<Location> {
    let f = Fields::new(n, path, &["continent", "country", "lat", "lon"], d)?;
    let code = |key: &str, len: usize, d: &mut Diags| {
        f.get(key).and_then(|n| {
            let s = diag::string(n, &f.child(key), d)?;
            if s.len() != len || !s.bytes().all(|b| b.is_ascii_uppercase()) {
                d.error(
                    n.pos,
                    format!(
                        "`{}` must be a {len}-letter upper-case code, found {}",
                        f.child(key),
                        found(n)
                    ),
                );
                return None;
            }
            Some(s)
        })
    };
    let continent = code("continent", 2, d);
    let country = code("country", 2, d);
    let lat = f
        .get("lat")
        .and_then(|n| diag::number(n, &f.child("lat"), -90.0, 90.0, d));
    let lon = f
        .get("lon")
        .and_then(|n| diag::number(n, &f.child("lon"), -180.0, 180.0, d));
    Some(Location {
        continent,
        country,
        lat,
        lon,
    })
}

fn health(n: &Node, path: &str, d: &mut Diags) -> Health {
    let mut h = Health::default();
    let Some(f) = Fields::new(n, path, &["path", "interval", "timeout", "fall", "rise"], d) else {
        return h;
    };
    if let Some(p) = f
        .get("path")
        .and_then(|n| diag::string(n, &f.child("path"), d))
    {
        if p.starts_with('/') {
            h.path = p;
        } else if let Some(n) = f.get("path") {
            d.error(
                n.pos,
                format!("`{}` must start with `/`, found {p:?}", f.child("path")),
            );
        }
    }
    if let Some(v) = f
        .get("interval")
        .and_then(|n| positive(n, &f.child("interval"), d))
    {
        h.interval = v;
    }
    if let Some(v) = f
        .get("timeout")
        .and_then(|n| positive(n, &f.child("timeout"), d))
    {
        h.timeout = v;
    }
    if let Some(v) = f
        .get("fall")
        .and_then(|n| diag::integer(n, &f.child("fall"), 1, 100, d))
    {
        h.fall = v as u32;
    }
    if let Some(v) = f
        .get("rise")
        .and_then(|n| diag::integer(n, &f.child("rise"), 1, 100, d))
    {
        h.rise = v as u32;
    }
    h
}

fn rate_limit(n: &Node, path: &str, d: &mut Diags) -> Option<RateLimit> {
    let f = Fields::new(n, path, &["rps", "burst"], d)?;
    let rps = f
        .require("rps", d)
        .and_then(|n| diag::number(n, &f.child("rps"), 0.001, 10_000_000.0, d))?;
    let burst = f
        .get("burst")
        .and_then(|n| diag::integer(n, &f.child("burst"), 1, 10_000_000, d))
        .map_or_else(|| rps.ceil().max(1.0) as u32, |v| v as u32);
    Some(RateLimit { rps, burst })
}

fn routes(n: &Node, d: &mut Diags) -> Vec<Route> {
    let Some(entries) = diag::map_entries(n, "routes", d) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (prefix, key, value) in entries {
        let path = format!("routes.{prefix}");
        if !prefix.starts_with('/') {
            d.error(
                key.pos,
                format!("route prefix {prefix:?} must start with `/`"),
            );
            continue;
        }
        // `"/api": api` or `"/api": { service: api, class: write }`
        let (service, class, websocket) = if value.as_scalar().is_some() {
            (diag::string(value, &path, d), None, false)
        } else {
            let Some(f) = Fields::new(value, &path, &["service", "class", "websocket"], d) else {
                continue;
            };
            let service = f
                .require("service", d)
                .and_then(|n| diag::string(n, &f.child("service"), d));
            let class = f.get("class").and_then(|n| {
                diag::one_of(
                    n,
                    &f.child("class"),
                    &[("read", RequestClass::Read), ("write", RequestClass::Write)],
                    d,
                )
            });
            let websocket = f
                .get("websocket")
                .and_then(|n| diag::boolean(n, &f.child("websocket"), d))
                .unwrap_or(false);
            (service, class, websocket)
        };
        if let Some(service) = service {
            out.push(Route {
                prefix: prefix.to_string(),
                service,
                class,
                websocket,
            });
        }
    }
    out
}

fn routing(n: &Node, base: &Path, d: &mut Diags) -> Option<Routing> {
    let f = Fields::new(
        n,
        "routing",
        &[
            "policy",
            "weights",
            "geo",
            "residency",
            "latency",
            "retry_budget",
            "outlier",
            "hedge",
            "try_timeout",
            "panic_threshold",
        ],
        d,
    )?;
    let policy = f.require("policy", d).and_then(|n| {
        diag::one_of(
            n,
            "routing.policy",
            &[
                ("weighted", Policy::Weighted),
                ("geo", Policy::Geo),
                ("latency", Policy::Latency),
            ],
            d,
        )
    });
    let mut weights = BTreeMap::new();
    if let Some(n) = f.get("weights") {
        for (name, _, v) in diag::map_entries(n, "routing.weights", d).unwrap_or_default() {
            if let Some(w) = diag::integer(v, &format!("routing.weights.{name}"), 0, 1_000_000, d) {
                weights.insert(RegionName::new(name), w as u32);
            }
        }
    }
    let geo = f.get("geo").map_or_else(Geo::default, |n| geo(n, base, d));
    let mut residency = BTreeMap::new();
    if let Some(n) = f.get("residency") {
        for (country, _, v) in diag::map_entries(n, "routing.residency", d).unwrap_or_default() {
            if let Some(zone) = diag::string(v, &format!("routing.residency.{country}"), d) {
                residency.insert(country.to_string(), zone);
            }
        }
    }
    let mut latency = LatencyTuning::default();
    if let Some(l) = f
        .get("latency")
        .and_then(|n| Fields::new(n, "routing.latency", &["ewma_alpha", "tolerance"], d))
    {
        if let Some(v) = l
            .get("ewma_alpha")
            .and_then(|n| diag::number(n, "routing.latency.ewma_alpha", 0.01, 1.0, d))
        {
            latency.ewma_alpha = v;
        }
        if let Some(v) = l
            .get("tolerance")
            .and_then(|n| diag::number(n, "routing.latency.tolerance", 1.0, 10.0, d))
        {
            latency.tolerance = v;
        }
    }
    let retry_budget = f
        .get("retry_budget")
        .and_then(|n| diag::number(n, "routing.retry_budget", 0.0, 1.0, d))
        .unwrap_or(0.2);
    let outlier = f
        .get("outlier")
        .map_or_else(Outlier::default, |n| traffic::outlier(n, d));
    let overload = crate::overload::routing(&f, d);
    Some(Routing {
        policy: policy?,
        weights,
        geo,
        residency,
        latency,
        retry_budget,
        outlier,
        hedge: overload.hedge,
        try_timeout: overload.try_timeout,
        panic_threshold: overload.panic_threshold,
    })
}

fn geo(n: &Node, base: &Path, d: &mut Diags) -> Geo {
    let mut g = Geo::default();
    let Some(f) = Fields::new(
        n,
        "routing.geo",
        &["networks", "mmdb", "header", "prefer"],
        d,
    ) else {
        return g;
    };
    if let Some(n) = f.get("networks") {
        for (cidr, key, v) in diag::map_entries(n, "routing.geo.networks", d).unwrap_or_default() {
            let Some(net) = self::cidr(cidr) else {
                d.error(
                    key.pos,
                    format!("`routing.geo.networks` keys must be CIDR blocks such as 10.0.0.0/8, found {cidr:?}"),
                );
                continue;
            };
            if let Some(country) = diag::string(v, &format!("routing.geo.networks.{cidr}"), d) {
                g.networks.push((net, country));
            }
        }
        // Most specific network first, so the first match wins.
        g.networks
            .sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    }
    g.mmdb = f
        .get("mmdb")
        .and_then(|n| diag::string(n, "routing.geo.mmdb", d))
        .map(|s| base.join(s));
    g.header = f
        .get("header")
        .and_then(|n| diag::string(n, "routing.geo.header", d));
    if let Some(n) = f.get("prefer") {
        for (key, _, v) in diag::map_entries(n, "routing.geo.prefer", d).unwrap_or_default() {
            let list = diag::strings(v, &format!("routing.geo.prefer.{key}"), d);
            g.prefer.insert(
                key.to_string(),
                list.into_iter().map(|(s, _)| RegionName::new(&s)).collect(),
            );
        }
    }
    g
}

fn consistency(n: Option<&Node>, d: &mut Diags) -> Consistency {
    let mut c = Consistency {
        default_class: "bounded".into(),
        classes: BTreeMap::from([
            (
                "strong".to_string(),
                FreshnessClass::bounded(Duration::ZERO),
            ),
            (
                "bounded".to_string(),
                FreshnessClass::bounded(Duration::from_secs(2)),
            ),
            (
                "relaxed".to_string(),
                FreshnessClass::bounded(Duration::from_secs(30)),
            ),
        ]),
        partition: PartitionKey {
            header: Some("X-Partition".into()),
            path_segment: None,
        },
        default_owner: None,
        owners: BTreeMap::new(),
        idempotency: Idempotency::Generate,
        idempotency_window: Duration::from_secs(24 * 3600),
        idempotency_max_keys: 1_000_000,
        partition_residency: BTreeMap::new(),
        promotion: Promotion::default(),
        auto_promote: None,
        ryw_key_env: "SWITCHYARD_RYW_KEY".into(),
        repair_on_read: RepairOnRead::Off,
    };
    let Some(f) = n.and_then(|n| {
        Fields::new(
            n,
            "consistency",
            &[
                "freshness",
                "partition",
                "owners",
                "idempotency",
                "idempotency_window",
                "idempotency_max_keys",
                "partition_residency",
                "promotion",
                "auto_promote",
                "ryw",
                "repair_on_read",
            ],
            d,
        )
    }) else {
        return c;
    };
    crate::consistency::extra(&f, &mut c, d);
    if let Some(fr) = f
        .get("freshness")
        .and_then(|n| Fields::new(n, "consistency.freshness", &["default", "classes"], d))
    {
        if let Some(n) = fr.get("classes") {
            let mut classes = BTreeMap::new();
            for (name, _, v) in
                diag::map_entries(n, "consistency.freshness.classes", d).unwrap_or_default()
            {
                if let Some(class) = crate::consistency::freshness_class(
                    v,
                    &format!("consistency.freshness.classes.{name}"),
                    d,
                ) {
                    classes.insert(name.to_string(), class);
                }
            }
            c.classes = classes;
        }
        if let Some(n) = fr.get("default") {
            if let Some(name) = diag::string(n, "consistency.freshness.default", d) {
                if !c.classes.contains_key(&name) {
                    let known: Vec<&str> = c.classes.keys().map(String::as_str).collect();
                    d.error(
                        n.pos,
                        format!(
                            "`consistency.freshness.default` must name a class ({}), found {name:?}",
                            known.join(" | ")
                        ),
                    );
                }
                c.default_class = name;
            }
        }
    }
    if let Some(p) = f
        .get("partition")
        .and_then(|n| Fields::new(n, "consistency.partition", &["header", "path_segment"], d))
    {
        // A path segment alone replaces the default header.
        if let Some(n) = p.get("header") {
            c.partition.header = diag::string(n, "consistency.partition.header", d);
        } else if p.get("path_segment").is_some() {
            c.partition.header = None;
        }
        c.partition.path_segment = p
            .get("path_segment")
            .and_then(|n| diag::integer(n, "consistency.partition.path_segment", 0, 64, d))
            .map(|v| v as usize);
    }
    if let Some(n) = f.get("owners") {
        for (part, _, v) in diag::map_entries(n, "consistency.owners", d).unwrap_or_default() {
            if let Some(region) = diag::string(v, &format!("consistency.owners.{part}"), d) {
                if part == "default" {
                    c.default_owner = Some(RegionName::new(&region));
                } else {
                    c.owners.insert(part.to_string(), RegionName::new(&region));
                }
            }
        }
    }
    if let Some(n) = f.get("idempotency") {
        if let Some(v) = diag::one_of(
            n,
            "consistency.idempotency",
            &[
                ("generate", Idempotency::Generate),
                ("require", Idempotency::Require),
                ("off", Idempotency::Off),
            ],
            d,
        ) {
            c.idempotency = v;
        }
    }
    c
}

fn oplog(n: Option<&Node>, d: &mut Diags) -> Oplog {
    let mut o = Oplog::default();
    let keys = [
        "fsync",
        "max_body_bytes",
        "segment_bytes",
        "retain_age",
        "retain_bytes",
        "queue",
        "nats",
        "max_backlog_bytes",
    ];
    let Some(f) = n.and_then(|n| Fields::new(n, "oplog", &keys, d)) else {
        return o;
    };
    if let Some(v) = f.get("fsync").and_then(|n| {
        diag::one_of(
            n,
            "oplog.fsync",
            &[
                ("always", Fsync::Always),
                ("batch", Fsync::Batch),
                ("off", Fsync::Off),
            ],
            d,
        )
    }) {
        o.fsync = v;
    }
    if let Some(v) = f
        .get("max_body_bytes")
        .and_then(|n| diag::integer(n, "oplog.max_body_bytes", 0, 1 << 30, d))
    {
        o.max_body_bytes = v as usize;
    }
    if let Some(v) = f
        .get("segment_bytes")
        .and_then(|n| diag::integer(n, "oplog.segment_bytes", 4096, 1 << 40, d))
    {
        o.segment_bytes = v;
    }
    if let Some(n) = f.get("retain_age") {
        if n.as_scalar() == Some("forever") {
            o.retain_age = None;
        } else if let Some(v) = diag::duration(n, "oplog.retain_age", d) {
            o.retain_age = Some(v);
        }
    }
    if let Some(v) = f
        .get("retain_bytes")
        .and_then(|n| diag::integer(n, "oplog.retain_bytes", 4096, u64::MAX, d))
    {
        o.retain_bytes = Some(v);
    }
    if let Some(v) = f
        .get("queue")
        .and_then(|n| diag::integer(n, "oplog.queue", 1, 1 << 20, d))
    {
        o.queue = v as usize;
    }
    if let Some(v) = f
        .get("max_backlog_bytes")
        .and_then(|n| diag::integer(n, "oplog.max_backlog_bytes", 4096, u64::MAX, d))
    {
        o.max_backlog_bytes = v;
    }
    if let Some(nf) = f
        .get("nats")
        .and_then(|n| Fields::new(n, "oplog.nats", &["url", "stream"], d))
    {
        let url = nf
            .require("url", d)
            .and_then(|n| diag::string(n, "oplog.nats.url", d));
        let stream = nf
            .get("stream")
            .and_then(|n| diag::string(n, "oplog.nats.stream", d))
            .unwrap_or_else(|| "SWITCHYARD_OPLOG".to_string());
        if let Some(n) = nf.get("stream") {
            if stream.is_empty()
                || !stream
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                d.error(
                    n.pos,
                    format!(
                        "`oplog.nats.stream` must be letters, digits, _ or -, found {stream:?}"
                    ),
                );
            }
        }
        if let Some(url) = url {
            o.nats = Some(Nats { url, stream });
        }
    }
    o
}
