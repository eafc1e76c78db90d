//! Listeners: accept loop with a connection limit, TLS handshake with a timeout, HTTP/1.1 and
//! HTTP/2 on one port, header-read and idle timeouts, and graceful drain on shutdown.

mod park;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::body::Body;
use crate::clock::now_ms;
use crate::metrics::Metrics;
pub use park::RequestBody;
use park::{Exchange, Park, ParkIo, ResponseBody};
use tls::TlsConn;

/// Per-connection limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Time allowed for the TLS handshake and for each request's headers (slowloris).
    pub header_read_timeout: Duration,
    /// A connection that moves no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
}

/// What the request handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Serves `handler` on `listener` until `shutdown` fires, then drains open connections for up
/// to `limits.drain_timeout`: in-flight requests and open SSE streams may finish.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Request<RequestBody>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Fired when the drain timeout passes: connections still open then are dropped.
    let close_now = CancellationToken::new();
    let protocols = Arc::new(Protocols::new());
    loop {
        // Waiting for a permit before accepting leaves excess clients in the kernel backlog
        // instead of spending memory on connections we would refuse anyway.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            protocols: protocols.clone(),
            shutdown: shutdown.clone(),
            tls: tls.clone(),
            limits,
            metrics: metrics.clone(),
            close_now: close_now.clone(),
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            conn.run(stream, peer, handler).await;
            drop(permit);
        });
    }
    drop(listener);
    info!(timeout = ?limits.drain_timeout, "listener closed; draining connections");
    // Every open connection holds a permit: all of them back means all connections are closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = permits.acquire_many(all);
    tokio::pin!(drained);
    tokio::select! {
        _ = &mut drained => info!("all connections drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => {
            warn!("drain timeout passed; closing remaining connections");
            close_now.cancel();
            // Each connection drops its socket as soon as it sees `close_now`; waiting for
            // the drain to complete means none is left open once `serve` returns.
            let _ = drained.await;
        }
    }
}

/// hyper's per-protocol settings, shared by every connection of a listener.
struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new() -> Self {
        let mut h1 = http1::Builder::new();
        // No timer, so no header-read timeout of hyper's: `Connection::until_idle` enforces
        // ours with the connection's own timer. hyper's armed a timer for every request (~800
        // instructions a request, callgrind, tests/load).
        h1.header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size(64 * 1024);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(64 * 1024)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Protocols { h1, h2 }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// See [`Connection::park_after`].
const PARK_AFTER: Duration = Duration::from_millis(250);

/// Reads until the bytes either are the HTTP/2 preface or cannot be. `None`: closed at once.
async fn sniff<IO: AsyncRead + Unpin>(io: &mut IO) -> io::Result<Option<(bool, Bytes)>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    while len < buf.len() {
        let n = io.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len] != H2_PREFACE[..len] {
            break;
        }
    }
    if len == 0 {
        return Ok(None);
    }
    Ok(Some((
        &buf[..] == H2_PREFACE,
        Bytes::copy_from_slice(&buf[..len]),
    )))
}

/// hyper's unread bytes first, then whatever our IO had not handed to it yet.
/// An empty result holds no allocation: an empty slice of hyper's buffer would pin all of it.
fn leftover(read_buf: Bytes, prefix: Bytes) -> Bytes {
    match (read_buf.is_empty(), prefix.is_empty()) {
        (true, true) => return Bytes::new(),
        (false, true) => return read_buf,
        (true, false) => return prefix,
        (false, false) => {}
    }
    let mut joined = BytesMut::with_capacity(read_buf.len() + prefix.len());
    joined.extend_from_slice(&read_buf);
    joined.extend_from_slice(&prefix);
    joined.freeze()
}

struct Connection {
    protocols: Arc<Protocols>,
    shutdown: CancellationToken,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    close_now: CancellationToken,
}

