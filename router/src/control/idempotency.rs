//! Edge idempotency, with the IETF draft's semantics for the keys this
//! router has seen: a second request with a key still in flight gets `409`;
//! the same key with a different payload (method, path and body) within the
//! window gets `422`; the same request again is forwarded, and the region
//! answers it from its own store (`Idempotent-Replayed: true`). Keyless
//! writes get a key (`generate`) or a `400` (`require`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use xxhash_rust::xxh3::Xxh3;

/// The header.
pub(crate) const HEADER: &str = "idempotency-key";
/// Longest key accepted.
pub(crate) const MAX_KEY_LEN: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Done,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    fingerprint: u64,
    state: State,
    at: Instant,
}

/// What the table says about a keyed write.
pub(crate) enum Admit {
    /// Go ahead; the guard marks the key done (or forgets it) when dropped.
    Proceed(KeyGuard),
    /// The same key is being served right now.
    InFlight,
    /// The key was used for a different request within the window.
    Mismatch,
}

/// Keys seen within the window.
pub(crate) struct IdempotencyTable {
    seen: DashMap<String, Seen>,
}

impl Default for IdempotencyTable {
    fn default() -> Self {
        IdempotencyTable {
            seen: DashMap::new(),
        }
    }
}

/// The fingerprint of a request: method, path and body.
pub(crate) fn fingerprint(method: &str, path: &str, body: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.digest()
}

impl IdempotencyTable {
    pub(crate) fn begin(self: &Arc<Self>, key: &str, fingerprint: u64, window: Duration) -> Admit {
        let now = Instant::now();
        match self.seen.entry(key.to_string()) {
            MapEntry::Occupied(mut e) => {
                let s = *e.get();
                let expired = s.state == State::Done && now.duration_since(s.at) > window;
                if !expired {
                    if s.state == State::InFlight {
                        return Admit::InFlight;
                    }
                    if s.fingerprint != fingerprint {
                        return Admit::Mismatch;
                    }
                }
                e.insert(Seen {
                    fingerprint,
                    state: State::InFlight,
                    at: now,
                });
            }
            MapEntry::Vacant(e) => {
                e.insert(Seen {
                    fingerprint,
                    state: State::InFlight,
                    at: now,
                });
            }
        }
        Admit::Proceed(KeyGuard {
            table: self.clone(),
            key: key.to_string(),
            reached_region: false,
        })
    }

    /// Drops keys older than the window.
    pub(crate) fn purge(&self, window: Duration) {
        let now = Instant::now();
        self.seen
            .retain(|_, s| s.state == State::InFlight || now.duration_since(s.at) <= window);
    }

    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Held by a keyed write while it is served.
pub(crate) struct KeyGuard {
    table: Arc<IdempotencyTable>,
    key: String,
    /// The region answered: the key is used. Otherwise it is forgotten, so
    /// a retry with another payload is not refused for a request that never happened.
    pub(crate) reached_region: bool,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if self.reached_region {
            if let Some(mut s) = self.table.seen.get_mut(&self.key) {
                s.state = State::Done;
                s.at = Instant::now();
            }
        } else {
            self.table.seen.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn in_flight_then_done_then_mismatch() {
        let t = Arc::new(IdempotencyTable::default());
        let fp = fingerprint("PUT", "/kv/a", b"1");
        let Admit::Proceed(mut g) = t.begin("k", fp, WINDOW) else {
            panic!("first use proceeds");
        };
        assert!(matches!(t.begin("k", fp, WINDOW), Admit::InFlight));
        g.reached_region = true;
        drop(g);
        assert!(matches!(
            t.begin("k", fingerprint("PUT", "/kv/a", b"2"), WINDOW),
            Admit::Mismatch
        ));
        assert!(matches!(t.begin("k", fp, WINDOW), Admit::Proceed(_)));
    }

    #[test]
    fn a_request_that_never_reached_a_region_is_forgotten() {
        let t = Arc::new(IdempotencyTable::default());
        drop(t.begin("k", 1, WINDOW));
        assert!(matches!(t.begin("k", 2, WINDOW), Admit::Proceed(_)));
    }

    #[test]
    fn expired_keys_are_reusable_and_purged() {
        let t = Arc::new(IdempotencyTable::default());
        let Admit::Proceed(mut g) = t.begin("k", 1, WINDOW) else {
            panic!("a new key proceeds");
        };
        g.reached_region = true;
        drop(g);
        assert!(
            matches!(t.begin("k", 2, WINDOW), Admit::Mismatch),
            "within the window"
        );
        // Past its window the key is free for another payload.
        let Admit::Proceed(mut g) = t.begin("k", 2, Duration::ZERO) else {
            panic!("an expired key proceeds");
        };
        g.reached_region = true;
        drop(g);
        let Admit::Proceed(_held) = t.begin("in-flight", 3, WINDOW) else {
            panic!("a new key proceeds");
        };
        assert_eq!(t.len(), 2);
        // Let the clock move past the done key's time, then purge: only the
        // key still in flight stays.
        let done_at = Instant::now();
        while done_at.elapsed().is_zero() {
            std::hint::spin_loop();
        }
        t.purge(Duration::ZERO);
        assert_eq!(t.len(), 1);
        assert!(matches!(t.begin("in-flight", 3, WINDOW), Admit::InFlight));
    }
}
