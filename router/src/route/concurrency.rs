//! Concurrency limits per region (`max_inflight`, or the adaptive limit):
//! a read finding its region at the limit goes on to the next candidate; a
//! write, which only its partition's owner may take, waits for a slot in a
//! short bounded queue, then is refused. Admission is one compare-and-swap
//! on the region's in-flight count, so the limit holds under any race.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::RequestClass;

use crate::route::live::{RegionCount, RegionLive};
use crate::route::reject::Reject;

/// The longest a write waits for a slot at its owner.
pub(crate) const WRITE_WAIT: Duration = Duration::from_secs(1);

/// A slot at `live` for a request of `class`, or `None` (the region is full:
/// a read spills; a write waited `WRITE_WAIT`, or found the queue full).
pub(crate) async fn admit(live: &Arc<RegionLive>, class: RequestClass) -> Option<RegionCount> {
    if let Some(count) = RegionCount::inflight(live) {
        return Some(count);
    }
    if class != RequestClass::Write {
        return None;
    }
    // The queue holds as many writes as the limit lets in at once.
    let limit = live.limit.load(Ordering::Relaxed);
    let queued = live.queued.fetch_add(1, Ordering::AcqRel);
    let _leave = Leave(live);
    if queued >= limit {
        return None;
    }
    let deadline = tokio::time::Instant::now() + WRITE_WAIT;
    loop {
        let freed = live.slot_freed.notified();
        if let Some(count) = RegionCount::inflight(live) {
            return Some(count);
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            return RegionCount::inflight(live);
        }
    }
}

/// Takes a write off the queue however it leaves.
struct Leave<'a>(&'a RegionLive);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer when every region a request may use is at its limit.
pub(crate) fn refusal(class: RequestClass) -> Reject {
    let what = if class == RequestClass::Write {
        "the partition's owner is at its concurrency limit and this write waited its turn in vain (1 s)"
    } else {
        "every region this read may use is at its concurrency limit"
    };
    Reject::unavailable(what).retry_in(1)
}

/// The limit a region starts a topology generation with.
pub(crate) fn configure(live: &RegionLive, c: switchyard_config::Concurrency) {
    use switchyard_config::Concurrency;
    let next = match c {
        Concurrency::Unlimited => usize::MAX,
        Concurrency::Fixed(n) => n,
        // An adaptive limit carries on from where it was (within the new bounds).
        Concurrency::Adaptive(a) => match live.limit.load(Ordering::Relaxed) {
            usize::MAX => a.initial,
            now => now.clamp(a.min, a.max),
        },
    };
    live.limit.store(next, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::Percent;

    #[tokio::test]
    async fn the_limit_holds_reads_spill_and_a_write_waits_for_a_slot() {
        let live = Arc::new(RegionLive::new(Percent::FULL));
        configure(&live, switchyard_config::Concurrency::Fixed(2));
        let a = admit(&live, RequestClass::Read).await.expect("room");
        let _b = admit(&live, RequestClass::Read).await.expect("room");
        assert!(
            admit(&live, RequestClass::Read).await.is_none(),
            "a read spills"
        );
        let waiting = tokio::spawn({
            let live = live.clone();
            async move { admit(&live, RequestClass::Write).await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(a);
        assert!(
            waiting.await.expect("joined"),
            "the write got the freed slot"
        );
        assert_eq!(live.inflight.load(Ordering::Relaxed), 1);
        assert_eq!(live.queued.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_finds_no_slot_is_refused_after_its_wait() {
        let live = Arc::new(RegionLive::new(Percent::FULL));
        configure(&live, switchyard_config::Concurrency::Fixed(1));
        let _held = admit(&live, RequestClass::Write).await.expect("room");
        assert!(admit(&live, RequestClass::Write).await.is_none());
        assert_eq!(live.queued.load(Ordering::Relaxed), 0);
    }
}
