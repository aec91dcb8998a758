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

//! A guard against HTTP/2 control-frame floods on a downstream connection.
//!
//! A client may send PING and SETTINGS frames as fast as it can write them;
//! each costs the server a decode and an acknowledgement, and the `h2` crate
//! sets no bound on their rate. The guard reads the frame headers as the
//! bytes go by (nine bytes per frame, no payload is copied) and fails the
//! read once a connection sends more than a set number of PING and SETTINGS
//! frames (acknowledgements excluded) in one second, which ends the
//! connection. A client behaving normally sends a handful per connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::apps::HttpServerEvents;
use crate::protocols::digest::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest,
};
use crate::protocols::raw_connect::ProxyDigest;
use crate::protocols::tls::{SslDigest, TlsRef};
use crate::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// Follows frame boundaries in a byte stream that starts with the preface.
#[derive(Debug)]
struct FrameScanner {
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
}

impl FrameScanner {
    fn new() -> Self {
        FrameScanner {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
        }
    }

    /// Calls `frame(type, flags)` for each frame header completed in `bytes`.
    fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(u8, u8)) {
        let skip = self.preface_left.min(bytes.len());
        self.preface_left -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == FRAME_HEADER_LEN {
                let h = self.header;
                self.payload_left = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                self.header_len = 0;
                frame(h[3], h[4]);
            }
        }
    }
}

/// A downstream stream that fails its reads once the client floods control
/// frames; see the module documentation.
pub struct ControlFrameGuard {
    inner: Stream,
    scanner: FrameScanner,
    limit_per_sec: u32,
    window_start: Instant,
    in_window: u32,
    tripped: bool,
    events: Option<Arc<dyn HttpServerEvents>>,
}

impl std::fmt::Debug for ControlFrameGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlFrameGuard")
            .field("inner", &self.inner)
            .field("limit_per_sec", &self.limit_per_sec)
            .finish()
    }
}

impl ControlFrameGuard {
    /// Wraps `inner`, an HTTP/2 connection whose first bytes are the preface.
    pub fn new(
        inner: Stream,
        limit_per_sec: u32,
        events: Option<Arc<dyn HttpServerEvents>>,
    ) -> Self {
        ControlFrameGuard {
            inner,
            scanner: FrameScanner::new(),
            limit_per_sec,
            window_start: Instant::now(),
            in_window: 0,
            tripped: false,
            events,
        }
    }

    /// Counts the frames in newly read bytes; true once over the limit.
    fn over_limit(&mut self, bytes: &[u8]) -> bool {
        let mut control = 0u32;
        self.scanner.feed(bytes, |kind, flags| {
            if matches!(kind, PING | SETTINGS) && flags & ACK == 0 {
                control += 1;
            }
        });
        if control == 0 {
            return false;
        }
        let now = Instant::now();
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.in_window = 0;
        }
        self.in_window = self.in_window.saturating_add(control);
        self.in_window > self.limit_per_sec
    }
}

impl AsyncRead for ControlFrameGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.tripped {
            return Poll::Ready(Err(flood_error()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            if self.over_limit(&buf.filled()[before..]) {
                self.tripped = true;
                if let Some(events) = &self.events {
                    events.h2_control_flood();
                }
                return Poll::Ready(Err(flood_error()));
            }
        }
        res
    }
}

fn flood_error() -> std::io::Error {
    std::io::Error::other("HTTP/2 control frame flood: too many PING or SETTINGS frames")
}

impl AsyncWrite for ControlFrameGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for ControlFrameGuard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for ControlFrameGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ControlFrameGuard {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ControlFrameGuard {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ControlFrameGuard {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ControlFrameGuard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for ControlFrameGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The guard as a `Stream`, when a limit is set.
pub fn guard(
    stream: Stream,
    limit_per_sec: Option<u32>,
    events: Option<Arc<dyn HttpServerEvents>>,
) -> Stream {
    match limit_per_sec {
        Some(limit) => Box::new(ControlFrameGuard::new(stream, limit, events)),
        None => stream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![0, (payload >> 8) as u8, payload as u8, kind, flags, 0, 0, 0, 0];
        f.resize(FRAME_HEADER_LEN + payload, 0xaa);
        f
    }

    #[test]
    fn frames_are_found_across_reads_of_any_size() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(SETTINGS, 0, 12));
        bytes.extend(frame(0x1, 0x4, 300));
        bytes.extend(frame(PING, 0, 8));
        bytes.extend(frame(PING, ACK, 8));
        for chunk in [1usize, 2, 7, 9, 10, 64, 4096] {
            let mut s = FrameScanner::new();
            let mut seen = Vec::new();
            for piece in bytes.chunks(chunk) {
                s.feed(piece, |k, f| seen.push((k, f)));
            }
            assert_eq!(seen, [(SETTINGS, 0), (0x1, 0x4), (PING, 0), (PING, ACK)], "{chunk}");
        }
    }
}
