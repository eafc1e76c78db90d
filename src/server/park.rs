//! HTTP/1 connections that hold no hyper state while idle between requests.
//!
//! hyper keeps a read buffer, a write buffer and its dispatcher alive for the whole life of a
//! keep-alive connection (≈ 35 KiB, most of it buffers it never shrinks). Here each hyper
//! connection serves requests only while they come: once a response is flushed, the request
//! body fully read and the socket has nothing more to read, the IO reports end-of-file, hyper
//! closes its side cleanly, and the socket is taken back and parked until it is readable again.
//! A fresh hyper connection then serves the next request.
//!
//! A connection parks only after it has been quiet for a moment (250 ms, see
//! [`Exchange::allow_park`]): a client sending request after request keeps its hyper connection,
//! so a busy connection pays nothing per request for this, and an idle one soon gives its memory
//! back.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::IdleIo;
use super::tls::TlsConn;
use crate::body::{Body, BoxError};
use crate::clock::now_ms;

/// Progress of the request/response exchange on one hyper connection. Written by the request
/// body (possibly on another task: the upstream client streams it), the response body and the
/// IO; read by the IO to decide when hyper is idle, and by the connection's timer to enforce
/// the header-read timeout.
pub(super) struct Exchange {
    state: AtomicU8,
    /// When hyper began waiting for the next request head ([`now_ms`]); 0 while a request is
    /// in progress.
    head_since: AtomicU64,
}

/// hyper has not finished reading the request body.
const BODY_OPEN: u8 = 1;
/// The response body has not ended.
const RESPONSE_OPEN: u8 = 2;
/// A response ended since the last request began.
const ANSWERED: u8 = 4;
/// A flush completed after the answer: hyper's write buffer is empty.
const ARMED: u8 = 8;
/// The connection has been quiet long enough to be parked once it is armed.
const QUIET: u8 = 16;

impl Exchange {
    /// A fresh hyper connection, which starts by waiting for a request head.
    pub(super) fn new() -> Self {
        Exchange {
            state: AtomicU8::new(0),
            head_since: AtomicU64::new(now_ms().max(1)),
        }
    }

    pub(super) fn request_started(&self, body_done: bool) {
        let body = if body_done { 0 } else { BODY_OPEN };
        self.head_since.store(0, Ordering::Relaxed);
        self.state.store(RESPONSE_OPEN | body, Ordering::Release);
    }

    /// How long hyper has been waiting for a request head, if it is.
    pub(super) fn head_wait(&self) -> Option<Duration> {
        match self.head_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }

    fn body_done(&self) {
        self.state.fetch_and(!BODY_OPEN, Ordering::AcqRel);
    }

    fn response_done(&self) {
        let answered = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & RESPONSE_OPEN != 0).then_some((s & !RESPONSE_OPEN) | ANSWERED)
            });
        if answered.is_ok() {
            // hyper now reads the next head (HTTP/1: one exchange at a time).
            self.head_since.store(now_ms().max(1), Ordering::Relaxed);
        }
    }

    /// Only an answered exchange with nothing left to read arms: an early response (401, 413)
    /// leaves the body unread, and hyper then closes the connection itself. The connection
    /// may have turned quiet before the answer ended (a slow stream); it arms all the same.
    fn try_arm(&self) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & !QUIET == ANSWERED).then_some(s | ARMED)
            })
            .is_ok()
    }

    fn armed(&self) -> bool {
        self.state.load(Ordering::Acquire) & ARMED != 0
    }

    /// Parks the connection at hyper's next read if it is armed and still has nothing to read.
    /// Cleared by the next request.
    pub(super) fn allow_park(&self) {
        self.state.fetch_or(QUIET, Ordering::AcqRel);
    }

    pub(super) fn quiet(&self) -> bool {
        self.state.load(Ordering::Acquire) & QUIET != 0
    }

    /// Bytes of a new request arrived: nothing may arm again until hyper dispatches it and
    /// answers. A request hyper refuses itself (400) is never dispatched, so hyper closes.
    fn reset(&self) {
        self.state.store(0, Ordering::Release);
    }
}

/// A request body that tells the connection when hyper has read all of it.
pub struct RequestBody {
    inner: Incoming,
    exchange: Option<Arc<Exchange>>,
}

impl RequestBody {
    pub(super) fn new(inner: Incoming, exchange: Option<Arc<Exchange>>) -> Self {
        RequestBody { inner, exchange }
    }

    fn mark_done(&mut self) {
        if let Some(e) = self.exchange.take() {
            e.body_done();
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // hyper's decoder has consumed the last byte once it hands out the end of the body.
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.mark_done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    // A handler may stop polling once it has every byte it was promised.
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.mark_done();
        }
    }
}

/// A response body that tells the connection when hyper has taken its last frame.
pub(super) struct ResponseBody {
    inner: Body,
    exchange: Arc<Exchange>,
}

impl ResponseBody {
    pub(super) fn new(inner: Body, exchange: Arc<Exchange>) -> Self {
        ResponseBody { inner, exchange }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.exchange.response_done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.exchange.response_done();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    // hyper drops the body once the message is written (or never polls it, for HEAD); after a
    // failure it closes the connection without reading again, so this cannot park it.
    fn drop(&mut self) {
        self.exchange.response_done();
    }
}

/// The IO under one hyper HTTP/1 connection: first the bytes read ahead of it, then the
/// socket, reporting end-of-file once the exchange is over and the socket has nothing to read.
pub(super) struct ParkIo<T> {
    pub(super) inner: T,
    pub(super) prefix: Bytes,
    exchange: Arc<Exchange>,
    /// End-of-file was reported by us, not by the peer: the socket is still usable.
    pub(super) parked: bool,
}

impl<T> ParkIo<T> {
    pub(super) fn new(inner: T, prefix: Bytes, exchange: Arc<Exchange>) -> Self {
        ParkIo {
            inner,
            prefix,
            exchange,
            parked: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ParkIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // An empty slice still holds the buffer it came from.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        if !this.exchange.armed() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.exchange.quiet() => {
                this.parked = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.exchange.reset();
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ParkIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes the IO only once its own write buffer is empty, so a flush after the
    /// answer means every response byte has reached the socket. If the connection turned quiet
    /// during the response, the wake makes hyper read again, which is where it will find
    /// end-of-file. Otherwise the connection's timer allows parking later and polls hyper
    /// then: a wake here would cost every busy connection a wasted turn per request.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(())))
            && self.exchange.try_arm()
            && self.exchange.quiet()
        {
            cx.waker().wake_by_ref();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.parked {
            // hyper "closes" after our end-of-file; the socket stays open for the next request.
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection's stream that can wait, holding no buffer, until a request may be read.
pub(super) trait Park: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Park for IdleIo<TcpStream> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }
}

impl Park for TlsConn<IdleIo<TcpStream>> {
    /// Bytes already taken from the socket (decrypted or not) will not be signalled again.
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.has_input() {
            return Poll::Ready(Ok(()));
        }
        self.release_buffers();
        self.io().inner.poll_read_ready(cx)
    }
}

impl<T: Park + ?Sized> Park for Box<T> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_read_ready(cx)
    }
}
