//! HTTP/2 by hand over TLS: frames a well-behaved client library refuses to
//! send (connection-specific headers, CR LF in a pseudo-header, a
//! `content-length` that disagrees with the DATA, endless CONTINUATION).
//! Header blocks use HPACK literals without Huffman coding; answers are read
//! only as far as a verdict needs (a status, a reset, a GOAWAY, a close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame, header and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `first`.
fn integer(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal field without indexing, new name, no Huffman.
pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    integer(out, 0, 7, name.len());
    out.extend_from_slice(name);
    integer(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// A literal field added to the dynamic table (for the HPACK bomb).
pub fn literal_indexed(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x40);
    integer(out, 0, 7, name.len());
    out.extend_from_slice(name);
    integer(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// A reference to table entry `index` (62 is the newest dynamic entry).
pub fn indexed(out: &mut Vec<u8>, index: usize) {
    integer(out, 0x80, 7, index);
}

/// A header block from `(name, value)` pairs.
pub fn block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        literal(&mut out, n, v);
    }
    out
}

/// The fields of an ordinary request to `path` on `authority`.
pub fn request<'a>(
    method: &'a [u8],
    path: &'a [u8],
    authority: &'a [u8],
) -> Vec<(&'a [u8], &'a [u8])> {
    vec![
        (b":method", method),
        (b":scheme", b"https"),
        (b":path", path),
        (b":authority", authority),
    ]
}

#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection that negotiated `h2`, the preface and an empty SETTINGS
/// sent.
pub struct Conn {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

/// What came back on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A response with this status (`None`: a status we could not decode).
    Status(Option<u16>),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection closed (or nothing came in time).
    Closed,
}

