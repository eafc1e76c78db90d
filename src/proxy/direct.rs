//! Keep-alive HTTP/1.1 connections to a plain-HTTP upstream, each driven by the task of the
//! request that uses it.
//!
//! hyper-util's pooled client runs every upstream connection in a task of its own, so each
//! forwarded request crosses tasks (and often threads) twice. Here the request's task polls the
//! connection itself while it waits for the response head, and the response body keeps polling
//! it while it streams; when the body ends the idle connection goes back to the pool.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};

/// Boxed once per connection: hyper's connection state is ~700 bytes, and a connection moves
/// between the pool, the request future and the response body on every exchange.
type Conn = Box<http1::Connection<TokioIo<TcpStream>, Body>>;

/// How long a connection may sit unused in the pool before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream; more are closed when their response ends.
const MAX_IDLE: usize = 512;

/// Why an exchange failed before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect failed: {0}")]
    Connect(#[source] BoxError),
    #[error("exchange failed: {0}")]
    Exchange(#[source] BoxError),
}

struct Idle {
    sender: http1::SendRequest<Body>,
    conn: Conn,
    since: Instant,
}

pub struct Pool {
    /// `host:port`, resolved at each connect so that a changed DNS record is followed.
    addr: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    sweeper: AtomicBool,
}

impl Pool {
    pub fn new(addr: String, connect_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            addr,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            sweeper: AtomicBool::new(false),
        })
    }

    /// Sends `req` (origin-form URI, `Host` set) on a pooled connection or a new one. A pooled
    /// connection that turns out closed before the request was written is replaced, once per
    /// pooled connection tried, since nothing reached the upstream.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        loop {
            let (reused, mut sender, mut conn) = match self.checkout().await {
                Some(idle) => (true, idle.sender, idle.conn),
                None => {
                    // Boxed: connecting is the rare path, and its future would otherwise make
                    // every request's future larger.
                    let (sender, conn) = Box::pin(self.connect()).await?;
                    (false, sender, conn)
                }
            };
            let exchange = pin!(sender.try_send_request(req));
            match drive(&mut conn, exchange).await {
                Some(Ok(resp)) => {
                    let (parts, body) = resp.into_parts();
                    let body = DrivenBody::new(body, sender, conn, Arc::downgrade(self));
                    return Ok(Response::from_parts(parts, body.boxed_unsync()));
                }
                Some(Err(mut e)) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Exchange(e.into_error().into())),
                },
                None => {
                    return Err(SendError::Exchange(
                        "upstream closed the connection without a response".into(),
                    ));
                }
            }
        }
    }

    async fn connect(&self) -> Result<(http1::SendRequest<Body>, Conn), SendError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| SendError::Connect("connect timed out".into()))?
            .map_err(|e| SendError::Connect(e.into()))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        Ok((sender, Box::new(conn)))
    }

    /// The most recently used live connection, if any. Each candidate is polled once so that a
    /// close the upstream sent while it sat idle is noticed here rather than mid-request.
    async fn checkout(&self) -> Option<Idle> {
        loop {
            let mut idle = self.lock().pop()?;
            if idle.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            let open =
                poll_fn(|cx| Poll::Ready(Pin::new(&mut idle.conn).poll(cx).is_pending())).await;
            if open && idle.sender.is_ready() {
                return Some(idle);
            }
        }
    }

    fn checkin(self: &Arc<Self>, sender: http1::SendRequest<Body>, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                conn,
                since: now,
            });
        }
        drop(idle);
        self.start_sweeper();
    }

    /// Closes connections idle for longer than `IDLE_TIMEOUT` even when no request comes to
    /// take them, so that the upstream's half-closed sockets do not accumulate here.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.lock().retain(|i| i.since.elapsed() <= IDLE_TIMEOUT);
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Polls the connection and the exchange together until the exchange resolves. `None` when the
/// connection ended first and the exchange can no longer resolve.
async fn drive<F: Future>(conn: &mut Conn, mut exchange: Pin<&mut F>) -> Option<F::Output> {
    let mut conn_open = true;
    poll_fn(|cx| {
        if conn_open && Pin::new(&mut *conn).poll(cx).is_ready() {
            conn_open = false;
        }
        match exchange.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending if conn_open => Poll::Pending,
            Poll::Pending => Poll::Ready(None),
        }
    })
    .await
}

/// An upstream response body that drives its connection while it streams, and returns the
/// connection to the pool once the whole body has been read. Dropped early (the client went
/// away from an SSE stream), it closes the connection: the upstream sees the stream end.
struct DrivenBody {
    body: Incoming,
    conn: Option<(http1::SendRequest<Body>, Conn)>,
    pool: Weak<Pool>,
    done: bool,
}

impl DrivenBody {
    fn new(body: Incoming, sender: http1::SendRequest<Body>, conn: Conn, pool: Weak<Pool>) -> Self {
        let done = body.is_end_stream();
        DrivenBody {
            body,
            conn: Some((sender, conn)),
            pool,
            done,
        }
    }

    fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if let Some((_, conn)) = &mut self.conn
            && Pin::new(conn).poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    /// Back to the pool if the connection is idle and ready for the next request. The poll
    /// with a no-op waker lets hyper finish the exchange's bookkeeping; nobody waits on it.
    fn release(&mut self) {
        let Some((sender, mut conn)) = self.conn.take() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        if Pin::new(&mut conn).poll(&mut cx).is_pending()
            && sender.is_ready()
            && let Some(pool) = self.pool.upgrade()
        {
            pool.checkin(sender, conn);
        }
    }
}

impl HttpBody for DrivenBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                this.poll_conn(cx);
                ready!(Pin::new(&mut this.body).poll_frame(cx))
            }
        };
        match &frame {
            None => this.done = true,
            Some(Ok(_)) => this.done = this.body.is_end_stream(),
            Some(Err(_)) => this.conn = None,
        }
        if this.done {
            this.release();
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        if self.done || self.body.is_end_stream() {
            self.release();
        }
    }
}
