// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! A write buffer in front of a stream whose memory can be given back in
//! place while the stream is idle.
//!
//! It buffers as tokio's [`BufWriter`](tokio::io::BufWriter) does: a write
//! that fits joins the buffer, a write as large as the capacity goes straight
//! through (after what is buffered), and a flush writes the buffer out.
//! Unlike it, the buffer is taken only when a write first needs it and can
//! be let go with [`WriteBuffer::release`] while nothing is buffered. A
//! `BufWriter` can only be given back by taking the stream out of it and
//! putting it in a new one, which moves the whole stream twice and allocates
//! a buffer at once, on every wait of a kept-alive connection.

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered writes to `W`, reads passed straight through.
pub(crate) struct WriteBuffer<W> {
    inner: W,
    /// Buffered bytes; those before `written` have already gone out during
    /// a flush that had to wait.
    buf: Vec<u8>,
    written: usize,
    capacity: usize,
}

impl<W> WriteBuffer<W> {
    /// A buffer of `capacity` bytes in front of `inner`, not taken until a
    /// write needs it. A zero capacity writes straight through.
    pub(crate) fn with_capacity(capacity: usize, inner: W) -> Self {
        WriteBuffer {
            inner,
            buf: Vec::new(),
            written: 0,
            capacity,
        }
    }

    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The stream. Anything still buffered is lost.
    pub(crate) fn into_inner(self) -> W {
        self.inner
    }

    /// What is buffered and not yet written out.
    pub(crate) fn buffer(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    /// Gives the buffer's memory back, when nothing is buffered; the next
    /// write that needs a buffer takes a new one.
    pub(crate) fn release(&mut self) {
        if self.buffer().is_empty() {
            self.buf = Vec::new();
            self.written = 0;
        }
    }

    /// Whether the buffer's memory is held.
    #[cfg(test)]
    pub(crate) fn holds_memory(&self) -> bool {
        self.buf.capacity() > 0
    }

    fn append(&mut self, data: &[u8]) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.capacity);
        }
        self.buf.extend_from_slice(data);
    }
}

