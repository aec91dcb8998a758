//! Request hygiene at the edge: header limits, the framing rules that stop
//! request smuggling, and the header rewrites every forwarded request gets.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use smallvec::SmallVec;
use switchyard_config::Limits;

use crate::route::fields::{self, Field, Fields};
use crate::route::headers::{FENCING_TOKEN, RYW, SWITCHYARD_PREFIX};
use crate::route::reject::Reject;

/// Checks the header section against the limits: over either → `431`.
/// `request_line` is the length of the method, target and version.
pub(crate) fn check_limits(
    headers: &HeaderMap,
    request_line: usize,
    limits: &Limits,
) -> Result<(), Reject> {
    if headers.len() > limits.max_header_count {
        return Err(Reject::headers_too_large(format!(
            "request has {} header fields; the limit is {}",
            headers.len(),
            limits.max_header_count
        )));
    }
    // Each field costs its name, value, ": " and CRLF, as on the wire.
    let bytes = request_line
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if bytes > limits.max_header_bytes {
        return Err(Reject::headers_too_large(format!(
            "request header section is {bytes} bytes; the limit is {}",
            limits.max_header_bytes
        )));
    }
    Ok(())
}

/// Rejects ambiguous framing: both `Content-Length` and `Transfer-Encoding`,
/// or a `Content-Length` that is not exactly one number. RFC 9110 lets a
/// recipient collapse `5, 5` or a repeated field into one; the next hop need
/// not, and a request it would frame differently is a smuggling vector, so
/// any repetition is refused (as nginx does). Such a request is never
/// forwarded.
pub(crate) fn check_framing(headers: &Fields) -> Result<(), Reject> {
    let has_te = check_transfer_encoding(headers)?;
    let mut lengths = headers.get_all(fields::CONTENT_LENGTH);
    let Some(first) = lengths.next() else {
        return Ok(());
    };
    if has_te {
        return Err(Reject::bad_request(
            "request has both Content-Length and Transfer-Encoding",
        ));
    }
    if lengths.next().is_some() || first.as_bytes().contains(&b',') {
        return Err(Reject::bad_request(
            "request has more than one Content-Length value",
        ));
    }
    let digits = first.as_bytes().trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Reject::bad_request("Content-Length is not a number"));
    }
    Ok(())
}

/// The request target must be a path (origin or absolute form), or `*` for
/// `OPTIONS`. A target that is neither (what a lenient parser makes of
/// `GET  /x`, an authority-form `CONNECT`) would be forwarded as a path the
/// client did not send and match no route the way it was meant to.
pub(crate) fn check_target(method: &http::Method, raw_target: &[u8]) -> Result<(), Reject> {
    let absolute = |scheme: &[u8]| {
        raw_target.len() > scheme.len() && raw_target[..scheme.len()].eq_ignore_ascii_case(scheme)
    };
    let fine = match raw_target.first() {
        Some(b'/') => true,
        Some(b'*') => method == http::Method::OPTIONS && raw_target == b"*",
        _ => absolute(b"http://") || absolute(b"https://"),
    };
    if fine {
        return Ok(());
    }
    Err(Reject::bad_request(
        "request target must be a path starting with / (or an absolute http URL)",
    ))
}

/// Whether the request is chunked: `Transfer-Encoding` must be one field
/// saying exactly `chunked`. A list (`identity, chunked`, `chunked, chunked`)
/// or a repeated field is framed differently by different parsers; any
/// other coding is one the router does not implement.
fn check_transfer_encoding(headers: &Fields) -> Result<bool, Reject> {
    let mut codings = headers.get_all(fields::TRANSFER_ENCODING);
    let Some(first) = codings.next() else {
        return Ok(false);
    };
    if codings.next().is_some() {
        return Err(Reject::bad_request(
            "request has more than one Transfer-Encoding field",
        ));
    }
    if first
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"chunked")
    {
        return Ok(true);
    }
    Err(Reject::not_implemented(
        "Transfer-Encoding other than chunked is not supported",
    ))
}

