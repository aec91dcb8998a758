//! The timeout HTTP/1 reads and writes run under: the runtime's timer, made
//! only once the I/O has to wait (most writes, and reads of bytes already
//! arrived, never do), and held in the future itself rather than boxed.
//!
//! Reads (all but the request body's drain, whose total timeout encloses
//! reads) wait under a [`ReadTimer`] instead: one per connection, moved on
//! for each wait rather than made, registered and cancelled every time.

use crate::protocols::l4::stream::thread_slot;
use pin_project_lite::pin_project;
use pingora_timeout::Elapsed;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The timer an HTTP/1 connection's reads wait under, kept from one wait to
/// the next and, through the stream ([`GetTimingDigest::keep_read_timer`]),
/// from one session on the connection to the next.
///
/// A runtime timer made for each wait is registered with the runtime's
/// timer wheel (a lock and an insertion) and cancelled when the wait ends
/// (a lock and a removal). This one stays registered: a wait moves its
/// deadline on, and a later deadline is only recorded (the wheel looks
/// again when the earlier one comes). A kept-alive connection's reads, one
/// on each side of a proxy per request, are mostly such moves.
///
/// While no read waits, the timer can still come due at the deadline of
/// the last wait that did. It then wakes the task that polled it last,
/// which polls once for nothing.
///
/// [`GetTimingDigest::keep_read_timer`]: crate::protocols::GetTimingDigest::keep_read_timer
pub struct ReadTimer {
    sleep: Pin<Box<Sleep>>,
    /// The thread whose runtime the timer belongs to (see [`Self::usable_here`]).
    made_on: u32,
}

impl std::fmt::Debug for ReadTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTimer")
            .field("deadline", &self.sleep.deadline())
            .field("made_on", &self.made_on)
            .finish()
    }
}

impl ReadTimer {
    fn new(deadline: Instant) -> Self {
        ReadTimer {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            made_on: thread_slot(),
        }
    }

    /// Whether a read on this thread may wait under this timer. A timer
    /// belongs to the runtime it was made on. A connection taken up by
    /// another thread (a pooled connection reused by another worker) makes
    /// its own rather than have its waits timed, and its task woken, by
    /// another worker's runtime, or by one that has shut down.
    pub(crate) fn usable_here(&self) -> bool {
        self.made_on == thread_slot()
    }

    /// Where the timer lives, which stays put while it is moved from
    /// session to session.
    #[cfg(test)]
    pub(crate) fn id(&self) -> *const Sleep {
        &*self.sleep
    }
}

pin_project! {
    /// The future [`timeout_read()`] returns.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub(super) struct ReadTimeout<'t, F> {
        #[pin]
        value: F,
        timer: &'t mut Option<ReadTimer>,
        duration: Duration,
        armed: bool,
    }
}

/// `value`, or [`Elapsed`] once `duration` has passed since it first had to
/// wait, timed by the connection's `timer` (made here if it has none yet).
pub(super) fn timeout_read<F: Future>(
    timer: &mut Option<ReadTimer>,
    duration: Duration,
    value: F,
) -> ReadTimeout<'_, F> {
    ReadTimeout {
        value,
        timer,
        duration,
        armed: false,
    }
}

impl<F: Future> Future for ReadTimeout<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.project();
        if let Poll::Ready(v) = me.value.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if !*me.armed {
            *me.armed = true;
            let deadline = Instant::now() + *me.duration;
            match me.timer.as_mut() {
                Some(timer) => timer.sleep.as_mut().reset(deadline),
                None => **me.timer = Some(ReadTimer::new(deadline)),
            }
        }
        match me.timer.as_mut().map(|timer| timer.sleep.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(Elapsed)),
            _ => Poll::Pending,
        }
    }
}

pin_project! {
    /// The future [`timeout()`] returns.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub(super) struct Timeout<F> {
        #[pin]
        value: F,
        #[pin]
        delay: Option<Sleep>,
        duration: Duration,
    }
}

/// `value`, or [`Elapsed`] once `duration` has passed since it first had to wait.
pub(super) fn timeout<F: Future>(duration: Duration, value: F) -> Timeout<F> {
    Timeout {
        value,
        delay: None,
        duration,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut me = self.project();
        if let Poll::Ready(v) = me.value.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if me.delay.is_none() {
            me.delay.set(Some(tokio::time::sleep(*me.duration)));
        }
        match me.delay.as_pin_mut().map(|delay| delay.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(Elapsed)),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ready_value_is_returned() {
        let t = timeout(Duration::from_secs(1), async { 7 });
        tokio::pin!(t);
        assert_eq!(t.as_mut().await.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_that_waits_too_long_has_elapsed() {
        let slow = tokio::time::sleep(Duration::from_secs(10));
        assert!(timeout(Duration::from_secs(1), slow).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_that_arrives_in_time_is_returned() {
        let slow = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            3
        };
        assert_eq!(timeout(Duration::from_secs(1), slow).await.unwrap(), 3);
    }

    fn timer_box(timer: &Option<ReadTimer>) -> *const Sleep {
        timer.as_ref().unwrap().id()
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_does_not_wait_makes_no_timer() {
        let mut timer = None;
        let v = timeout_read(&mut timer, Duration::from_secs(1), async { 7 }).await;
        assert_eq!(v.unwrap(), 7);
        assert!(timer.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn later_waits_move_the_same_timer_on() {
        let mut timer = None;
        let slow = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            3
        };
        let v = timeout_read(&mut timer, Duration::from_secs(1), slow).await;
        assert_eq!(v.unwrap(), 3);
        let first = timer_box(&timer);

        // The first wait's deadline (1 s from the start) passes while the
        // second waits: the second still has its whole second.
        let start = Instant::now();
        let never = std::future::pending::<()>();
        let v = timeout_read(&mut timer, Duration::from_secs(1), never).await;
        assert!(v.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(timer_box(&timer), first, "the timer was made again");

        // A shorter wait than the last moves the deadline back.
        let start = Instant::now();
        let never = std::future::pending::<()>();
        let v = timeout_read(&mut timer, Duration::from_millis(200), never).await;
        assert!(v.is_err());
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        assert_eq!(timer_box(&timer), first);

        // And a wait after one that elapsed is timed afresh.
        let slow = async {
            tokio::time::sleep(Duration::from_millis(900)).await;
            5
        };
        let v = timeout_read(&mut timer, Duration::from_secs(1), slow).await;
        assert_eq!(v.unwrap(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_came_due_between_waits_does_not_cut_the_next() {
        let mut timer = None;
        let slow = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        timeout_read(&mut timer, Duration::from_millis(100), slow)
            .await
            .unwrap();
        // Nothing waits under it while its deadline passes.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let slow = async {
            tokio::time::sleep(Duration::from_millis(90)).await;
            1
        };
        let v = timeout_read(&mut timer, Duration::from_millis(100), slow).await;
        assert_eq!(v.unwrap(), 1);
    }

    #[test]
    fn a_timer_made_on_another_thread_is_not_used_here() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
        };
        let made_elsewhere = std::thread::spawn(move || {
            runtime().block_on(async { ReadTimer::new(Instant::now() + Duration::from_secs(1)) })
        })
        .join()
        .unwrap();
        assert!(!made_elsewhere.usable_here());
        runtime().block_on(async {
            let here = ReadTimer::new(Instant::now() + Duration::from_secs(1));
            assert!(here.usable_here());
        });
    }
}