impl<W: AsyncWrite + Unpin> WriteBuffer<W> {
    /// Writes out everything buffered. On an error what was not written
    /// stays buffered, as it does while the stream is not ready.
    fn poll_flush_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut result = Ok(());
        while self.written < self.buf.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..])) {
                Ok(0) => {
                    result = Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write the buffered data",
                    ));
                    break;
                }
                Ok(n) => self.written += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Keeps the memory: a busy stream writes again soon.
        if self.written == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..self.written);
        }
        self.written = 0;
        Poll::Ready(result)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for WriteBuffer<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.buf.len() + data.len() > me.capacity {
            ready!(me.poll_flush_buf(cx))?;
        }
        if data.len() >= me.capacity {
            Pin::new(&mut me.inner).poll_write(cx, data)
        } else {
            me.append(data);
            Poll::Ready(Ok(data.len()))
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let total = bufs.iter().fold(0usize, |n, b| n.saturating_add(b.len()));
        if me.buf.len().saturating_add(total) > me.capacity {
            ready!(me.poll_flush_buf(cx))?;
        }
        if total < me.capacity {
            for b in bufs {
                me.append(b);
            }
            Poll::Ready(Ok(total))
        } else if me.inner.is_write_vectored() {
            Pin::new(&mut me.inner).poll_write_vectored(cx, bufs)
        } else {
            // A partial write is a valid answer: the first slice with bytes.
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
            Pin::new(me).poll_write(cx, first)
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        ready!(me.poll_flush_buf(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        ready!(me.poll_flush_buf(cx))?;
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for WriteBuffer<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<W: fmt::Debug> fmt::Debug for WriteBuffer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBuffer")
            .field("inner", &self.inner)
            .field("buffered", &self.buffer().len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio_test::io::Builder;

    #[tokio::test]
    async fn small_writes_go_out_together_on_flush() {
        let mock = Builder::new().write(b"GET / HTTP/1.1\r\n\r\n").build();
        let mut w = WriteBuffer::with_capacity(64, mock);
        assert!(!w.holds_memory(), "no buffer before a write needs one");
        w.write_all(b"GET / ").await.unwrap();
        w.write_all(b"HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(w.buffer(), b"GET / HTTP/1.1\r\n\r\n");
        w.flush().await.unwrap();
        assert!(w.buffer().is_empty());
        assert!(w.holds_memory(), "kept after a flush");
    }

    #[tokio::test]
    async fn a_write_as_large_as_the_buffer_follows_what_is_buffered() {
        let mock = Builder::new().write(b"head").write(b"0123456789").build();
        let mut w = WriteBuffer::with_capacity(8, mock);
        w.write_all(b"head").await.unwrap();
        w.write_all(b"0123456789").await.unwrap();
        assert!(w.buffer().is_empty());
        w.flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_write_that_overflows_the_buffer_flushes_it_first() {
        let mock = Builder::new().write(b"abcde").write(b"fgh").build();
        let mut w = WriteBuffer::with_capacity(6, mock);
        w.write_all(b"abcde").await.unwrap();
        w.write_all(b"fgh").await.unwrap();
        assert_eq!(w.buffer(), b"fgh");
        w.flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_short_write_resumes_where_it_stopped() {
        // The mock takes at most what its next expected write holds.
        let mock = Builder::new().write(b"abc").write(b"def").build();
        let mut w = WriteBuffer::with_capacity(16, mock);
        w.write_all(b"abcdef").await.unwrap();
        w.flush().await.unwrap();
        assert!(w.buffer().is_empty());
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_what_was_not_written() {
        let mock = Builder::new()
            .write(b"ab")
            .write_error(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
            .build();
        let mut w = WriteBuffer::with_capacity(16, mock);
        w.write_all(b"abcd").await.unwrap();
        let e = w.flush().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(w.buffer(), b"cd");
        w.release();
        assert!(w.holds_memory(), "buffered bytes are not given up");
    }

    #[tokio::test]
    async fn released_memory_is_taken_again_by_the_next_write() {
        let mock = Builder::new().write(b"one").write(b"two").build();
        let mut w = WriteBuffer::with_capacity(16, mock);
        w.write_all(b"one").await.unwrap();
        w.flush().await.unwrap();
        w.release();
        assert!(!w.holds_memory());
        w.write_all(b"two").await.unwrap();
        assert!(w.holds_memory());
        w.flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_zero_capacity_writes_straight_through() {
        let mock = Builder::new().write(b"x").write(b"yz").build();
        let mut w = WriteBuffer::with_capacity(0, mock);
        w.write_all(b"x").await.unwrap();
        w.write_all(b"yz").await.unwrap();
        assert!(!w.holds_memory());
        w.flush().await.unwrap();
    }

    #[tokio::test]
    async fn vectored_writes_are_buffered_whole_or_passed_on() {
        let mock = Builder::new()
            .write(b"head:body")
            .write(b"0123456789ab")
            .build();
        let mut w = WriteBuffer::with_capacity(12, mock);
        let n = w
            .write_vectored(&[IoSlice::new(b"head:"), IoSlice::new(b"body")])
            .await
            .unwrap();
        assert_eq!(n, 9);
        assert_eq!(w.buffer(), b"head:body");
        // Larger than the buffer: what is buffered goes first, then (to a
        // stream without vectored writes) the first slice on its own.
        let n = w
            .write_vectored(&[IoSlice::new(b"0123456789ab"), IoSlice::new(b"cd")])
            .await
            .unwrap();
        assert_eq!(n, 12);
        assert!(w.buffer().is_empty());
        w.flush().await.unwrap();
    }

    /// A stream that takes a random part of each write, and now and then
    /// none (not ready yet), keeping all it took.
    struct Choppy {
        taken: Vec<u8>,
        rng: rand::rngs::StdRng,
        vectored: bool,
    }

    impl AsyncWrite for Choppy {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            use rand::Rng;
            if data.is_empty() {
                return Poll::Ready(Ok(0));
            }
            if self.rng.gen_bool(0.2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = self.rng.gen_range(1..=data.len());
            self.taken.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
            self.poll_write(cx, first)
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Whatever the sizes of the writes, the capacity and how much the
    /// stream takes at a time, the stream gets every byte once, in order,
    /// and a flush leaves nothing buffered.
    #[tokio::test]
    async fn every_byte_arrives_once_in_order_under_random_writes() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let capacity = rng.gen_range(0..64);
            let inner = Choppy {
                taken: Vec::new(),
                rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed),
                vectored: rng.gen_bool(0.5),
            };
            let mut w = WriteBuffer::with_capacity(capacity, inner);
            let mut sent = Vec::new();
            let mut next = 0u8;
            let mut bytes = |n: usize| -> Vec<u8> {
                (0..n)
                    .map(|_| {
                        next = next.wrapping_add(1);
                        next
                    })
                    .collect()
            };
            for _ in 0..50 {
                match rng.gen_range(0..5) {
                    0 | 1 => {
                        let data = bytes(rng.gen_range(0..100));
                        w.write_all(&data).await.unwrap();
                        sent.extend_from_slice(&data);
                    }
                    2 => {
                        let a = bytes(rng.gen_range(0..40));
                        let b = bytes(rng.gen_range(0..40));
                        let n = w
                            .write_vectored(&[IoSlice::new(&a), IoSlice::new(&b)])
                            .await
                            .unwrap();
                        // Only what it took was written.
                        let both = [a, b].concat();
                        sent.extend_from_slice(&both[..n]);
                    }
                    3 => {
                        w.flush().await.unwrap();
                        assert!(w.buffer().is_empty(), "seed {seed}");
                    }
                    _ => w.release(),
                }
            }
            w.flush().await.unwrap();
            assert_eq!(w.get_ref().taken, sent, "seed {seed}");
        }
    }

    #[tokio::test]
    async fn shutdown_writes_out_what_is_buffered() {
        let mock = Builder::new().write(b"bye").build();
        let mut w = WriteBuffer::with_capacity(16, mock);
        w.write_all(b"bye").await.unwrap();
        w.shutdown().await.unwrap();
    }
}
