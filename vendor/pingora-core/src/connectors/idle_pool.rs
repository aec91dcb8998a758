// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Idle upstream connections kept for reuse, without a task per connection.
//!
//! A released connection is put on its peer's stack with the time it
//! expires; taking one pops the most recently released (the warmest), the
//! calling worker's own if one of the warmest is, and checks it on the spot: expired, closed by the server or holding
//! unexpected data, it is dropped and the next one is tried. Nothing watches
//! a connection while it waits: the socket stays registered with the
//! runtime, which records a close or data as readiness, and the check reads
//! that without a system call when nothing happened. One sweeper per pool
//! closes, once a second, the connections that expired or were closed while
//! nobody asked for them, so no socket outlives its idle timeout by more
//! than a second.

use super::test_reusable_stream;
use crate::protocols::l4::stream::thread_slot;
use crate::protocols::Stream;
use log::debug;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweeper looks for expired and closed idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Idle {
    stream: Stream,
    /// When it was released (for the pool callback: how long it idled).
    since: Instant,
    /// `None`: kept until reused, evicted or closed by the server.
    expires: Option<Instant>,
    /// Release order across the whole pool, for evicting the oldest.
    seq: u64,
    /// The thread that released it ([`thread_slot`]): with single-threaded
    /// workers, the one whose runtime has its socket.
    thread: u32,
}

/// How many of a peer's warmest connections a worker looks through for one
/// it released itself before it takes the warmest of all.
const SAME_THREAD_LOOKS: usize = 16;
/// ...and how much colder than the warmest such a connection may be. Under
/// load the warmest connections were all released moments ago; with little
/// traffic, a connection much colder than the warmest is likelier to be
/// closed by the server just as it is reused, which costs more than a
/// wake-up relayed from another worker.
const SAME_THREAD_AGE: Duration = Duration::from_millis(100);

/// Reuse keys are hashes already (`Peer::reuse_hash`), computed by the
/// proxy from its own peer settings: each is its own bucket hash, with no
/// second hashing per release and per reuse.
#[derive(Default)]
struct ReuseKeyHasher(u64);

impl Hasher for ReuseKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the key is a `u64`); anything else is folded in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

#[derive(Default)]
struct Groups {
    /// Per reuse key, oldest first. A key's emptied stack stays until the
    /// sweeper passes, so a connection taken and released again (the usual
    /// round of a request) does not allocate a new one each time.
    by_key: HashMap<u64, Vec<Idle>, BuildHasherDefault<ReuseKeyHasher>>,
    count: usize,
    next_seq: u64,
}

pub(crate) struct IdlePool {
    groups: Mutex<Groups>,
    capacity: usize,
    sweeper: AtomicBool,
    unexpected_data: Arc<AtomicU64>,
}

impl IdlePool {
    pub(crate) fn new(capacity: usize, unexpected_data: Arc<AtomicU64>) -> Self {
        IdlePool {
            groups: Mutex::new(Groups::default()),
            capacity,
            sweeper: AtomicBool::new(false),
            unexpected_data,
        }
    }

