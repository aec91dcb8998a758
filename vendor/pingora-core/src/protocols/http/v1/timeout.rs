//! The timeout HTTP/1 reads and writes run under: the runtime's timer, made
//! only once the I/O has to wait (most writes, and reads of bytes already
//! arrived, never do), and held in the future itself rather than boxed.

use pin_project_lite::pin_project;
use pingora_timeout::Elapsed;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

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
}