impl Connection {
    async fn run<H, F>(self, stream: TcpStream, peer: SocketAddr, handler: H)
    where
        H: Fn(Request<RequestBody>, ConnInfo) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let metrics = self.metrics.clone();
        if let Some(m) = &metrics {
            m.connection_opened();
        }
        let mut serving = std::pin::pin!(self.serve_stream(stream, peer, handler));
        let mut close_now = Signal::new(&self.close_now);
        let closed = std::future::poll_fn(|cx| match serving.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(false),
            Poll::Pending => close_now.poll(cx).map(|()| true),
        })
        .await;
        if closed {
            debug!(client.ip = %peer.ip(), "drain timeout passed; connection closed");
        }
        if let Some(m) = &metrics {
            m.connection_closed();
        }
    }

    /// TLS handshake (when configured), then HTTP until the connection ends.
    async fn serve_stream<H, F>(&self, stream: TcpStream, peer: SocketAddr, handler: H)
    where
        H: Fn(Request<RequestBody>, ConnInfo) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let info = ConnInfo {
            peer,
            tls: self.tls.is_some(),
        };
        let activity = Activity::default();
        activity.touch();
        let activity = Arc::new(activity);
        let stream = IdleIo {
            inner: stream,
            activity: activity.clone(),
        };
        // Each stage boxed: the task then holds two pointers, and a parked connection keeps
        // neither the plain-socket stage's state nor the finished handshake's (2.7 KiB a TLS
        // connection, heaptrack: a `match` on an awaited handshake keeps its future alive for
        // the whole arm).
        match &self.tls {
            None => Box::pin(self.drive(stream, info, &activity, handler)).await,
            Some(config) => {
                let Some(tls) = Box::pin(self.accept_tls(config, stream, info)).await else {
                    return;
                };
                Box::pin(self.drive(tls, info, &activity, handler)).await
            }
        }
    }

    /// The TLS handshake, within the header-read timeout.
    async fn accept_tls(
        &self,
        config: &Arc<rustls::ServerConfig>,
        stream: IdleIo<TcpStream>,
        info: ConnInfo,
    ) -> Option<Box<TlsConn<IdleIo<TcpStream>>>> {
        let handshake = TlsConn::accept(config.clone(), stream);
        let accepted = tokio::time::timeout(self.limits.header_read_timeout, handshake).await;
        match accepted {
            Ok(Ok(tls)) => return Some(Box::new(tls)),
            Ok(Err(e)) => {
                debug!(client.ip = %info.peer.ip(), error = %e, "TLS handshake failed");
                self.tls_failed("error");
            }
            Err(_) => {
                debug!(client.ip = %info.peer.ip(), "TLS handshake timed out");
                self.tls_failed("timeout");
            }
        }
        None
    }

    fn tls_failed(&self, reason: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.tls_handshake_failed(reason);
        }
    }

    /// Picks the protocol from the first bytes, as hyper-util's auto builder does.
    async fn drive<IO, H, F>(&self, mut io: IO, info: ConnInfo, activity: &Activity, handler: H)
    where
        IO: Park,
        H: Fn(Request<RequestBody>, ConnInfo) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        // Nothing was read yet, so the idle timeout counts from the accept, as does this one.
        let wait = self
            .limits
            .header_read_timeout
            .min(self.limits.idle_timeout);
        let first = Box::pin(tokio::time::timeout(wait, sniff(&mut io))).await;
        let (h2, prefix) = match first {
            Ok(Ok(Some(found))) => found,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => return debug!(client.ip = %info.peer.ip(), error = %e, "read failed"),
            Err(_) => {
                return debug!(client.ip = %info.peer.ip(), "no request before header_read_timeout");
            }
        };
        // Boxed like every state a parked HTTP/1 connection is not in.
        if h2 {
            Box::pin(self.serve_h2(io, prefix, info, activity, handler)).await
        } else {
            self.serve_h1(io, prefix, info, activity, handler).await
        }
    }

    async fn serve_h2<IO, H, F>(
        &self,
        io: IO,
        prefix: Bytes,
        info: ConnInfo,
        activity: &Activity,
        handler: H,
    ) where
        IO: Park,
        H: Fn(Request<RequestBody>, ConnInfo) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        // No request reports to this exchange, so it never arms: the IO only replays the
        // sniffed bytes. With the bare response body, the connection future's `Send` check
        // trips rust-lang/rust#102211; the wrapper avoids it.
        let exchange = Arc::new(Exchange::new());
        let responses = exchange.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let fut = handler(req.map(|b| RequestBody::new(b, None)), info);
            let exchange = responses.clone();
            async move { Ok::<_, Infallible>(fut.await.map(|b| ResponseBody::new(b, exchange))) }
        });
        let io = ParkIo::new(io, prefix, exchange);
        let mut conn = Box::pin(self.protocols.h2.serve_connection(TokioIo::new(io), svc));
        let ended = self
            .until_idle(conn.as_mut(), activity, info, None, |c| {
                c.graceful_shutdown()
            })
            .await;
        if let Some(Err(e)) = ended {
            debug!(client.ip = %info.peer.ip(), error = %e, "connection ended with an error");
        }
    }

    /// One hyper connection per burst of requests; between bursts only the socket is kept.
    async fn serve_h1<IO, H, F>(
        &self,
        mut io: IO,
        mut prefix: Bytes,
        info: ConnInfo,
        activity: &Activity,
        handler: H,
    ) where
        IO: Park,
        H: Fn(Request<RequestBody>, ConnInfo) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        loop {
            let exchange = Arc::new(Exchange::new());
            let svc = h1_service(handler.clone(), info, exchange.clone());
            let park = ParkIo::new(io, prefix, exchange.clone());
            let mut conn = Box::new(self.protocols.h1.serve_connection(TokioIo::new(park), svc));
            // Boxed: allocated only while requests flow, so the parked task stays small.
            let serving = Box::pin(self.until_idle(
                Pin::new(&mut *conn),
                activity,
                info,
                Some(&exchange),
                |c| c.graceful_shutdown(),
            ));
            let Some(ended) = serving.await else {
                return;
            };
            let Some((socket, rest)) = reclaim(*conn, ended, info) else {
                return;
            };
            io = socket;
            prefix = rest;
            if prefix.is_empty() {
                let _parked = self.metrics.as_deref().map(Metrics::parked);
                if !self.park(&mut io, activity, info).await {
                    return;
                }
            }
        }
    }

    /// Polls a hyper connection to its end, asking it to finish gracefully on shutdown.
    /// `None`: the idle timeout closed it first. With an `exchange` (HTTP/1), the connection
    /// may park once it has been quiet for `park_after`.
    async fn until_idle<C: Future>(
        &self,
        mut conn: Pin<&mut C>,
        activity: &Activity,
        info: ConnInfo,
        exchange: Option<&Exchange>,
        graceful: impl Fn(Pin<&mut C>),
    ) -> Option<C::Output> {
        let idle = self.limits.idle_timeout;
        let park_after = self.park_after();
        let head_timeout = self.limits.header_read_timeout;
        let head_wait = || exchange.and_then(Exchange::head_wait);
        let wait_from = |quiet: Duration| {
            let mut wait = idle.saturating_sub(quiet);
            // Once allowed, parking waits for the exchange to end (an SSE stream may stay open
            // and quiet for long): no timer until the idle timeout.
            if exchange.is_some_and(|e| !e.quiet()) {
                wait = wait.min(park_after.saturating_sub(quiet));
            }
            if let Some(waited) = head_wait() {
                wait = wait.min(head_timeout.saturating_sub(waited));
            }
            wait.max(Duration::from_millis(100))
        };
        let mut timer = Timer::new(wait_from(activity.idle_for()));
        let mut shutdown = Some(Signal::new(&self.shutdown));
        loop {
            let woke = std::future::poll_fn(|cx| {
                if let Poll::Ready(ended) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Wake::Ended(ended));
                }
                if timer.poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                match shutdown.as_mut().map(|s| s.poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Wake::Shutdown),
                    _ => Poll::Pending,
                }
            })
            .await;
            match woke {
                Wake::Ended(ended) => return Some(ended),
                Wake::Timer => {
                    let quiet = activity.idle_for();
                    if quiet >= idle {
                        debug!(client.ip = %info.peer.ip(), "idle timeout; closing connection");
                        return None;
                    }
                    // Slowloris: a request head that trickles in (or never comes while the
                    // connection is still held by hyper) ends the connection.
                    if head_wait().is_some_and(|waited| waited >= head_timeout) {
                        debug!(client.ip = %info.peer.ip(), "no request head within header_read_timeout; closing connection");
                        return None;
                    }
                    // The next poll of `conn` makes hyper read, where the IO reports the end.
                    if let Some(exchange) = exchange.filter(|_| quiet >= park_after) {
                        exchange.allow_park();
                    }
                    timer.reset(wait_from(quiet));
                }
                Wake::Shutdown => {
                    graceful(conn.as_mut());
                    shutdown = None;
                }
            }
        }
    }

    /// How long an HTTP/1 connection stays quiet before its hyper state is released: short
    /// enough that idle connections give memory back at once, long enough that a client sending
    /// request after request keeps its connection. Below the header timeout, which would
    /// otherwise end a connection quiet between requests.
    fn park_after(&self) -> Duration {
        PARK_AFTER.min(self.limits.header_read_timeout / 2)
    }

    /// Waits, holding no buffer, for the next request. `false`: close the connection.
    async fn park<IO: Park>(&self, io: &mut IO, activity: &Activity, info: ConnInfo) -> bool {
        let idle = self.limits.idle_timeout;
        loop {
            let wait = idle
                .saturating_sub(activity.idle_for())
                .max(Duration::from_millis(100));
            tokio::select! {
                ready = std::future::poll_fn(|cx| io.poll_read_ready(cx)) => return ready.is_ok(),
                _ = tokio::time::sleep(wait) => {
                    if activity.idle_for() >= idle {
                        debug!(client.ip = %info.peer.ip(), "idle timeout; closing connection");
                        return false;
                    }
                }
                _ = self.shutdown.cancelled() => {
                    let _ = io.shutdown().await;
                    return false;
                }
            }
        }
    }
}

