//! W3C Trace Context (`traceparent`): the trace a request belongs to, kept
//! when the client sent a valid one and started otherwise; each attempt to
//! a region is a child span whose id the region sees as its parent.

/// `traceparent` version 00: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

const SAMPLED: u8 = 0x01;

/// A request's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub(crate) trace_id: [u8; 16],
    /// The router's span for the request.
    pub(crate) span_id: [u8; 8],
    /// The client's span, when it sent one.
    pub(crate) parent_id: Option<[u8; 8]>,
    pub(crate) sampled: bool,
}

fn hex_to<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Lowercase hex digits of `bytes` into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// The trace id and parent id and flags of a valid `traceparent` (version
/// 00, or a later version read as 00 as the spec asks); `None` otherwise.
pub(crate) fn parse(value: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let version = hex_to::<1>(version)?[0];
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    let trace_id = hex_to::<16>(trace)?;
    let parent_id = hex_to::<8>(parent)?;
    let flags = hex_to::<1>(flags.get(..2)?)?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

impl TraceContext {
    /// The request's context: the client's trace continued, else a new one
    /// (sampled with probability `sample`, from `random`'s bits).
    pub(crate) fn start(
        incoming: Option<&str>,
        sample: f64,
        mut random: impl FnMut() -> u64,
    ) -> Self {
        let mut span_id = random().to_be_bytes();
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        match incoming.and_then(parse) {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id,
                parent_id: Some(parent),
                sampled: flags & SAMPLED != 0,
            },
            None => {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&random().to_be_bytes());
                trace_id[8..].copy_from_slice(&random().to_be_bytes());
                if trace_id == [0; 16] {
                    trace_id[15] = 1;
                }
                let roll = (random() >> 11) as f64 / (1u64 << 53) as f64;
                TraceContext {
                    trace_id,
                    span_id,
                    parent_id: None,
                    sampled: roll < sample,
                }
            }
        }
    }

    /// The `traceparent` a region gets for an attempt whose span is
    /// `attempt`. Written in place: it is on every request's path.
    pub(crate) fn header_for(&self, attempt: [u8; 8]) -> http::HeaderValue {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&self.trace_id, &mut out[3..35]);
        hex_into(&attempt, &mut out[36..52]);
        hex_into(&[if self.sampled { SAMPLED } else { 0 }], &mut out[53..55]);
        // Hex digits and dashes are always a valid header value.
        http::HeaderValue::from_bytes(&out).unwrap_or(http::HeaderValue::from_static(""))
    }

    pub(crate) fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0x1234_5678_u64;
        move || {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            n
        }
    }

    #[test]
    fn a_valid_parent_is_continued_with_a_new_span() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::start(Some(incoming), 0.0, counter());
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_id.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(
            t.sampled,
            "the parent's sampled flag wins over the local rate"
        );
        let out = t.header_for(t.span_id);
        let out = out.to_str().unwrap_or_default();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert_eq!(parse(out).map(|p| p.1), Some(t.span_id));
    }

    #[test]
    fn a_broken_or_absent_parent_starts_a_new_trace() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
            let t = TraceContext::start(Some(bad), 1.0, counter());
            assert!(t.parent_id.is_none());
            assert!(t.sampled);
            assert!(parse(t.header_for(t.span_id).to_str().unwrap_or_default()).is_some());
        }
        // A later version is read as version 00.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
    }

    #[test]
    fn the_sample_rate_applies_to_new_traces() {
        let mut random = counter();
        let sampled = (0..10_000)
            .filter(|_| TraceContext::start(None, 0.25, &mut random).sampled)
            .count();
        assert!((2_000..3_000).contains(&sampled), "{sampled}");
    }
}
