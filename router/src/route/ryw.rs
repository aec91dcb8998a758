//! Read-your-writes tokens. After a write the router hands the client a
//! token (cookie `sy_ryw`, header `X-Switchyard-Ryw`) naming the partition,
//! the epoch and the owner's commit position (or the time, when the region
//! sends no position), and the write's op id. A later read carrying it skips
//! replicas that have not applied that far; after a promotion, the op id is
//! what repair on read replays. Tokens are signed with HMAC-SHA256 so a
//! client cannot forge one; a token that does not verify is ignored.

use ring::hmac;
use switchyard_oplog::OpId;

use crate::route::fields::{self, Fields};

/// The cookie that carries the token.
pub(crate) const COOKIE: &str = "sy_ryw";
/// Tokens carry the write's op id (`-` for none); `v1` tokens, without
/// one, still verify.
const VERSION: &str = "v2";
const VERSION_WITHOUT_OP: &str = "v1";
/// Bytes of the MAC kept in the token.
const MAC_BYTES: usize = 16;

/// How far a reader's own write got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The owner's commit position.
    Position(u64),
    /// Unix milliseconds of the write.
    Time(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub partition: String,
    pub epoch: u64,
    pub mark: Mark,
    /// The write's op id in the op log (none when the log is off).
    pub op: Option<OpId>,
}

/// Where a reader's own write was made: what repair on read compares with
/// the partition's current epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub epoch: u64,
    pub op: Option<OpId>,
}

/// Signs and verifies tokens.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    pub fn new(key: &[u8]) -> Self {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The MAC of `body`, in hex.
    fn mac(&self, body: &[u8]) -> [u8; 2 * MAC_BYTES] {
        let tag = hmac::sign(&self.key, body);
        let mut out = [0; 2 * MAC_BYTES];
        write_hex(&mut out, &tag.as_ref()[..MAC_BYTES]);
        out
    }

    /// `v2.<epoch>.<p|t><value>.<partition as hex>.<op id as hex, or ->.<mac>`:
    /// cookie-safe. Written into one string without the formatting
    /// machinery: every write's answer carries one.
    pub fn issue(&self, t: &Token) -> String {
        let mut token = String::with_capacity(
            VERSION.len() + 2 * 21 + 2 * t.partition.len() + 2 * 16 + 2 * MAC_BYTES + 8,
        );
        let mut digits = itoa::Buffer::new();
        token.push_str(VERSION);
        token.push('.');
        token.push_str(digits.format(t.epoch));
        token.push('.');
        let (kind, value) = match t.mark {
            Mark::Position(p) => ('p', p),
            Mark::Time(ms) => ('t', ms),
        };
        token.push(kind);
        token.push_str(digits.format(value));
        token.push('.');
        push_hex(&mut token, t.partition.as_bytes());
        token.push('.');
        match t.op {
            Some(op) => push_hex(&mut token, &op.0),
            None => token.push('-'),
        }
        self.seal_in_place(token)
    }

    /// `body` with its MAC appended: a token that passes the MAC check
    /// whatever the body holds (what the fuzz target feeds the parser).
    pub fn seal(&self, body: &str) -> String {
        self.seal_in_place(body.to_string())
    }

    fn seal_in_place(&self, mut body: String) -> String {
        let mac = self.mac(body.as_bytes());
        body.push('.');
        body.push_str(std::str::from_utf8(&mac).expect("hex digits are ASCII"));
        body
    }

    /// The token if it is well formed and its MAC verifies.
    pub fn verify(&self, s: &str) -> Option<Token> {
        let (body, mac) = s.trim().rsplit_once('.')?;
        let expected = self.mac(body.as_bytes());
        if !crate::route::hygiene::constant_time_eq(&expected, mac.as_bytes()) {
            return None;
        }
        let mut parts = body.split('.');
        let with_op = match parts.next()? {
            VERSION => true,
            VERSION_WITHOUT_OP => false,
            _ => return None,
        };
        let epoch = parts.next()?.parse().ok()?;
        let mark = parts.next()?;
        let mark = match mark.split_at_checked(1)? {
            ("p", v) => Mark::Position(v.parse().ok()?),
            ("t", v) => Mark::Time(v.parse().ok()?),
            _ => return None,
        };
        let partition = String::from_utf8(unhex(parts.next()?)?).ok()?;
        let op = if with_op {
            match parts.next()? {
                "-" => None,
                op => Some(OpId(unhex(op)?.try_into().ok()?)),
            }
        } else {
            None
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Token {
            partition,
            epoch,
            mark,
            op,
        })
    }

    /// The token a request carries (header first, then the cookie), verified.
    pub(crate) fn token_in(&self, headers: &Fields) -> Option<Token> {
        if let Some(v) = headers.get(fields::RYW).and_then(|v| v.to_str().ok()) {
            return self.verify(v);
        }
        for cookies in headers.get_all(fields::COOKIE) {
            let Ok(text) = cookies.to_str() else {
                continue;
            };
            for pair in text.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    if k == COOKIE {
                        return self.verify(v);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends `bytes` in lower-case hex. The digits are made in a buffer on the
/// stack and appended a run at a time: pushing them as `char`s, one by
/// one, cost every write's token ~12 instructions a digit.
fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut digits = [0u8; 64];
    for run in bytes.chunks(digits.len() / 2) {
        let len = 2 * run.len();
        write_hex(&mut digits, run);
        out.push_str(std::str::from_utf8(&digits[..len]).expect("hex digits are ASCII"));
    }
}

/// Writes `bytes` in lower-case hex at the start of `digits`, which has
/// room for two digits a byte.
fn write_hex(digits: &mut [u8], bytes: &[u8]) {
    for (pair, &b) in digits.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&hex_pair(b));
    }
}

