//! A constant request rate, open loop: request `i` is due at `start + i /
//! rate` whatever the earlier ones took, and its latency counts from when
//! it was due, not from when it was sent. A stall therefore shows in the
//! latencies of every request it delayed (coordinated omission corrected,
//! as wrk2 does). Samples are kept whole and sorted for percentiles: a
//! drill sends at most a few hundred thousand requests, so exact figures
//! cost less than a histogram crate's configuration.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request's fate.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was due, since the load began.
    pub due: Duration,
    /// From due to answered (or failed).
    pub latency: Duration,
    /// The answer's status; 0 for no answer (refused, reset, timed out).
    pub status: u16,
    pub write: bool,
    /// The path it went to.
    pub path: String,
    /// `Retry-After` on a 503, if any.
    pub retry_after: bool,
}

impl Sample {
    /// No answer, or a server error.
    pub fn failed(&self) -> bool {
        self.status == 0 || self.status >= 500
    }
}

/// What request `i` is: the request, whether it writes, and its path.
pub type MakeRequest =
    Arc<dyn Fn(&reqwest::Client, u64) -> (reqwest::RequestBuilder, bool, String) + Send + Sync>;

/// A load running in the background.
pub struct Running {
    pub started: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    join: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Running {
    /// Time since the load began.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops sending, waits for the requests in flight, returns every sample.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut samples = self.join.await.unwrap_or_default();
        samples.sort_by_key(|s| s.due);
        samples
    }
}

/// At most this many requests in flight; past it the sender waits (and the
/// wait counts in the latencies).
const MAX_INFLIGHT: usize = 4096;

/// Starts sending `rate` requests a second until `finish`.
pub fn start(rate: u32, make: MakeRequest) -> Running {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(256)
        .build()
        .unwrap_or_default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let s = stop.clone();
    let join = tokio::spawn(async move {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT));
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let mut i: u64 = 0;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let due = interval * i as u32;
            tokio::time::sleep_until((started + due).into()).await;
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (req, write, path) = make(&client, i);
            let samples = samples.clone();
            tasks.spawn(async move {
                let result = req.send().await;
                let latency = started.elapsed().saturating_sub(due);
                let (status, retry_after) = match &result {
                    Ok(r) => (r.status().as_u16(), r.headers().contains_key("retry-after")),
                    Err(_) => (0, false),
                };
                if let Ok(r) = result {
                    // Read the body so the connection goes back to the pool.
                    let _ = r.bytes().await;
                }
                drop(slot);
                if let Ok(mut v) = samples.lock() {
                    v.push(Sample {
                        due,
                        latency,
                        status,
                        write,
                        path,
                        retry_after,
                    });
                }
            });
            while tasks.try_join_next().is_some() {}
            i += 1;
        }
        while tasks.join_next().await.is_some() {}
        let v = samples.lock().map(|mut v| std::mem::take(&mut *v));
        v.unwrap_or_default()
    });
    Running {
        started,
        stop,
        join,
    }
}

/// Counts and latency percentiles of some samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub sent: usize,
    pub failed: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

pub fn stats<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Stats {
    let mut lat: Vec<Duration> = Vec::new();
    let mut failed = 0;
    for s in samples {
        lat.push(s.latency);
        failed += usize::from(s.failed());
    }
    lat.sort();
    let q = |p: f64| -> Duration {
        if lat.is_empty() {
            return Duration::ZERO;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i]
    };
    Stats {
        sent: lat.len(),
        failed,
        p50: q(0.50),
        p99: q(0.99),
        p999: q(0.999),
        max: lat.last().copied().unwrap_or_default(),
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "{} sent, {} failed, p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
            self.sent,
            self.failed,
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, status: u16) -> Sample {
        Sample {
            due: Duration::ZERO,
            latency: Duration::from_millis(ms),
            status,
            write: false,
            path: String::new(),
            retry_after: false,
        }
    }

    #[test]
    fn percentiles_are_exact_and_failures_counted() {
        let v: Vec<Sample> = (1..=100)
            .map(|i| sample(i, if i == 7 { 0 } else { 200 }))
            .collect();
        let s = stats(&v);
        assert_eq!((s.sent, s.failed), (100, 1));
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
    }
}