    /// Keeps `stream` for reuse under `key`. With the pool full, the
    /// connection released longest ago anywhere in it is closed to make room.
    /// Returns how long each evicted connection had idled.
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
    ) -> Vec<Duration> {
        if self.capacity == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        let mut evicted = Vec::new();
        {
            let mut g = self.groups.lock();
            while g.count >= self.capacity {
                match g.pop_oldest() {
                    Some(idle) => evicted.push(idle),
                    None => break,
                }
            }
            let seq = g.next_seq;
            g.next_seq += 1;
            g.count += 1;
            g.by_key.entry(key).or_default().push(Idle {
                stream,
                since: now,
                expires: idle_timeout.map(|t| now + t),
                seq,
                thread: thread_slot(),
            });
        }
        self.start_sweeper();
        // Closed outside the lock.
        evicted.into_iter().map(|i| i.since.elapsed()).collect()
    }

    /// The most recently released connection under `key` that is still
    /// usable, one this thread released if there is one among the warmest;
    /// the unusable ones met on the way are closed. A connection another
    /// single-threaded worker released is registered with this one's runtime
    /// before it is handed out.
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        let here = thread_slot();
        loop {
            let mut idle = {
                let mut g = self.groups.lock();
                let stack = g.by_key.get_mut(&key)?;
                let last = stack.len().checked_sub(1)?;
                let warmest = stack[last].since;
                let mine = stack
                    .iter()
                    .rev()
                    .take(SAME_THREAD_LOOKS)
                    .take_while(|i| warmest.saturating_duration_since(i.since) <= SAME_THREAD_AGE)
                    .position(|i| i.thread == here);
                let idle = stack.remove(last - mine.unwrap_or(0));
                g.count -= 1;
                idle
            };
            if idle.expires.is_some_and(|e| Instant::now() >= e) {
                continue;
            }
            // Checked before the socket moves: the readiness it is judged by
            // was recorded by the runtime it is registered with now.
            if !test_reusable_stream(&mut idle.stream, &self.unexpected_data) {
                continue;
            }
            match idle.stream.register_on_this_thread() {
                Ok(()) => return Some(idle.stream),
                Err(e) => debug!("an idle connection could not move to this worker: {e}"),
            }
        }
    }

    fn start_sweeper(self: &Arc<Self>) {
        // Read before writing: every release passes here, and a write to a
        // flag shared by the worker threads would bounce its cache line.
        if self.sweeper.load(Ordering::Relaxed) || self.sweeper.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime to sweep from: expiry is still checked when taken.
            self.sweeper.store(false, Ordering::Relaxed);
            return;
        };
        let pool: Weak<IdlePool> = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweep();
            }
        });
    }

    /// Closes the connections that expired or that the server closed (or
    /// sent something on) while they waited.
    fn sweep(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut g = self.groups.lock();
            let mut removed = 0;
            g.by_key.retain(|_, stack| {
                let before = stack.len();
                let mut i = 0;
                while i < stack.len() {
                    let expired = stack[i].expires.is_some_and(|e| now >= e);
                    if expired || !test_reusable_stream(&mut stack[i].stream, &self.unexpected_data)
                    {
                        closed.push(stack.remove(i));
                    } else {
                        i += 1;
                    }
                }
                removed += before - stack.len();
                !stack.is_empty()
            });
            g.count -= removed;
        }
        drop(closed);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.groups.lock().count
    }
}

impl Groups {
    fn pop_oldest(&mut self) -> Option<Idle> {
        let key = self
            .by_key
            .iter()
            .filter_map(|(k, stack)| stack.first().map(|i| (i.seq, *k)))
            .min()?
            .1;
        let stack = self.by_key.get_mut(&key)?;
        let idle = stack.remove(0);
        if stack.is_empty() {
            self.by_key.remove(&key);
        }
        self.count -= 1;
        Some(idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::l4::stream::Stream as L4Stream;
    use crate::protocols::UniqueIDType;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Box::new(L4Stream::from(client)), server)
    }

    fn pool(capacity: usize) -> Arc<IdlePool> {
        Arc::new(IdlePool::new(capacity, Arc::new(AtomicU64::new(0))))
    }

