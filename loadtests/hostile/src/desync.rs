//! Request smuggling vectors over HTTP/1.1, and how to run one against a
//! proxy that forwards to a [`StrictUpstream`](crate::strict::StrictUpstream).
//!
//! A vector is one connection's worth of bytes and what must follow from
//! it: a refusal (the status, and nothing forwarded) or exactly one request
//! at the upstream, the intended one. Where the RFCs let a server either
//! refuse or accept (a bare LF, a repeated identical `Content-Length`), the
//! vector accepts both, but an accepted request must still arrive as
//! exactly the one intended.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What a vector must lead to.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Answered with one of these statuses; nothing reaches the upstream.
    Refused(&'static [u16]),
    /// Exactly this request reaches the upstream (method, target, body).
    Intended(&'static str, &'static str, &'static [u8]),
    /// Either refused (a 4xx, or 501 for a transfer coding the proxy does
    /// not implement), or exactly this request.
    RefusedOrIntended(&'static str, &'static str, &'static [u8]),
}

#[derive(Debug, Clone)]
pub struct Vector {
    pub name: &'static str,
    pub raw: Vec<u8>,
    pub expect: Expect,
}

const BAD: &[u16] = &[400];
const BAD_OR_UNKNOWN_CODING: &[u16] = &[400, 501];

fn v(name: &'static str, raw: &str, expect: Expect) -> Vector {
    Vector {
        name,
        raw: raw.as_bytes().to_vec(),
        expect,
    }
}

/// Every HTTP/1.1 vector. `host` is what the Host header says.
pub fn vectors() -> Vec<Vector> {
    use Expect::*;
    let post = |headers: &str, body: &str| {
        format!("POST /desync HTTP/1.1\r\nHost: edge\r\n{headers}\r\n{body}")
    };
    vec![
        v("CL.TE", &post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nX"), Refused(BAD)),
        v("TE.CL", &post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n"), Refused(BAD)),
        v("TE.CL with CL 0", &post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), Refused(BAD)),
        v("TE xchunked", &post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), Refused(BAD_OR_UNKNOWN_CODING)),
        v("TE chunked, identity", &post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"), Refused(BAD_OR_UNKNOWN_CODING)),
        v("TE identity, chunked", &post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"), Refused(BAD_OR_UNKNOWN_CODING)),
        v("TE twice", &post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), Refused(BAD_OR_UNKNOWN_CODING)),
        v("TE space before colon", &post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"), Refused(BAD)),
        v("TE vertical tab", &post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"), Refused(BAD_OR_UNKNOWN_CODING)),
        v("TE leading comma", &post("Transfer-Encoding: ,chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"), RefusedOrIntended("POST", "/desync", b"abc")),
        v("TE tab after colon", &post("Transfer-Encoding:\tchunked\r\n", "3\r\nabc\r\n0\r\n\r\n"), Intended("POST", "/desync", b"abc")),
        v("TE upper case", &post("Transfer-Encoding: CHUNKED\r\n", "3\r\nabc\r\n0\r\n\r\n"), Intended("POST", "/desync", b"abc")),
        v("TE in HTTP/1.0", "POST /desync HTTP/1.0\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", RefusedOrIntended("POST", "/desync", b"abc")),
        v("CL twice, different", &post("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd"), Refused(BAD)),
        v("CL twice, same", &post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"), Refused(BAD)),
        v("CL list", &post("Content-Length: 3, 3\r\n", "abc"), Refused(BAD)),
        v("CL signed", &post("Content-Length: +3\r\n", "abc"), Refused(BAD)),
        v("CL negative", &post("Content-Length: -1\r\n", "abc"), Refused(BAD)),
        v("CL hex", &post("Content-Length: 0x3\r\n", "abc"), Refused(BAD)),
        v("CL with a space inside", &post("Content-Length: 1 2\r\n", "abcdefghijkl"), Refused(BAD)),
        v("CL past u64", &post("Content-Length: 99999999999999999999999\r\n", "abc"), Refused(BAD)),
        v("obs-fold", &post("X-Folded: a\r\n b\r\nContent-Length: 3\r\n", "abc"), Refused(BAD)),
        v("obs-fold hiding TE", &post("X-Folded: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "abc"), Refused(BAD)),
        v("bare LF line ends", "GET /desync HTTP/1.1\nHost: edge\n\n", RefusedOrIntended("GET", "/desync", b"")),
        v("bare CR in a value", &post("X-Cr: a\rb\r\nContent-Length: 3\r\n", "abc"), Refused(BAD)),
        v("NUL in a name", &post("X-N\0ul: 1\r\nContent-Length: 3\r\n", "abc"), Refused(BAD)),
        v("NUL in a value", &post("X-Nul: a\0b\r\nContent-Length: 3\r\n", "abc"), Refused(BAD)),
        v("space in a name", &post("Content Length: 3\r\n", "abc"), Refused(BAD)),
        v("chunk size overflow", &post("Transfer-Encoding: chunked\r\n", "10000000000000003\r\nabc\r\n0\r\n\r\n"), Refused(BAD)),
        v("chunk size not hex", &post("Transfer-Encoding: chunked\r\n", "zz\r\nabc\r\n0\r\n\r\n"), Refused(BAD)),
        v("chunk size negative", &post("Transfer-Encoding: chunked\r\n", "-3\r\nabc\r\n0\r\n\r\n"), Refused(BAD)),
        v("chunk longer than its size", &post("Transfer-Encoding: chunked\r\n", "3\r\nabcdef\r\n0\r\n\r\n"), Refused(BAD)),
        v("chunk data without CRLF", &post("Transfer-Encoding: chunked\r\n", "3\r\nabcX0\r\n\r\n"), Refused(BAD)),
        v("chunk size with bare LF", &post("Transfer-Encoding: chunked\r\n", "3\nabc\r\n0\r\n\r\n"), RefusedOrIntended("POST", "/desync", b"abc")),
        v("missing Host", "GET /desync HTTP/1.1\r\n\r\n", Refused(BAD)),
        v("two Hosts", "GET /desync HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Refused(BAD)),
        v("pipelined after a bad request", "GET /desync HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: edge\r\n\r\n", Refused(BAD)),
        v("pipelined after CL.TE", &post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: edge\r\n\r\n"), Refused(BAD)),
        // RFC 9112 §3 lets a recipient split the request line on any run of
        // white space: either a refusal or exactly GET /desync.
        v("two spaces in the request line", "GET  /desync HTTP/1.1\r\nHost: edge\r\n\r\n", RefusedOrIntended("GET", "/desync", b"")),
    ]
}

/// What the proxy answered on one connection.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status of each response read, in order.
    pub statuses: Vec<u16>,
    pub text: String,
}

/// Sends `raw` on a fresh connection to `addr` and reads every response
/// until the proxy closes, or goes quiet for a second after answering, or
/// 5 s pass without an answer. The client does not half-close: a proxy may
/// take that for a client gone and drop the request.
pub fn send(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(250)))?;
    s.write_all(raw)?;
    let start = std::time::Instant::now();
    let mut quiet_since = start;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                quiet_since = std::time::Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let quiet = quiet_since.elapsed();
                if (!out.is_empty() && quiet > Duration::from_secs(1))
                    || start.elapsed() > Duration::from_secs(5)
                {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let statuses = text
        .match_indices("HTTP/1.")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect();
    Ok(Answer { statuses, text })
}

/// The verdict on one vector.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: &'static str,
    pub statuses: Vec<u16>,
    /// Requests the upstream parsed during the vector.
    pub forwarded: usize,
    /// Forwarded bytes the upstream could not parse strictly.
    pub violations: Vec<String>,
    /// Empty when the vector's expectation held.
    pub failure: Option<String>,
}

/// Runs `vector` against `proxy`, judging it by what `upstream` saw.
pub async fn run(
    proxy: SocketAddr,
    upstream: &crate::strict::StrictUpstream,
    vector: &Vector,
) -> Outcome {
    let before = upstream.requests().len();
    let violations_before = upstream.violations().len();
    let raw = vector.raw.clone();
    let answer = tokio::task::spawn_blocking(move || send(proxy, &raw))
        .await
        .ok()
        .and_then(Result::ok);
    let statuses = answer
        .as_ref()
        .map(|a| a.statuses.clone())
        .unwrap_or_default();
    let seen: Vec<_> = upstream.requests().split_off(before);
    let violations: Vec<_> = upstream.violations().split_off(violations_before);
    let matches = |m: &str, t: &str, b: &[u8]| {
        seen.len() == 1 && seen[0].method == m && seen[0].target == t && seen[0].body == b
    };
    let refused_with =
        |allowed: &[u16]| seen.is_empty() && statuses.len() == 1 && allowed.contains(&statuses[0]);
    let failure = if !violations.is_empty() {
        Some(format!(
            "the upstream saw bytes it cannot parse: {violations:?}"
        ))
    } else {
        match &vector.expect {
            Expect::Refused(allowed) if refused_with(allowed) => None,
            Expect::Refused(allowed) => Some(format!(
                "expected one answer in {allowed:?} and nothing forwarded; got {statuses:?}, {} forwarded",
                seen.len()
            )),
            Expect::Intended(m, t, b) if matches(m, t, b) && statuses.first() == Some(&200) => None,
            Expect::RefusedOrIntended(m, t, b)
                if (matches(m, t, b) && statuses.first() == Some(&200))
                    || (seen.is_empty()
                        && statuses.len() == 1
                        && (400..500).contains(&statuses[0]) | (statuses[0] == 501)) =>
            {
                None
            }
            Expect::Intended(..) | Expect::RefusedOrIntended(..) => Some(format!(
                "expected exactly the intended request; got {statuses:?} and {:?}",
                seen.iter()
                    .map(|s| format!("{} {} {:?}", s.method, s.target, String::from_utf8_lossy(&s.body)))
                    .collect::<Vec<_>>()
            )),
        }
    };
    Outcome {
        name: vector.name,
        statuses,
        forwarded: seen.len(),
        violations,
        failure,
    }
}
