//! gRPC through the edge: a call's `grpc-timeout` is its deadline (the wait
//! for the region is bounded by it, the region is told what is left of it,
//! and a call past it ends with `DEADLINE_EXCEEDED`); `grpc-status` is
//! counted per region whether it comes in the headers or the trailers; and
//! the router's own answers to a gRPC call are gRPC answers (HTTP 200, the
//! status in `grpc-status`), which is what gRPC clients read.

use std::time::Duration;

use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::route::fields::{self, Fields};

pub(super) const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// gRPC status codes the router answers with itself.
pub(super) const DEADLINE_EXCEEDED: u16 = 4;
const RESOURCE_EXHAUSTED: u16 = 8;
const UNAVAILABLE: u16 = 14;
const INTERNAL: u16 = 13;
const UNKNOWN: u16 = 2;
const UNAUTHENTICATED: u16 = 16;
const PERMISSION_DENIED: u16 = 7;
const UNIMPLEMENTED: u16 = 12;
const INVALID_ARGUMENT: u16 = 3;

/// Whether a request is a gRPC call (`content-type: application/grpc[+proto…]`).
pub(super) fn is_grpc(headers: &Fields) -> bool {
    headers
        .get(fields::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim();
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case("application/grpc")
                && matches!(v.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// A `grpc-timeout` value: 1 to 8 digits and a unit (H, M, S, m, u, n).
pub(super) fn parse_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What is left of a deadline, as a `grpc-timeout` value (milliseconds,
/// rounded up, in seconds once milliseconds would need more than 8 digits).
pub(super) fn format_timeout(left: Duration) -> String {
    let ms = left.as_micros().div_ceil(1000).max(1);
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", left.as_secs().min(99_999_999))
    }
}

/// The gRPC status a client should read for an HTTP status the router
/// answered with (gRPC's own HTTP-to-status mapping, except that a 429 says
/// what it is).
pub(super) fn status_for_http(status: u16) -> u16 {
    match status {
        400 => INVALID_ARGUMENT,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 => UNIMPLEMENTED,
        429 => RESOURCE_EXHAUSTED,
        408 | 504 => DEADLINE_EXCEEDED,
        502 | 503 => UNAVAILABLE,
        500 => INTERNAL,
        _ => UNKNOWN,
    }
}

/// Percent-encodes a `grpc-message` as the protocol asks (printable ASCII
/// but `%` as is).
fn encode_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Answers a call with a trailers-only response: HTTP 200, the status and
/// message in the headers, no body.
pub(super) async fn answer(session: &mut Session, status: u16, message: &str) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header(GRPC_STATUS, status.to_string())?;
    resp.insert_header(GRPC_MESSAGE, encode_message(message))?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), true).await
}

/// The `grpc-status` in a header map (response headers or trailers).
pub(super) fn status_in(headers: &http::HeaderMap) -> Option<u16> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit_and_round_trip() {
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "123456789m", "5x", "-5m", "5 m", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(format_timeout(Duration::from_micros(1500)), "2m");
        assert_eq!(format_timeout(Duration::ZERO), "1m");
        assert_eq!(
            parse_timeout(&format_timeout(Duration::from_secs(200_000))),
            Some(Duration::from_secs(200_000))
        );
    }

    #[test]
    fn grpc_content_types_are_recognised() {
        let with = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(v),
            );
            is_grpc(&Fields::new(&h))
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("Application/GRPC; charset=utf-8"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/json"));
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("50% of été"), "50%25 of %C3%A9t%C3%A9");
    }
}
