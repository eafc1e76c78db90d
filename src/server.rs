//! Listeners: accept loop with a connection limit, TLS handshake with a timeout, HTTP/1.1 and
//! HTTP/2 on one port, header-read and idle timeouts, and graceful drain on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::body::Body;
use crate::metrics::Metrics;

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
    tls: Option<TlsAcceptor>,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Fired when the drain timeout passes: connections still open then are dropped.
    let close_now = CancellationToken::new();
    let builder = http_builder(limits.header_read_timeout);
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
            builder: builder.clone(),
            watcher: graceful.watcher(),
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
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        _ = &mut drained => info!("all connections drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => {
            warn!("drain timeout passed; closing remaining connections");
            close_now.cancel();
            // Each connection drops its socket as soon as it sees `close_now`; waiting for
            // the drain to complete means none is left open once `serve` returns.
            drained.await;
        }
    }
}

fn http_builder(header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

struct Connection {
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    close_now: CancellationToken,
}

impl Connection {
    async fn run<H, F>(self, stream: TcpStream, peer: SocketAddr, handler: H)
    where
        H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let metrics = self.metrics.clone();
        if let Some(m) = &metrics {
            m.connection_opened();
        }
        let close_now = self.close_now.clone();
        tokio::select! {
            () = self.serve_stream(stream, peer, handler) => {}
            () = close_now.cancelled() => {
                debug!(client.ip = %peer.ip(), "drain timeout passed; connection closed");
            }
        }
        if let Some(m) = &metrics {
            m.connection_closed();
        }
    }

    /// TLS handshake (when configured), then HTTP until the connection ends.
    async fn serve_stream<H, F>(self, stream: TcpStream, peer: SocketAddr, handler: H)
    where
        H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let info = ConnInfo {
            peer,
            tls: self.tls.is_some(),
        };
        let activity = Arc::new(Activity::default());
        activity.touch();
        let stream = IdleIo {
            inner: stream,
            activity: activity.clone(),
        };
        match self.tls.clone() {
            None => self.drive(stream, info, activity, handler).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => self.drive(tls, info, activity, handler).await,
                    Ok(Err(e)) => {
                        debug!(client.ip = %peer.ip(), error = %e, "TLS handshake failed")
                    }
                    Err(_) => debug!(client.ip = %peer.ip(), "TLS handshake timed out"),
                }
            }
        }
    }

    async fn drive<IO, H, F>(self, io: IO, info: ConnInfo, activity: Arc<Activity>, handler: H)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let svc = service_fn(move |req| {
            let fut = handler(req, info);
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), svc);
        let conn = self.watcher.watch(conn);
        tokio::pin!(conn);
        let idle = self.limits.idle_timeout;
        loop {
            let wait = idle
                .saturating_sub(activity.idle_for())
                .max(Duration::from_millis(100));
            tokio::select! {
                result = &mut conn => {
                    if let Err(e) = result {
                        debug!(client.ip = %info.peer.ip(), error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep(wait) => {
                    if activity.idle_for() >= idle {
                        debug!(client.ip = %info.peer.ip(), "idle timeout; closing connection");
                        return;
                    }
                }
            }
        }
    }
}

/// Milliseconds since process start of the last byte read or written on a connection.
#[derive(Default)]
struct Activity(AtomicU64);

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

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
