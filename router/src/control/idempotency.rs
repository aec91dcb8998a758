//! Edge idempotency, with the IETF draft's semantics for the keys this
//! router has seen: a second request with a key still in flight gets `409`;
//! the same key with a different payload (method, path and body) within the
//! window gets `422`; the same request again is forwarded, and the region
//! answers it from its own store (`Idempotent-Replayed: true`). Keyless
//! writes get a key (`generate`: a random one, never entered here, since no
//! other request can hold it) or a `400` (`require`).
//!
//! The table is bounded, because clients choose its keys: at most
//! `idempotency_max_keys` entries, each a 128-bit hash of the client's scope
//! (a hash of its `Authorization`) and its key, so one client can neither
//! block nor probe another's keys and a key costs the same whatever its
//! length. Finished keys queue in the order they finished: expiry pops the
//! front a bounded batch at a time (never a sweep of the whole map), and a
//! full table evicts the oldest finished key to make room. A table holding
//! only keys in flight refuses new ones (503). Workers racing at the limit
//! may each add one key past it; a key used again and again leaves stale
//! places in the queue, which is compacted when it passes twice the limit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

/// The header.
pub(crate) const HEADER: http::HeaderName = http::HeaderName::from_static("idempotency-key");
/// Longest key accepted.
pub(crate) const MAX_KEY_LEN: usize = 255;
/// Finished keys expired per call of [`IdempotencyTable::expire`].
const EXPIRE_BATCH: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Done,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    fingerprint: u64,
    state: State,
    /// When it finished (or started, while in flight).
    at: Instant,
    /// Tells this use of the key from an earlier one still queued.
    generation: u64,
}

/// What the table says about a keyed write.
pub(crate) enum Admit {
    /// Go ahead; the guard marks the key done (or forgets it) when dropped.
    Proceed(KeyGuard),
    /// The same key is being served right now.
    InFlight,
    /// The key was used for a different request within the window.
    Mismatch,
    /// The table is full of keys in flight: nothing may be evicted.
    Full,
}

/// A client's key: its scope and the key, hashed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ScopedKey(u128);

impl ScopedKey {
    /// `credentials` is the request's `Authorization` value, if any: keys of
    /// different credentials never meet.
    pub(crate) fn new(credentials: Option<&[u8]>, key: &str) -> Self {
        let scope = credentials.map_or(0, xxh3_128);
        let mut bytes = Vec::with_capacity(16 + key.len());
        bytes.extend_from_slice(&scope.to_le_bytes());
        bytes.extend_from_slice(key.as_bytes());
        ScopedKey(xxh3_128(&bytes))
    }
}

/// Keys seen within the window, at most `max_keys` of them.
pub(crate) struct IdempotencyTable {
    seen: DashMap<ScopedKey, Seen>,
    /// Finished keys, oldest first, with the generation that finished.
    finished: Mutex<VecDeque<(ScopedKey, u64)>>,
    next_generation: AtomicU64,
    /// The limit the last `begin` was given (the config's, after reloads).
    max_keys: std::sync::atomic::AtomicUsize,
}

