//! A strict upstream: an HTTP/1.1 server that re-parses every byte a proxy
//! forwards to it by the letter of RFC 9110/9112 and refuses to guess. Each
//! request it parses is recorded; anything it cannot parse as exactly one
//! well-framed request is a *violation* (the bytes a smuggling attack would
//! have slipped past the proxy), recorded with the reason, and the
//! connection is closed. A connection that closes inside a request (a
//! proxy aborting a body that broke mid-way) is counted as truncated: the
//! region never saw a complete request, which is the point.
//!
//! It answers `GET <health_path>` with the health JSON a region sends and
//! every other request with `200 ok`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the upstream parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<Seen>,
    violations: Vec<String>,
    truncated: u64,
}

/// The running upstream; stops with the runtime.
#[derive(Clone)]
pub struct StrictUpstream {
    pub addr: SocketAddr,
    health_path: Arc<str>,
    log: Arc<Mutex<Log>>,
}

impl StrictUpstream {
    /// Listens on 127.0.0.1 (any port) and serves until the runtime stops.
    pub async fn start(health_path: &str) -> std::io::Result<StrictUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let up = StrictUpstream {
            addr: listener.local_addr()?,
            health_path: health_path.into(),
            log: Arc::default(),
        };
        let serving = up.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let up = serving.clone();
                tokio::spawn(async move { up.connection(sock).await });
            }
        });
        Ok(up)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests parsed so far, health checks left out.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().requests.clone()
    }

    /// Every byte sequence that did not parse strictly, with the reason.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Connections closed inside a request.
    pub fn truncated(&self) -> u64 {
        self.lock().truncated
    }

    async fn connection(&self, mut sock: TcpStream) {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match parse(&buf) {
                Ok(Some((req, used))) => {
                    buf.drain(..used);
                    let answer = self.answer(&req);
                    if sock.write_all(&answer).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(reason) => {
                    let shown = String::from_utf8_lossy(&buf[..buf.len().min(300)]).into_owned();
                    self.lock().violations.push(format!("{reason}: {shown:?}"));
                    return;
                }
            }
            let read = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut chunk)).await;
            match read {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => {
                    if !buf.is_empty() {
                        self.lock().truncated += 1;
                    }
                    return;
                }
            }
        }
    }

    fn answer(&self, req: &Seen) -> Vec<u8> {
        let body = if req.method == "GET" && req.target == *self.health_path {
            serde_json::json!({
                "region": "strict",
                "role": "primary",
                "epoch": 1,
                "replica_lag_ms": 0,
                "applied_position": 0,
                "services": ["api"],
            })
            .to_string()
        } else {
            self.lock().requests.push(req.clone());
            "ok".to_string()
        };
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

const MAX_HEADER_SECTION: usize = 64 * 1024;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One line ending in CRLF at `buf[at..]`: `Ok(None)` when the CRLF has not
/// arrived; a bare CR or LF is an error.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &buf[at..];
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'\r' => {
                return match rest.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((&rest[..i], at + i + 2))),
                    Some(_) => Err("bare CR".into()),
                }
            }
            b'\n' => return Err("bare LF".into()),
            0 => return Err("NUL byte".into()),
            _ => {}
        }
    }
    if rest.len() > MAX_HEADER_SECTION {
        return Err("line too long".into());
    }
    Ok(None)
}

fn field(raw: &[u8]) -> Result<(String, String), String> {
    if raw.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err("obs-fold (a line starting with white space)".into());
    }
    let colon = raw
        .iter()
        .position(|&b| b == b':')
        .ok_or("header line without a colon")?;
    let name = &raw[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(format!(
            "header name {:?} is not a token",
            String::from_utf8_lossy(name)
        ));
    }
    let value = raw[colon + 1..].trim_ascii();
    if !value
        .iter()
        .all(|&b| b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b) || b >= 0x80)
    {
        return Err("control character in a header value".into());
    }
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// How the body is framed, decided from the headers or refused.
enum Framing {
    Length(usize),
    Chunked,
}