/// Headers the router sets or frames the request by: a `Connection` header
/// may not name them (it would make the next hop drop what the router added).
const PROTECTED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
    "x-request-id",
    "x-fencing-token",
    "idempotency-key",
    "traceparent",
    "tracestate",
];

/// HTTP/1.1's own rules: exactly one `Host` (RFC 9112 §3.2), and a
/// `Connection` header that names no header the router relies on.
pub(crate) fn check_http1(version: http::Version, headers: &Fields) -> Result<(), Reject> {
    if version == http::Version::HTTP_11 {
        match headers.get_all(fields::HOST).count() {
            0 => {
                return Err(Reject::bad_request(
                    "HTTP/1.1 request without a Host header",
                ))
            }
            1 => {}
            _ => return Err(Reject::bad_request("request has more than one Host header")),
        }
    }
    for (n, name) in connection_names(headers).enumerate() {
        if n >= MAX_CONNECTION_NAMES {
            return Err(Reject::bad_request(format!(
                "Connection names more than {MAX_CONNECTION_NAMES} options"
            )));
        }
        if !name.bytes().all(is_tchar) {
            return Err(Reject::bad_request(format!(
                "Connection names {name:?}, which is not a header name"
            )));
        }
        let protected = PROTECTED.contains(&name.as_str()) || name.starts_with(SWITCHYARD_PREFIX);
        if protected {
            return Err(Reject::bad_request(format!(
                "Connection names {name}, a header the router sets or relies on"
            )));
        }
    }
    Ok(())
}

/// At most this many options in `Connection` (bounds the work per request;
/// pingora itself refuses ten).
const MAX_CONNECTION_NAMES: usize = 8;

/// An RFC 9110 `tchar`, the bytes of a header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The header names a `Connection` header lists, lowercased (`close` and
/// `keep-alive` are options, not names, but dropping such headers is harmless).
fn connection_names<'a>(headers: &Fields<'a>) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(fields::CONNECTION)
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|n| String::from_utf8_lossy(n.trim_ascii()).to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

/// Hop-by-hop headers, which are for this connection only and never
/// forwarded: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `Upgrade`, and `TE` unless it asks only for
/// trailers (which gRPC needs end to end).
fn hop_by_hop(headers: &Fields) -> SmallVec<[http::HeaderName; 4]> {
    let mut out: SmallVec<[http::HeaderName; 4]> = SmallVec::new();
    let present = headers.present();
    if !HOP_BY_HOP.iter().any(|f| present.has(*f)) {
        return out;
    }
    if present.has(fields::CONNECTION) {
        for name in connection_names(headers) {
            if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
                if headers.contains_named(&n) && !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    let te_trailers_only = headers.get_all(fields::TE).all(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .all(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    for field in HOP_BY_HOP {
        let te_kept = field == fields::TE && te_trailers_only;
        if present.has(field) && !te_kept && !out.contains(field.name()) {
            out.push(field.name().clone());
        }
    }
    out
}

/// The hop-by-hop fields a request may carry besides those its
/// `Connection` names.
const HOP_BY_HOP: [Field; 5] = [
    fields::CONNECTION,
    fields::KEEP_ALIVE,
    fields::PROXY_CONNECTION,
    fields::UPGRADE,
    fields::TE,
];

/// Whether a request asks to upgrade to WebSocket (`Upgrade: websocket`,
/// with `Connection: upgrade`).
pub(crate) fn is_websocket_upgrade(headers: &Fields) -> bool {
    let upgrade = headers.get_all(fields::UPGRADE).any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
    });
    upgrade && connection_names(headers).any(|n| n.eq_ignore_ascii_case("upgrade"))
}

/// Whether a raw HTTP/1 header section carries a `Content-Length` field. The
/// parser drops `Content-Length` when `Transfer-Encoding` is present, so a
/// request with both is only visible in its raw bytes.
pub(crate) fn raw_has_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    raw.split(|b| *b == b'\n')
        .skip(1) // the request line
        .any(|line| {
            let line = line.trim_ascii_start();
            line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME)
        })
}