impl Reply {
    /// Whether the stream was not served with a success.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Reply::Status(Some(s)) if *s < 400)
    }
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        let mut tls = TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(std::io::Error::other("the server did not negotiate h2"));
        }
        tls.write_all(PREFACE).await?;
        tls.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
        Ok(Conn {
            tls,
            buf: Vec::new(),
        })
    }

    /// The TLS stream, for a flood that writes and reads apart.
    pub fn into_inner(self) -> TlsStream<TcpStream> {
        self.tls
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes).await?;
        self.tls.flush().await
    }

    /// The next frame: (type, flags, stream, payload); `None` at close.
    pub async fn next_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let kind = self.buf[3];
                    let flags = self.buf[4];
                    let stream =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                            & 0x7fff_ffff;
                    let payload = self.buf[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    return Some((kind, flags, stream, payload));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.tls.read(&mut chunk).await {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Reads until stream `id` is answered, reset, or the connection goes;
    /// acknowledges the server's SETTINGS on the way.
    pub async fn reply(&mut self, id: u32, limit: Duration) -> Reply {
        let wait = async {
            while let Some((kind, flags, stream, payload)) = self.next_frame().await {
                let ack_failed = kind == SETTINGS
                    && flags & ACK == 0
                    && self.send(&frame(SETTINGS, ACK, 0, &[])).await.is_err();
                if ack_failed {
                    return Reply::Closed;
                }
                match kind {
                    HEADERS if stream == id => return Reply::Status(status(&payload, flags)),
                    RST_STREAM if stream == id => {
                        return Reply::Reset(code(&payload, 0));
                    }
                    GOAWAY => return Reply::GoAway(code(&payload, 4)),
                    _ => {}
                }
            }
            Reply::Closed
        };
        tokio::time::timeout(limit, wait)
            .await
            .unwrap_or(Reply::Closed)
    }
}

fn code(payload: &[u8], at: usize) -> u32 {
    payload
        .get(at..at + 4)
        .map_or(u32::MAX, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The `:status` at the start of a response header block: an indexed static
/// entry (8–14), or a literal on name index 8, plain or Huffman-coded digits.
fn status(payload: &[u8], flags: u8) -> Option<u16> {
    let mut p = payload;
    if flags & 0x8 != 0 {
        let pad = usize::from(*p.first()?);
        p = p.get(1..p.len().checked_sub(pad)?)?;
    }
    if flags & 0x20 != 0 {
        p = p.get(5..)?;
    }
    let first = *p.first()?;
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    if first & 0x80 != 0 {
        let idx = usize::from(first & 0x7f);
        return STATIC.get(idx.checked_sub(8)?).copied();
    }
    // Literal with (0x4_), without (0x0_) or never (0x1_) indexing, name 8.
    let name = if first & 0xc0 == 0x40 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if name != 8 {
        return None;
    }
    let len_byte = *p.get(1)?;
    let len = usize::from(len_byte & 0x7f);
    let value = p.get(2..2 + len)?;
    if len_byte & 0x80 == 0 {
        return std::str::from_utf8(value).ok()?.parse().ok();
    }
    // Huffman: '0'–'2' are 5-bit codes 0–2, '3'–'9' 6-bit codes 0x19–0x1f.
    let mut bits = value
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1));
    let mut digits = 0u16;
    for _ in 0..3 {
        let mut code = 0u8;
        for _ in 0..5 {
            code = code << 1 | bits.next()?;
        }
        let digit = if code < 3 {
            code
        } else {
            code = code << 1 | bits.next()?;
            code.checked_sub(0x19 - 3)?
        };
        digits = digits * 10 + u16::from(digit);
    }
    Some(digits)
}

/// An h2 vector: the frames after the preface, and the stream they open.
pub struct H2Vector {
    pub name: &'static str,
    pub frames: Vec<u8>,
}

/// The h2 vectors; each must be refused (a 4xx, a reset or a GOAWAY), with
/// nothing forwarded.
pub fn vectors(authority: &str) -> Vec<H2Vector> {
    let a = authority.as_bytes();
    let with = |extra: &[(&'static [u8], &'static [u8])], method: &'static [u8]| {
        let mut fields = request(method, b"/desync-h2", a);
        fields.extend_from_slice(extra);
        block(&fields)
    };
    let headers_then_data = |hb: Vec<u8>, data: &[u8]| {
        let mut f = frame(HEADERS, END_HEADERS, 1, &hb);
        f.extend(frame(DATA, END_STREAM, 1, data));
        f
    };
    vec![
        H2Vector {
            name: "h2 content-length over DATA",
            frames: headers_then_data(with(&[(b"content-length", b"10")], b"POST"), b"abc"),
        },
        H2Vector {
            name: "h2 content-length under DATA",
            frames: headers_then_data(with(&[(b"content-length", b"2")], b"POST"), b"abcdef"),
        },
        H2Vector {
            name: "h2 transfer-encoding",
            frames: headers_then_data(
                with(&[(b"transfer-encoding", b"chunked")], b"POST"),
                b"3\r\nabc\r\n0\r\n\r\n",
            ),
        },
        H2Vector {
            name: "h2 connection header",
            frames: frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &with(&[(b"connection", b"keep-alive")], b"GET"),
            ),
        },
        H2Vector {
            name: "h2 CRLF in :path",
            frames: frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &block(&[
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (
                        b":path",
                        b"/desync-h2 HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled",
                    ),
                    (b":authority", a),
                ]),
            ),
        },
        H2Vector {
            name: "h2 CRLF in a value",
            frames: frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &with(&[(b"x-inject", b"a\r\nTransfer-Encoding: chunked")], b"GET"),
            ),
        },
        H2Vector {
            name: "h2 upper-case name",
            frames: frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &with(&[(b"X-Upper", b"1")], b"GET"),
            ),
        },
        H2Vector {
            name: "h2 te other than trailers",
            frames: frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &with(&[(b"te", b"gzip")], b"GET"),
            ),
        },
        H2Vector {
            name: "h2 space in :method",
            frames: frame(HEADERS, END_HEADERS | END_STREAM, 1, &with(&[], b"GET /x")),
        },
        H2Vector {
            name: "h2 no :path",
            frames: frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &block(&[
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":authority", a),
                ]),
            ),
        },
    ]
}

/// Runs one h2 vector: the reply on stream 1.
pub async fn run(addr: SocketAddr, v: &H2Vector) -> std::io::Result<Reply> {
    let mut c = Conn::open(addr).await?;
    c.send(&v.frames).await?;
    Ok(c.reply(1, Duration::from_secs(5)).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decode_in_every_form() {
        assert_eq!(status(&[0x88], 0), Some(200));
        assert_eq!(status(&[0x8c], 0), Some(400));
        assert_eq!(status(&[0x48, 0x03, b'4', b'3', b'1'], 0), Some(431));
        // "201" Huffman-coded: 00010 00000 00001 + one bit of padding.
        assert_eq!(status(&[0x48, 0x82, 0x10, 0x03], 0), Some(201));
        // "421": 011010 00010 00001 + padding.
        assert_eq!(status(&[0x08, 0x82, 0x68, 0x41], 0), Some(421));
    }

    #[test]
    fn integers_take_the_next_bytes_past_the_prefix() {
        let mut out = Vec::new();
        integer(&mut out, 0x80, 7, 62);
        // RFC 7541 §C.1.2: 1337 with a 5-bit prefix.
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [0x80 | 62, 0x1f, 0x9a, 0x0a]);
    }
}