impl Default for IdempotencyTable {
    fn default() -> Self {
        IdempotencyTable {
            seen: DashMap::new(),
            finished: Mutex::new(VecDeque::new()),
            next_generation: AtomicU64::new(1),
            max_keys: std::sync::atomic::AtomicUsize::new(usize::MAX),
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
    /// Admits a keyed write; `window` is how long a finished key counts,
    /// `max_keys` how many the table may hold.
    pub(crate) fn begin(
        self: &Arc<Self>,
        key: ScopedKey,
        fingerprint: u64,
        window: Duration,
        max_keys: usize,
    ) -> Admit {
        let now = Instant::now();
        self.max_keys.store(max_keys, Ordering::Relaxed);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let fresh = Seen {
            fingerprint,
            state: State::InFlight,
            at: now,
            generation,
        };
        if !self.seen.contains_key(&key) && self.seen.len() >= max_keys && !self.make_room(max_keys)
        {
            return Admit::Full;
        }
        match self.seen.entry(key) {
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
                e.insert(fresh);
            }
            MapEntry::Vacant(e) => {
                e.insert(fresh);
            }
        }
        Admit::Proceed(KeyGuard {
            table: self.clone(),
            key,
            generation,
            answered: false,
        })
    }

    /// Evicts the oldest finished keys until the table is under `max_keys`;
    /// false when only keys in flight are left.
    fn make_room(&self, max_keys: usize) -> bool {
        let Ok(mut queue) = self.finished.lock() else {
            return false;
        };
        while self.seen.len() >= max_keys {
            let Some((key, generation)) = queue.pop_front() else {
                return false;
            };
            let removed = self.seen.remove_if(&key, |_, s| {
                s.generation == generation && s.state == State::Done
            });
            if removed.is_some() {
                crate::metrics::idempotency_evicted("capacity", 1);
            }
        }
        true
    }

    /// Forgets keys that finished longer than `window` ago, oldest first, at
    /// most a batch at a time; the number forgotten.
    pub(crate) fn expire(&self, window: Duration) -> usize {
        let Ok(mut queue) = self.finished.lock() else {
            return 0;
        };
        let now = Instant::now();
        let mut forgotten = 0;
        for _ in 0..EXPIRE_BATCH {
            let Some(&(key, generation)) = queue.front() else {
                break;
            };
            match self.seen.get(&key).map(|s| *s) {
                // Queued in finishing order: the first one still young ends the batch.
                Some(s) if s.generation == generation && now.duration_since(s.at) <= window => {
                    break
                }
                Some(s) if s.generation == generation => {
                    self.seen.remove_if(&key, |_, s| s.generation == generation);
                    forgotten += 1;
                }
                // Used again since (a newer generation queued later), or gone.
                _ => {}
            }
            queue.pop_front();
        }
        if forgotten > 0 {
            crate::metrics::idempotency_evicted("expired", forgotten as u64);
        }
        forgotten
    }

    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    fn finish(&self, key: ScopedKey, generation: u64) {
        let done = match self.seen.get_mut(&key) {
            Some(mut s) if s.generation == generation => {
                s.state = State::Done;
                s.at = Instant::now();
                true
            }
            _ => false,
        };
        if !done {
            return;
        }
        let Ok(mut queue) = self.finished.lock() else {
            return;
        };
        queue.push_back((key, generation));
        let bound = self
            .max_keys
            .load(Ordering::Relaxed)
            .max(1024)
            .saturating_mul(2);
        if queue.len() > bound {
            // Only places whose key is still this finished use count.
            queue.retain(|(k, g)| {
                self.seen
                    .get(k)
                    .is_some_and(|s| s.generation == *g && s.state == State::Done)
            });
        }
    }
}

/// Held by a keyed write while it is served.
pub(crate) struct KeyGuard {
    table: Arc<IdempotencyTable>,
    key: ScopedKey,
    generation: u64,
    /// Set once the region answered and the key was marked done.
    answered: bool,
}

impl KeyGuard {
    /// The region answered: the key is used, and done from now on, before
    /// the client has the answer (so the same request right after it is not
    /// taken for one still in flight).
    pub(crate) fn answered(&mut self) {
        if !self.answered {
            self.answered = true;
            self.table.finish(self.key, self.generation);
        }
    }
}

impl Drop for KeyGuard {
    /// A key whose request never got an answer is forgotten, so a retry with
    /// another payload is not refused for a request that never happened.
    fn drop(&mut self) {
        if !self.answered {
            let generation = self.generation;
            self.table
                .seen
                .remove_if(&self.key, |_, s| s.generation == generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);
    const MAX: usize = 1_000_000;

    fn key(k: &str) -> ScopedKey {
        ScopedKey::new(None, k)
    }

    fn used(t: &Arc<IdempotencyTable>, k: &str, fp: u64) {
        let Admit::Proceed(mut g) = t.begin(key(k), fp, WINDOW, MAX) else {
            panic!("{k} proceeds");
        };
        g.answered();
    }

    #[test]
    fn in_flight_then_done_then_mismatch() {
        let t = Arc::new(IdempotencyTable::default());
        let fp = fingerprint("PUT", "/kv/a", b"1");
        let Admit::Proceed(mut g) = t.begin(key("k"), fp, WINDOW, MAX) else {
            panic!("first use proceeds");
        };
        assert!(matches!(
            t.begin(key("k"), fp, WINDOW, MAX),
            Admit::InFlight
        ));
        g.answered();
        drop(g);
        let other = fingerprint("PUT", "/kv/a", b"2");
        assert!(matches!(
            t.begin(key("k"), other, WINDOW, MAX),
            Admit::Mismatch
        ));
        assert!(matches!(
            t.begin(key("k"), fp, WINDOW, MAX),
            Admit::Proceed(_)
        ));
    }

    #[test]
    fn a_key_is_done_once_the_region_answered_before_its_request_ends() {
        let t = Arc::new(IdempotencyTable::default());
        let Admit::Proceed(mut g) = t.begin(key("k"), 1, WINDOW, MAX) else {
            panic!("first use proceeds");
        };
        g.answered();
        // The client may send the same request again before the first one's
        // guard is dropped: it is not in flight any more.
        let Admit::Proceed(mut again) = t.begin(key("k"), 1, WINDOW, MAX) else {
            panic!("the same request again proceeds");
        };
        drop(g);
        assert_eq!(
            t.len(),
            1,
            "the first request's end leaves the second use alone"
        );
        assert!(matches!(t.begin(key("k"), 1, WINDOW, MAX), Admit::InFlight));
        again.answered();
    }

    #[test]
    fn a_request_that_never_reached_a_region_is_forgotten() {
        let t = Arc::new(IdempotencyTable::default());
        drop(t.begin(key("k"), 1, WINDOW, MAX));
        assert!(matches!(
            t.begin(key("k"), 2, WINDOW, MAX),
            Admit::Proceed(_)
        ));
    }

    #[test]
    fn keys_are_scoped_by_credentials() {
        let t = Arc::new(IdempotencyTable::default());
        let alice = ScopedKey::new(Some(b"Bearer alice"), "k");
        let bob = ScopedKey::new(Some(b"Bearer bob"), "k");
        let Admit::Proceed(_held) = t.begin(alice, 1, WINDOW, MAX) else {
            panic!("alice proceeds");
        };
        // Bob's "k" is not Alice's: no 409, no 422.
        assert!(matches!(t.begin(bob, 2, WINDOW, MAX), Admit::Proceed(_)));
        assert_ne!(ScopedKey::new(None, "k"), alice);
    }

    #[test]
    fn expiry_forgets_the_oldest_finished_and_keeps_keys_in_flight() {
        let t = Arc::new(IdempotencyTable::default());
        used(&t, "old", 1);
        let Admit::Proceed(_held) = t.begin(key("in-flight"), 3, WINDOW, MAX) else {
            panic!("a new key proceeds");
        };
        assert_eq!(t.len(), 2);
        // Let the clock move past the finished key's time.
        let done_at = Instant::now();
        while done_at.elapsed().is_zero() {
            std::hint::spin_loop();
        }
        assert_eq!(t.expire(Duration::ZERO), 1);
        assert_eq!(t.len(), 1);
        assert!(matches!(
            t.begin(key("in-flight"), 3, WINDOW, MAX),
            Admit::InFlight
        ));
        // Past its window a key is free for another payload.
        used(&t, "k", 1);
        assert!(matches!(
            t.begin(key("k"), 2, Duration::ZERO, MAX),
            Admit::Proceed(_)
        ));
    }

    #[test]
    fn reusing_a_key_is_not_expired_by_its_earlier_use() {
        let t = Arc::new(IdempotencyTable::default());
        used(&t, "k", 1);
        used(&t, "k", 1);
        assert_eq!(t.expire(WINDOW), 0);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn one_key_used_again_and_again_keeps_the_queue_bounded() {
        let t = Arc::new(IdempotencyTable::default());
        for _ in 0..10_000 {
            let Admit::Proceed(mut g) = t.begin(key("same"), 1, WINDOW, 10) else {
                panic!("the same request again proceeds");
            };
            g.answered();
        }
        let queued = t.finished.lock().map(|q| q.len()).unwrap_or(usize::MAX);
        assert!(queued <= 2048, "{queued} places queued for one key");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_finished_first() {
        let t = Arc::new(IdempotencyTable::default());
        for i in 0..3 {
            let Admit::Proceed(mut g) = t.begin(key(&format!("k{i}")), i, WINDOW, 3) else {
                panic!("room for k{i}");
            };
            g.answered();
        }
        let Admit::Proceed(mut g) = t.begin(key("k3"), 3, WINDOW, 3) else {
            panic!("k0 makes room");
        };
        g.answered();
        drop(g);
        assert_eq!(t.len(), 3);
        // k0 is gone (another payload is welcome), k1 is remembered.
        assert!(matches!(t.begin(key("k1"), 99, WINDOW, 3), Admit::Mismatch));
        assert!(matches!(
            t.begin(key("k0"), 99, WINDOW, 3),
            Admit::Proceed(_)
        ));
    }

    #[test]
    fn a_table_full_of_keys_in_flight_refuses_new_ones() {
        let t = Arc::new(IdempotencyTable::default());
        let held: Vec<Admit> = (0..2)
            .map(|i| t.begin(key(&format!("f{i}")), i, WINDOW, 2))
            .collect();
        assert!(held.iter().all(|a| matches!(a, Admit::Proceed(_))));
        assert!(matches!(t.begin(key("more"), 9, WINDOW, 2), Admit::Full));
        // A key already in the table is still answered for what it is.
        assert!(matches!(t.begin(key("f0"), 0, WINDOW, 2), Admit::InFlight));
        drop(held);
        assert!(matches!(
            t.begin(key("more"), 9, WINDOW, 2),
            Admit::Proceed(_)
        ));
    }
}
