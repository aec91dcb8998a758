//! A gRPC echo service spoken on the wire by hand: messages are opaque bytes
//! in gRPC's length-prefixed frames, so no schema is needed. It answers with
//! `grpc-status` in trailers, as real servers do, which is what an edge must
//! carry through intact.
//!
//! - `POST /switchyard.test.Echo/Unary`: the request's message, once.
//! - `POST /switchyard.test.Echo/Stream`: the message `x-stream-count` times
//!   (default 3), `x-stream-gap-ms` apart (default 20).
//! - metadata `x-grpc-status: N` ends the call with status N instead of 0.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::StreamBody;
use hyper::body::Frame;

use crate::Region;

pub const UNARY: &str = "/switchyard.test.Echo/Unary";
pub const STREAM: &str = "/switchyard.test.Echo/Stream";

/// One message in gRPC's framing: uncompressed flag, 4-byte length, bytes.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// The messages in a framed body; `None` when the framing is broken.
pub fn messages(mut body: &[u8]) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 || body[0] != 0 {
            return None;
        }
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let rest = body.get(5..5 + len)?;
        out.push(Bytes::copy_from_slice(rest));
        body = &body[5 + len..];
    }
    Some(out)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn trailers(status: u64) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(status));
    if status != 0 {
        t.insert(
            "grpc-message",
            HeaderValue::from_static("asked%20for%20by%20the%20caller"),
        );
    }
    t
}

/// Answers a call: `count` copies of its message, `gap` apart, then trailers.
async fn answer(
    r: Arc<Region>,
    headers: HeaderMap,
    body: Bytes,
    count: u64,
    gap: Duration,
) -> Response {
    r.requests.fetch_add(1, Ordering::Relaxed);
    r.remember_headers(&headers);
    r.delay().await;
    let Some(msgs) = messages(&body) else {
        return (StatusCode::BAD_REQUEST, "broken gRPC framing\n").into_response();
    };
    let message = msgs.into_iter().next().unwrap_or_default();
    let status = header_u64(&headers, "x-grpc-status").unwrap_or(0);
    let frames = futures_util::stream::unfold(0u64, move |sent| {
        let message = message.clone();
        async move {
            if sent > count {
                return None;
            }
            if sent == count {
                return Some((
                    Ok::<_, Infallible>(Frame::trailers(trailers(status))),
                    sent + 1,
                ));
            }
            if sent > 0 {
                tokio::time::sleep(gap).await;
            }
            Some((Ok(Frame::data(frame(&message))), sent + 1))
        }
    });
    let mut resp = Response::new(Body::new(StreamBody::new(frames)));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    if let Ok(v) = r.name.parse() {
        resp.headers_mut().insert(crate::REGION_HEADER, v);
    }
    resp
}

pub async fn unary(State(r): State<Arc<Region>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(r, headers, body, 1, Duration::ZERO).await
}

pub async fn stream(State(r): State<Arc<Region>>, headers: HeaderMap, body: Bytes) -> Response {
    let count = header_u64(&headers, "x-stream-count")
        .unwrap_or(3)
        .min(10_000);
    let gap = Duration::from_millis(header_u64(&headers, "x-stream-gap-ms").unwrap_or(20));
    answer(r, headers, body, count, gap).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut body = frame(b"one").to_vec();
        body.extend_from_slice(&frame(b""));
        body.extend_from_slice(&frame(b"three"));
        let got = messages(&body).expect("parses");
        assert_eq!(
            got,
            vec![Bytes::from("one"), Bytes::new(), Bytes::from("three")]
        );
        assert!(messages(&body[..body.len() - 1]).is_none());
    }
}