/// Names of client headers that only Switchyard may set. The synthetic
/// marker (`marker`) is kept only when it carried the right token (`authentic`).
pub(crate) fn reserved_headers(
    headers: &Fields,
    marker: Option<&http::HeaderName>,
    authentic: bool,
) -> SmallVec<[http::HeaderName; 4]> {
    // No reserved name but the marker is a `Field`, so a request that
    // carries only `Field`s has none of them.
    let present = headers.present();
    if !present.carries_unlisted() && !marker.is_some_and(|m| present.may_carry(m)) {
        return SmallVec::new();
    }
    headers
        .map()
        .keys()
        .filter(|k| {
            if Some(*k) == marker {
                return !authentic;
            }
            let k = k.as_str();
            (k.starts_with(SWITCHYARD_PREFIX) && k != RYW) || k == FENCING_TOKEN
        })
        .cloned()
        .collect()
}

/// Headers that say where a request came from: only a trusted proxy may set them.
const FORWARDING: [Field; 4] = [
    fields::FORWARDED_FOR,
    fields::FORWARDED,
    fields::FORWARDED_PROTO,
    fields::REAL_IP,
];

/// Where a request comes from, by the trust boundary: the client address
/// to route by, and the headers to drop before anything reads them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) client: IpAddr,
    /// Forwarding headers (and the geo header) the peer may not supply, and
    /// the hop-by-hop headers, which are never forwarded.
    pub(crate) drop: SmallVec<[http::HeaderName; 4]>,
}

/// Applies the trust boundary to a request from `peer` (the socket address).
/// A peer `trusts` says is a proxy of ours may supply the forwarding headers
/// and the geo header; the client is then the right-most `X-Forwarded-For`
/// address that is not itself trusted. From anyone else those headers are
/// to be dropped, and the client is the peer. Hop-by-hop headers are
/// dropped whoever sent them. The proxy and explain both start here.
pub(crate) fn origin(
    headers: &Fields,
    peer: IpAddr,
    geo_header: Option<&http::HeaderName>,
    trusts: impl Fn(IpAddr) -> bool,
) -> Origin {
    let mut drop = hop_by_hop(headers);
    if !trusts(peer) {
        let present = headers.present();
        drop.extend(
            FORWARDING
                .iter()
                .filter(|f| present.has(**f))
                .map(|f| f.name().clone()),
        );
        if let Some(h) = geo_header.filter(|h| headers.contains_named(h)) {
            drop.push(h.clone());
        }
        return Origin { client: peer, drop };
    }
    Origin {
        client: client_behind(headers, peer, &trusts),
        drop,
    }
}

/// The right-most `X-Forwarded-For` address that is not a trusted proxy;
/// `peer` when every hop is trusted, or when a hop cannot be read (the chain
/// before it cannot be believed either).
fn client_behind(headers: &Fields, peer: IpAddr, trusts: &impl Fn(IpAddr) -> bool) -> IpAddr {
    let hops: Vec<&str> = headers
        .get_all(fields::FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusts(ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer,
        }
    }
    peer
}

/// Compares without an early exit, so timing does not leak a secret.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes an address without the formatting machinery (this runs per request).
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                let o = *octet;
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + o / 10 % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// `X-Forwarded-For` with the client appended to what earlier hops wrote.
pub(crate) fn forwarded_for(headers: &Fields, client: IpAddr) -> HeaderValue {
    let mut out = String::with_capacity(64);
    for v in headers.get_all(fields::FORWARDED_FOR) {
        if let Ok(s) = v.to_str() {
            if !s.trim().is_empty() {
                out.push_str(s.trim());
                out.push_str(", ");
            }
        }
    }
    push_ip(&mut out, client);
    shared_value(out).unwrap_or_else(|| HeaderValue::from_static("unknown"))
}