/// The socket and its unread bytes, when hyper stopped only because we reported end-of-file.
/// A plain function: its locals would otherwise stay in the parked connection's task.
fn reclaim<IO, S, B>(
    conn: http1::Connection<TokioIo<ParkIo<IO>>, S>,
    ended: hyper::Result<()>,
    info: ConnInfo,
) -> Option<(IO, Bytes)>
where
    IO: Park,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let parts = conn.into_parts();
    let park = parts.io.into_inner();
    // After our end-of-file hyper can only fail on a pipelined request cut short, whose bytes
    // come back in `read_buf`.
    let reusable = match &ended {
        Ok(()) => park.parked,
        Err(e) => park.parked && e.is_incomplete_message(),
    };
    if let (false, Err(e)) = (reusable, &ended) {
        debug!(client.ip = %info.peer.ip(), error = %e, "connection ended with an error");
    }
    reusable.then(|| (park.inner, leftover(parts.read_buf, park.prefix)))
}

/// The handler as hyper's HTTP/1 service, reporting the exchange's progress to the IO.
fn h1_service<H, F>(
    handler: H,
    info: ConnInfo,
    exchange: Arc<Exchange>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send,
> + Send
where
    H: Fn(Request<RequestBody>, ConnInfo) -> F + Send + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    service_fn(move |req: Request<Incoming>| {
        exchange.request_started(req.body().is_end_stream());
        let req = req.map(|b| RequestBody::new(b, Some(exchange.clone())));
        let fut = handler(req, info);
        let exchange = exchange.clone();
        async move { Ok(fut.await.map(|b| ResponseBody::new(b, exchange))) }
    })
}