fn framing(headers: &[(String, String)]) -> Result<Framing, String> {
    let named = |n: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let te = named("transfer-encoding");
    let cl = named("content-length");
    match (te.as_slice(), cl.as_slice()) {
        ([], []) => Ok(Framing::Length(0)),
        ([], [one]) => {
            if one.is_empty() || !one.bytes().all(|b| b.is_ascii_digit()) || one.len() > 15 {
                return Err(format!("Content-Length {one:?} is not 1*DIGIT"));
            }
            one.parse()
                .map(Framing::Length)
                .map_err(|e| format!("Content-Length: {e}"))
        }
        ([], _) => Err("more than one Content-Length".into()),
        ([one], []) if one.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
        ([one], []) => Err(format!("Transfer-Encoding {one:?} is not exactly chunked")),
        (_, []) => Err("more than one Transfer-Encoding".into()),
        (_, _) => Err("both Transfer-Encoding and Content-Length".into()),
    }
}

/// A chunked body at `buf[at..]`: the data and where the message ends.
fn chunked(buf: &[u8], mut at: usize) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    loop {
        let Some((size_line, next)) = line(buf, at)? else {
            return Ok(None);
        };
        let digits_end = size_line
            .iter()
            .position(|&b| b == b';')
            .unwrap_or(size_line.len());
        let digits = &size_line[..digits_end];
        if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "chunk size {:?} is not 1*HEXDIG",
                String::from_utf8_lossy(size_line)
            ));
        }
        let ext = &size_line[digits_end..];
        if !ext
            .iter()
            .all(|&b| is_tchar(b) || b == b';' || b == b'=' || b == b'"')
        {
            return Err("chunk extension with characters outside a token".into());
        }
        let size = usize::from_str_radix(std::str::from_utf8(digits).unwrap_or("x"), 16)
            .map_err(|e| format!("chunk size: {e}"))?;
        at = next;
        if size == 0 {
            // Trailer section, then the empty line.
            loop {
                let Some((raw, next)) = line(buf, at)? else {
                    return Ok(None);
                };
                at = next;
                if raw.is_empty() {
                    return Ok(Some((body, at)));
                }
                field(raw)?;
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += size + 2;
    }
}

/// One request at the start of `buf`: `Ok(None)` until it is complete.
pub fn parse(buf: &[u8]) -> Result<Option<(Seen, usize)>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    let Some((request_line, mut at)) = line(buf, 0)? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(request_line).map_err(|_| "request line not UTF-8")?;
    let parts: Vec<&str> = text.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(format!("request line {text:?} is not three parts"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(format!("method {method:?} is not a token"));
    }
    if target.is_empty() || !target.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(format!("target {target:?}"));
    }
    if *version != "HTTP/1.1" {
        return Err(format!("version {version:?}"));
    }
    let mut headers = Vec::new();
    loop {
        let Some((raw, next)) = line(buf, at)? else {
            return Ok(None);
        };
        at = next;
        if raw.is_empty() {
            break;
        }
        headers.push(field(raw)?);
        if at > MAX_HEADER_SECTION {
            return Err("header section over 64 KiB".into());
        }
    }
    let hosts = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
        .count();
    if hosts != 1 {
        return Err(format!("{hosts} Host headers"));
    }
    let (body, end) = match framing(&headers)? {
        Framing::Length(n) => {
            if buf.len() < at + n {
                return Ok(None);
            }
            (buf[at..at + n].to_vec(), at + n)
        }
        Framing::Chunked => match chunked(buf, at)? {
            Some(done) => done,
            None => return Ok(None),
        },
    };
    Ok(Some((
        Seen {
            method: method.to_string(),
            target: target.to_string(),
            headers,
            body,
        },
        end,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(raw: &str) -> Result<Option<(Seen, usize)>, String> {
        parse(raw.as_bytes())
    }

    #[test]
    fn well_formed_requests_parse_whole() {
        let (r, used) = one("PUT /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET")
            .expect("parses")
            .expect("complete");
        assert_eq!(
            (r.method.as_str(), r.body.as_slice(), used),
            ("PUT", &b"abc"[..], 50)
        );
        let (r, _) = one("POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n1\r\nd\r\n0\r\nT: 1\r\n\r\n")
            .expect("parses")
            .expect("complete");
        assert_eq!(r.body, b"abcd");
        assert_eq!(one("GET / HTTP/1.1\r\nHost: h\r\n").expect("partial"), None);
    }

    #[test]
    fn anything_ambiguous_is_a_violation() {
        for bad in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX\0: a\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
        ] {
            assert!(one(bad).is_err(), "{bad:?} parsed");
        }
    }
}