/// A fresh request id (a random UUID) when the client sent none.
pub(crate) fn request_id(headers: &Fields) -> Option<HeaderValue> {
    if headers.contains(fields::REQUEST_ID) {
        return None;
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Builder::from_random_bytes(super::ids::random_u128().to_le_bytes()).into_uuid();
    id.hyphenated().encode_lower(&mut buf);
    shared_value(buf)
}

/// A header value that owns `text` and is shared, not copied, when cloned.
/// The router's own values in a client's request are cloned into the
/// region's request on every attempt; a value made by
/// `HeaderValue::from_str` is a copy that its first clone copies again into
/// a shared allocation, one more allocation and free per value per request.
/// `None` when `text` is not a valid header value.
fn shared_value(text: impl AsRef<[u8]> + Send + 'static) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::headers::{FORWARDED_FOR, REQUEST_ID};

    // The checks as the proxy calls them: on a map with the fields found in
    // it by one pass.
    fn check_framing(h: &HeaderMap) -> Result<(), Reject> {
        super::check_framing(&Fields::new(h))
    }

    fn check_http1(version: http::Version, h: &HeaderMap) -> Result<(), Reject> {
        super::check_http1(version, &Fields::new(h))
    }

    fn origin(
        h: &HeaderMap,
        peer: IpAddr,
        geo: Option<&http::HeaderName>,
        trusts: impl Fn(IpAddr) -> bool,
    ) -> Origin {
        super::origin(&Fields::new(h), peer, geo, trusts)
    }

    fn reserved_headers(
        h: &HeaderMap,
        marker: Option<&http::HeaderName>,
        authentic: bool,
    ) -> SmallVec<[http::HeaderName; 4]> {
        super::reserved_headers(&Fields::new(h), marker, authentic)
    }

    fn forwarded_for(h: &HeaderMap, client: IpAddr) -> HeaderValue {
        super::forwarded_for(&Fields::new(h), client)
    }

    #[test]
    fn the_headers_the_router_adds_are_protected() {
        for name in [&FENCING_TOKEN, &FORWARDED_FOR, &REQUEST_ID] {
            assert!(PROTECTED.contains(&name.as_str()), "{name}");
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn targets_are_paths() {
        let ok = |m: &str, t: &str| {
            let m = http::Method::from_bytes(m.as_bytes()).expect("method");
            check_target(&m, t.as_bytes()).is_ok()
        };
        assert!(ok("GET", "/a?b"));
        assert!(ok("GET", "http://h/a"));
        assert!(ok("GET", "HTTPS://h/a"));
        assert!(ok("OPTIONS", "*"));
        assert!(!ok("GET", "*"));
        assert!(!ok("GET", " /a"));
        assert!(!ok("GET", "%20/a"));
        assert!(!ok("CONNECT", "h:443"));
        assert!(!ok("GET", ""));
    }

    #[test]
    fn framing_rules() {
        assert!(check_framing(&map(&[("content-length", "5")])).is_ok());
        let repeated = check_framing(&map(&[("content-length", "5"), ("content-length", "5")]));
        assert_eq!(repeated.map_err(|r| r.status), Err(400));
        let same_listed = check_framing(&map(&[("content-length", "5, 5")]));
        assert_eq!(same_listed.map_err(|r| r.status), Err(400));
        let signed = check_framing(&map(&[("content-length", "+5")]));
        assert_eq!(signed.map_err(|r| r.status), Err(400));
        assert!(check_framing(&map(&[("transfer-encoding", "chunked")])).is_ok());
        let both = check_framing(&map(&[
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
        ]));
        assert_eq!(both.map_err(|r| r.status), Err(400));
        let differ = check_framing(&map(&[("content-length", "5"), ("content-length", "6")]));
        assert_eq!(differ.map_err(|r| r.status), Err(400));
        for coding in ["identity, chunked", "chunked, chunked", "gzip", ",chunked"] {
            let te = check_framing(&map(&[("transfer-encoding", coding)]));
            assert_eq!(te.map_err(|r| r.status), Err(501), "{coding}");
        }
        let twice = check_framing(&map(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ]));
        assert_eq!(twice.map_err(|r| r.status), Err(400));
        assert!(check_framing(&map(&[("transfer-encoding", " CHUNKED")])).is_ok());
        let listed = check_framing(&map(&[("content-length", "5, 7")]));
        assert_eq!(listed.map_err(|r| r.status), Err(400));
    }

    #[test]
    fn raw_content_length_is_found_in_any_case() {
        assert!(raw_has_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH: 5\r\n\r\n"
        ));
        assert!(!raw_has_content_length(
            b"POST /content-length: HTTP/1.1\r\nHost: a\r\n\r\n"
        ));
        assert!(!raw_has_content_length(
            b"POST / HTTP/1.1\r\nX-Content-Length: 5\r\n\r\n"
        ));
    }

    #[test]
    fn limits() {
        let l = Limits::default();
        let many: Vec<(String, String)> =
            (0..101).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            check_limits(&map(&many), 20, &l).map_err(|r| r.status),
            Err(431)
        );
        assert!(check_limits(&map(&many[..100]), 20, &l).is_ok());
        let big = "a".repeat(70 * 1024);
        assert_eq!(
            check_limits(&map(&[("x-big", &big)]), 20, &l).map_err(|r| r.status),
            Err(431)
        );
    }

    #[test]
    fn reserved_are_found_but_ryw_is_kept() {
        let h = map(&[
            ("x-switchyard-region", "evil"),
            ("x-switchyard-ryw", "token"),
            ("x-fencing-token", "99"),
            ("x-other", "ok"),
        ]);
        let names: Vec<String> = reserved_headers(&h, None, false)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, vec!["x-switchyard-region", "x-fencing-token"]);
        // Found whatever else the request carries: alone, or beside only
        // fields the one-pass set lists.
        for name in ["x-switchyard-region", "x-fencing-token"] {
            for beside in [None, Some("host"), Some("x-switchyard-ryw")] {
                let mut pairs = vec![(name, "v")];
                pairs.extend(beside.map(|b| (b, "v")));
                let found = reserved_headers(&map(&pairs), None, false);
                assert_eq!(found.len(), 1, "{name} beside {beside:?}");
            }
        }
        // The synthetic marker may be a listed name, and is still found.
        let marker = http::HeaderName::from_static("x-request-id");
        let h = map(&[("x-request-id", "spoofed"), ("host", "a")]);
        assert_eq!(
            reserved_headers(&h, Some(&marker), false).as_slice(),
            [marker]
        );
    }

    fn trusted(ip: IpAddr) -> bool {
        ["127.0.0.5", "10.0.0.1"].contains(&ip.to_string().as_str())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_and_its_forwarding_headers_go() {
        let geo = http::HeaderName::from_static("cf-ipcountry");
        let h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("cf-ipcountry", "US"),
            ("accept", "*/*"),
        ]);
        let o = origin(&h, ip("127.0.0.1"), Some(&geo), trusted);
        assert_eq!(o.client, ip("127.0.0.1"));
        let names: Vec<&str> = o.drop.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-forwarded-for",
                "forwarded",
                "x-forwarded-proto",
                "x-real-ip",
                "cf-ipcountry"
            ]
        );
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_right_most_untrusted_hop() {
        let geo = http::HeaderName::from_static("cf-ipcountry");
        let h = map(&[
            ("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
            ("x-forwarded-for", "10.0.0.1"),
            ("cf-ipcountry", "DE"),
        ]);
        let o = origin(&h, ip("127.0.0.5"), Some(&geo), trusted);
        assert_eq!(
            o.client,
            ip("203.0.113.9"),
            "a client's own left-most claim is not believed"
        );
        assert!(o.drop.is_empty());
        // Every hop trusted: the peer. A hop that is not an address: the peer.
        let all = map(&[("x-forwarded-for", "10.0.0.1")]);
        assert_eq!(
            origin(&all, ip("127.0.0.5"), None, trusted).client,
            ip("127.0.0.5")
        );
        let junk = map(&[("x-forwarded-for", "203.0.113.9, evil, 10.0.0.1")]);
        assert_eq!(
            origin(&junk, ip("127.0.0.5"), None, trusted).client,
            ip("127.0.0.5")
        );
        let none = HeaderMap::new();
        assert_eq!(
            origin(&none, ip("127.0.0.5"), None, trusted).client,
            ip("127.0.0.5")
        );
    }

    #[test]
    fn http1_needs_one_host_and_connection_may_not_name_protected_headers() {
        let v11 = http::Version::HTTP_11;
        assert!(check_http1(v11, &map(&[("host", "a")])).is_ok());
        let none = check_http1(v11, &map(&[])).expect_err("no host");
        assert!(none.reason.contains("without a Host"), "{}", none.reason);
        let two = check_http1(v11, &map(&[("host", "a"), ("host", "b")]));
        assert_eq!(two.map_err(|r| r.status), Err(400));
        assert!(check_http1(http::Version::HTTP_10, &map(&[])).is_ok());
        assert!(check_http1(http::Version::HTTP_2, &map(&[])).is_ok());
        for named in [
            "x-fencing-token",
            "X-Forwarded-For",
            "close, Host",
            "x-switchyard-ryw",
        ] {
            let h = map(&[("host", "a"), ("connection", named)]);
            let r = check_http1(v11, &h).expect_err(named);
            assert!(r.reason.starts_with("Connection names "), "{}", r.reason);
        }
        for odd in ["\"x-fencing-token\"", ":authority", "a b"] {
            let h = map(&[("host", "a"), ("connection", odd)]);
            let r = check_http1(v11, &h).expect_err(odd);
            assert!(r.reason.contains("not a header name"), "{}", r.reason);
        }
        let many = (0..9)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(check_http1(v11, &map(&[("host", "a"), ("connection", &many)])).is_err());
        let ok = map(&[("host", "a"), ("connection", "keep-alive, x-debug")]);
        assert!(check_http1(v11, &ok).is_ok());
    }

    #[test]
    fn hop_by_hop_headers_are_found() {
        let names = |pairs: &[(&str, &str)]| -> Vec<String> {
            hop_by_hop(&Fields::new(&map(pairs)))
                .iter()
                .map(|n| n.to_string())
                .collect()
        };
        assert_eq!(
            names(&[
                ("connection", "x-debug, keep-alive"),
                ("x-debug", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("upgrade", "h2c"),
                ("te", "gzip, trailers"),
                ("accept", "*/*"),
            ]),
            [
                "x-debug",
                "keep-alive",
                "connection",
                "proxy-connection",
                "upgrade",
                "te"
            ]
        );
        assert!(names(&[("te", "trailers"), ("accept", "*/*")]).is_empty());
        assert!(names(&[]).is_empty());
    }

    #[test]
    fn shared_values_carry_their_text_and_refuse_what_a_header_cannot() {
        let v = super::shared_value(String::from("10.0.0.1, 10.0.0.2")).expect("valid");
        assert_eq!(v.clone(), "10.0.0.1, 10.0.0.2");
        assert!(super::shared_value(String::from("a\r\nInjected: 1")).is_none());
        assert!(super::shared_value(*b"a\0b").is_none());
        let none = HeaderMap::new();
        let fields = Fields::new(&none);
        let id = super::request_id(&fields).expect("an id");
        let text = id.to_str().expect("ascii");
        assert!(uuid::Uuid::parse_str(text).is_ok(), "{text}");
        assert_ne!(super::request_id(&fields), Some(id));
        let sent = map(&[("x-request-id", "mine")]);
        assert!(super::request_id(&Fields::new(&sent)).is_none());
    }

    #[test]
    fn forwarded_for_appends() {
        let h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
        ]);
        let v = forwarded_for(&h, "127.0.0.1".parse().expect("ip"));
        assert_eq!(v, "1.2.3.4, 5.6.7.8, 127.0.0.1");
        let v = forwarded_for(&HeaderMap::new(), "::1".parse().expect("ip"));
        assert_eq!(v, "::1");
        for ip in ["0.0.0.0", "10.20.3.255", "192.168.100.9", "255.255.255.255"] {
            assert_eq!(
                forwarded_for(&HeaderMap::new(), ip.parse().expect("ip")),
                ip
            );
        }
    }
}