/// Why [`Connection::until_idle`] woke up.
enum Wake<T> {
    Ended(T),
    Timer,
    Shutdown,
}

/// A connection's idle timer, polled only when it may have fired. A connection task wakes a
/// few times per request; polling its timer and signals on each wake cost ~3k instructions
/// per request (callgrind, tests/load). Once registered, the timer wakes the task itself.
struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    registered: bool,
}

impl Timer {
    fn new(wait: Duration) -> Self {
        Timer {
            sleep: Box::pin(tokio::time::sleep(wait)),
            registered: false,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        self.registered = true;
        self.sleep.as_mut().poll(cx)
    }

    fn reset(&mut self, wait: Duration) {
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + wait);
        self.registered = false;
    }
}

/// A cancellation token's future, polled only once the token is cancelled (after the first
/// poll has registered the task's waker), for the same reason as [`Timer`].
struct Signal<'a> {
    token: &'a CancellationToken,
    cancelled: Pin<Box<tokio_util::sync::WaitForCancellationFuture<'a>>>,
    registered: bool,
}

impl<'a> Signal<'a> {
    fn new(token: &'a CancellationToken) -> Self {
        Signal {
            token,
            cancelled: Box::pin(token.cancelled()),
            registered: false,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered && !self.token.is_cancelled() {
            return Poll::Pending;
        }
        self.registered = true;
        self.cancelled.as_mut().poll(cx)
    }
}

/// Milliseconds since process start of the last byte read or written on a connection.
#[derive(Default)]
struct Activity(AtomicU64);

impl Activity {
    fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let last = self.0.load(Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(last))
    }
}

pin_project_lite::pin_project! {
    /// Records activity on every successful read or write, for the idle timeout.
    struct IdleIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
    }
}

impl<T: AsyncRead> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
