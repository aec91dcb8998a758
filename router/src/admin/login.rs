//! Bearer authentication for the admin API and `/metrics`, and the throttle
//! on failed logins: a source that fails more than [`MAX_FAILURES`] times
//! within [`WINDOW`] is answered 429 (with `Retry-After`) until the window
//! ends, whatever it presents, so a token cannot be guessed at speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins a source may make within [`WINDOW`].
pub(crate) const MAX_FAILURES: u32 = 10;
/// How long failures count.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at once; the table is bounded whatever the attacker does.
const MAX_SOURCES: usize = 10_000;

/// Whether `presented` (an `Authorization` value) carries `want` as a bearer token.
pub(crate) fn bearer_matches(want: Option<&str>, presented: Option<&str>) -> bool {
    let got = presented.and_then(|v| v.strip_prefix("Bearer "));
    match (want, got) {
        (Some(want), Some(got)) => {
            crate::route::hygiene::constant_time_eq(want.as_bytes(), got.trim().as_bytes())
        }
        _ => false,
    }
}

/// Failed logins by source.
#[derive(Default)]
pub(crate) struct LoginThrottle(Mutex<HashMap<IpAddr, (u32, Instant)>>);

impl LoginThrottle {
    /// `Some(seconds)` while `source` is throttled.
    pub(crate) fn throttled(&self, source: IpAddr, now: Instant) -> Option<u64> {
        let map = self.0.lock().ok()?;
        let (failures, since) = map.get(&source)?;
        let left = WINDOW
            .checked_sub(now.duration_since(*since))
            .filter(|left| !left.is_zero())?;
        (*failures >= MAX_FAILURES).then(|| left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Counts a failed login from `source`.
    pub(crate) fn failed(&self, source: IpAddr, now: Instant) {
        let Ok(mut map) = self.0.lock() else {
            return;
        };
        if map.len() >= MAX_SOURCES && !map.contains_key(&source) {
            map.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
            if map.len() >= MAX_SOURCES {
                return;
            }
        }
        let entry = map.entry(source).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    /// A source that logged in is forgiven.
    pub(crate) fn succeeded(&self, source: IpAddr) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let want = Some("0123456789abcdef");
        assert!(bearer_matches(want, Some("Bearer 0123456789abcdef")));
        assert!(!bearer_matches(want, Some("Bearer 0123456789abcde")));
        assert!(!bearer_matches(want, Some("0123456789abcdef")));
        assert!(!bearer_matches(want, None));
        assert!(!bearer_matches(None, Some("Bearer anything")));
    }

    #[test]
    fn a_source_failing_too_often_waits_out_the_window() {
        let t = LoginThrottle::default();
        let (src, other): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(t.throttled(src, t0), None);
            t.failed(src, t0);
        }
        assert_eq!(t.throttled(src, t0), Some(60));
        assert_eq!(t.throttled(src, t0 + Duration::from_secs(45)), Some(15));
        assert_eq!(t.throttled(other, t0), None, "another source is not held");
        assert_eq!(t.throttled(src, t0 + WINDOW), None, "the window ended");
        t.failed(src, t0 + WINDOW);
        assert_eq!(t.throttled(src, t0 + WINDOW), None, "counting afresh");
        t.succeeded(src);
        assert!(t.0.lock().map(|m| m.is_empty()).unwrap_or(false));
    }

    #[test]
    fn the_table_is_bounded() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 500) {
            t.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        assert_eq!(t.0.lock().map(|m| m.len()).unwrap_or(0), MAX_SOURCES);
    }
}