    #[tokio::test]
    async fn takes_the_most_recent_connection_of_its_key() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = pool(8);
        let (a, _sa) = pair(&listener).await;
        let (b, _sb) = pair(&listener).await;
        let (a_id, b_id) = (a.id(), b.id());
        p.put(1, a, None);
        p.put(1, b, None);
        assert!(p.take(2).is_none());
        assert_eq!(p.take(1).unwrap().id(), b_id);
        assert_eq!(p.take(1).unwrap().id(), a_id);
        assert!(p.take(1).is_none());
        assert_eq!(p.len(), 0);
    }

    /// Puts under `key` a connection made and released by another worker:
    /// a thread with its own single-threaded runtime, returned with the
    /// connection's id and its server end.
    fn put_from_another_worker(
        p: &Arc<IdlePool>,
        key: u64,
    ) -> (tokio::runtime::Runtime, UniqueIDType, std::net::TcpStream) {
        let p = p.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (id, server) = rt.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let (theirs, server) = pair(&listener).await;
                let id = theirs.id();
                p.put(key, theirs, None);
                (id, server.into_std().unwrap())
            });
            (rt, id, server)
        })
        .join()
        .unwrap()
    }

    /// A worker takes its own connection before a warmer one of another
    /// worker only while it is about as warm: much colder, it is not.
    #[tokio::test]
    async fn a_much_colder_connection_of_its_own_is_not_preferred() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = pool(8);
        let (mine, _sm) = pair(&listener).await;
        p.put(1, mine, None);
        {
            let mut g = p.groups.lock();
            let idle = &mut g.by_key.get_mut(&1).unwrap()[0];
            idle.since = idle.since.checked_sub(SAME_THREAD_AGE * 2).unwrap();
        }
        let (other_runtime, theirs_id, _their_server) = put_from_another_worker(&p, 1);
        assert_eq!(p.take(1).unwrap().id(), theirs_id, "the warmest");
        std::thread::spawn(move || drop(other_runtime))
            .join()
            .unwrap();
    }

    /// A worker takes back a connection it released before a warmer one
    /// another worker released; taking the other's moves it to this
    /// worker's runtime, so it works once the other runtime is gone.
    #[tokio::test]
    async fn a_worker_takes_its_own_connection_first_and_moves_anothers() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = pool(8);
        let (mine, _sm) = pair(&listener).await;
        let mine_id = mine.id();
        p.put(1, mine, None);
        let (other_runtime, theirs_id, mut their_server) = put_from_another_worker(&p, 1);
        assert_eq!(p.take(1).unwrap().id(), mine_id, "its own first");
        let mut theirs = p.take(1).unwrap();
        assert_eq!(theirs.id(), theirs_id);
        // Dropped where blocking is allowed: its driver stops.
        std::thread::spawn(move || drop(other_runtime))
            .join()
            .unwrap();
        theirs.write_all(b"ping").await.unwrap();
        theirs.flush().await.unwrap();
        their_server.set_nonblocking(false).unwrap();
        let mut got = [0u8; 4];
        std::io::Read::read_exact(&mut their_server, &mut got).unwrap();
        assert_eq!(&got, b"ping");
        std::io::Write::write_all(&mut their_server, b"pong").unwrap();
        let mut back = [0u8; 4];
        theirs.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"pong", "read through this worker's runtime");
    }

    #[tokio::test]
    async fn a_full_pool_closes_the_oldest_anywhere() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = pool(2);
        let (a, _sa) = pair(&listener).await;
        let (b, _sb) = pair(&listener).await;
        let (c, _sc) = pair(&listener).await;
        let c_id = c.id();
        p.put(1, a, None);
        p.put(2, b, None);
        assert_eq!(p.put(3, c, None).len(), 1);
        assert!(p.take(1).is_none(), "the oldest went");
        assert!(p.take(2).is_some());
        assert_eq!(p.take(3).unwrap().id(), c_id);
    }

    #[tokio::test]
    async fn expired_and_closed_connections_are_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = pool(8);
        let (a, _sa) = pair(&listener).await;
        p.put(1, a, Some(Duration::ZERO));
        assert!(p.take(1).is_none(), "expired");

        let (b, sb) = pair(&listener).await;
        p.put(1, b, None);
        drop(sb);
        // The close reaches the runtime as readiness; wait for the fact.
        let mut taken = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            taken = p.take(1);
            if taken.is_none() {
                break;
            }
            p.put(1, taken.take().unwrap(), None);
        }
        assert!(taken.is_none(), "a connection the server closed is dropped");
    }

    #[tokio::test]
    async fn an_emptied_key_keeps_its_stack_until_the_sweeper_passes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = pool(8);
        let (a, _sa) = pair(&listener).await;
        p.put(7, a, None);
        let a = p.take(7).unwrap();
        assert_eq!(p.groups.lock().by_key.get(&7).map(Vec::len), Some(0));
        p.put(7, a, None);
        assert_eq!(p.take(7).map(|_| ()), Some(()));
        p.sweep();
        assert!(p.groups.lock().by_key.is_empty(), "the sweeper drops empty stacks");
        assert_eq!(p.len(), 0);
    }

    #[tokio::test]
    async fn the_sweeper_closes_what_the_server_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = pool(8);
        let (a, mut sa) = pair(&listener).await;
        p.put(1, a, None);
        sa.shutdown().await.unwrap();
        drop(sa);
        for _ in 0..50 {
            if p.len() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the sweeper left a closed connection in the pool");
    }
}