/// A byte's two lower-case hex digits.
fn hex_pair(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signer() -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, b"test key"),
        }
    }

    #[test]
    fn a_token_is_written_as_earlier_releases_wrote_it() {
        // Routers of different releases verify each other's tokens during
        // an upgrade: the text and its MAC must not change.
        let s = signer();
        let op = OpId([0xab; 16]);
        let t = Token {
            partition: "tenant 7".into(),
            epoch: 3,
            mark: Mark::Position(42),
            op: Some(op),
        };
        let body = format!("v2.3.p42.74656e616e742037.{}", "ab".repeat(16));
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"test key"),
            body.as_bytes(),
        );
        let mac: String = tag.as_ref()[..MAC_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(s.issue(&t), format!("{body}.{mac}"));
        let timed = Token {
            mark: Mark::Time(1_700_000_000_123),
            op: None,
            ..t
        };
        let body = "v2.3.t1700000000123.74656e616e742037.-".to_string();
        assert_eq!(s.issue(&timed), s.seal(&body));
        assert!(s.issue(&timed).starts_with(&format!("{body}.")));
    }

    #[test]
    fn a_token_round_trips_and_a_forged_one_is_refused() {
        let s = signer();
        let t = Token {
            partition: "tenant 7; x".into(),
            epoch: 3,
            mark: Mark::Position(42),
            op: Some(OpId::new()),
        };
        let text = s.issue(&t);
        assert!(!text.contains(';') && !text.contains(' '), "{text}");
        assert_eq!(s.verify(&text), Some(t));
        // Raise the position and keep the MAC: refused.
        let forged = text.replacen(".p42.", ".p99.", 1);
        assert_eq!(s.verify(&forged), None);
        let other = Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, b"other key"),
        };
        assert_eq!(other.verify(&text), None);
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("a=1; {COOKIE}={text}; b=2")
                .parse()
                .expect("cookie"),
        );
        assert_eq!(s.token_in(&Fields::new(&h)).map(|t| t.epoch), Some(3));
    }

    #[test]
    fn a_v1_token_without_an_op_id_still_verifies() {
        let s = signer();
        let v1 = s.seal(&format!("v1.2.p7.{}", hex(b"tenant")));
        assert_eq!(
            s.verify(&v1),
            Some(Token {
                partition: "tenant".into(),
                epoch: 2,
                mark: Mark::Position(7),
                op: None,
            })
        );
        // A v1 body with an op id appended is not a v1 token.
        let odd = s.seal(&format!("v1.2.p7.{}.{}", hex(b"tenant"), hex(&[0; 16])));
        assert_eq!(s.verify(&odd), None);
        // Nor is a v2 op id of the wrong length.
        let short = s.seal(&format!("v2.2.p7.{}.abcd", hex(b"tenant")));
        assert_eq!(s.verify(&short), None);
    }

    proptest! {
        #[test]
        fn hex_is_two_lower_case_digits_a_byte(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(hex(&bytes), expected);
        }

        #[test]
        fn arbitrary_text_never_verifies_or_panics(s in ".{0,80}") {
            prop_assert_eq!(signer().verify(&s), None);
        }

        #[test]
        fn every_token_round_trips(p in ".{0,40}", epoch in any::<u64>(), pos in any::<u64>(), time in any::<bool>(), op in proptest::option::of(any::<[u8; 16]>())) {
            let t = Token { partition: p, epoch, mark: if time { Mark::Time(pos) } else { Mark::Position(pos) }, op: op.map(OpId) };
            let s = signer();
            prop_assert_eq!(s.verify(&s.issue(&t)), Some(t));
        }
    }
}
