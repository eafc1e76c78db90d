//! Keep-alive HTTP/1.1 connections to a plain-HTTP upstream, each driven by the task of the
//! request that uses it.
//!
//! The request's task writes the request and reads the response head itself, and the response
//! body reads the rest of the response as the client takes it; once the body has ended, the
//! connection goes back to the pool. No task, channel or waker is shared between requests.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Payload;
use super::h1::{self, Decoded, Decoder, Parsed, RequestHead, ResponseHead};
use crate::body::{Body, BoxError};

/// How long a connection may sit unused in the pool before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream; more are closed when their response ends.
const MAX_IDLE: usize = 512;
/// Spare room made in a connection's read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

/// Why an exchange failed before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect failed: {0}")]
    Connect(#[source] BoxError),
    #[error("exchange failed: {0}")]
    Exchange(#[source] BoxError),
}

/// One upstream connection and the bytes read from it but not yet consumed.
struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

struct Idle {
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

/// The request body as the exchange sends it.
struct Outgoing {
    /// The head, serialised once: a retry on another connection sends the same bytes.
    head: Bytes,
    /// The body's first data (all of it unless `rest` is set).
    first: Bytes,
    /// Further frames still to be read from the client; such a request is never resent.
    rest: Option<Body>,
    chunked: bool,
}

/// How an exchange failed, and whether the request may go out again on another connection.
enum Failure {
    /// Nothing of the request can have been acted on: it was not written, or (for an
    /// idempotent request) the connection closed before any byte of a response.
    Retryable(BoxError),
    Fatal(BoxError),
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

    /// Sends a request on a pooled connection or a new one. A pooled connection found closed
    /// before the request could have been acted on is replaced, once per pooled connection.
    pub async fn send(
        self: &Arc<Self>,
        mut head: RequestHead<'_>,
        payload: Payload,
    ) -> Result<Response<Body>, SendError> {
        let mut out = match payload {
            Payload::Buffered(body) => encode(&mut head, body, None),
            // Boxed: only a streamed body needs to wait for its first data.
            Payload::Streaming(body) => Box::pin(outgoing(&mut head, body)).await?,
        };
        let idempotent = head.method.is_idempotent();
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                // Boxed: connecting is the rare path, and its future would otherwise make
                // every request's future larger.
                None => (Box::pin(self.connect()).await?, false),
            };
            match exchange(&mut conn, &mut out, head.method, idempotent).await {
                Ok(resp) => return Ok(self.response(conn, resp)),
                Err(Failure::Retryable(_)) if reused => {}
                Err(Failure::Retryable(e) | Failure::Fatal(e)) => {
                    return Err(SendError::Exchange(e));
                }
            }
        }
    }

    fn response(self: &Arc<Self>, conn: Conn, head: ResponseHead) -> Response<Body> {
        let mut body = UpstreamBody {
            conn: Some(conn),
            decoder: Decoder::new(head.framing),
            keep_alive: head.keep_alive,
            pool: Arc::downgrade(self),
        };
        if body.decoder.is_done() {
            body.release();
        }
        let mut resp = Response::new(body.boxed_unsync());
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        resp
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let io = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| SendError::Connect("connect timed out".into()))?
            .map_err(|e| SendError::Connect(e.into()))?;
        let _ = io.set_nodelay(true);
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }

    /// The most recently used live connection, if any. A close (or stray bytes) the upstream
    /// sent while the connection sat idle is noticed here rather than mid-request.
    fn checkout(&self) -> Option<Conn> {
        loop {
            let idle = self.lock().pop()?;
            if idle.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            match idle.conn.io.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(idle.conn),
                _ => continue,
            }
        }
    }

    fn checkin(self: &Arc<Self>, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle { conn, since: now });
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

/// Reads a streamed body's first frame: a body that turns out to be complete then goes out in
/// one write with the head.
async fn outgoing(head: &mut RequestHead<'_>, mut body: Body) -> Result<Outgoing, SendError> {
    let mut first = Bytes::new();
    if !body.is_end_stream() {
        match body.frame().await {
            Some(Ok(frame)) => first = frame.into_data().unwrap_or_default(),
            Some(Err(e)) => return Err(SendError::Exchange(e)),
            None => {}
        }
    }
    let rest = (!body.is_end_stream()).then_some(body);
    Ok(encode(head, first, rest))
}

/// Sets the head's framing from the body's first data and what remains, and serialises it.
fn encode(head: &mut RequestHead<'_>, first: Bytes, rest: Option<Body>) -> Outgoing {
    head.length = match &rest {
        None => Some(first.len() as u64),
        Some(rest) => rest.size_hint().exact().map(|n| n + first.len() as u64),
    };
    let mut wire = Vec::with_capacity(512);
    h1::encode_request(&mut wire, head);
    Outgoing {
        head: Bytes::from(wire),
        first,
        chunked: head.length.is_none(),
        rest,
    }
}

/// Writes the request and reads the response head.
async fn exchange(
    conn: &mut Conn,
    out: &mut Outgoing,
    method: &Method,
    idempotent: bool,
) -> Result<ResponseHead, Failure> {
    write_request(&mut conn.io, out).await?;
    let resendable = idempotent && out.rest.is_none();
    read_head(conn, method).await.map_err(|(e, nothing_read)| {
        if nothing_read && resendable {
            Failure::Retryable(e)
        } else {
            Failure::Fatal(e)
        }
    })
}

async fn write_request(io: &mut TcpStream, out: &mut Outgoing) -> Result<(), Failure> {
    let mut first = if out.chunked && !out.first.is_empty() {
        chunk(out.first.clone())
    } else {
        Bytes::new().chain(out.first.clone()).chain(Bytes::new())
    };
    let mut wire = out.head.clone().chain(&mut first);
    let total = wire.remaining();
    if let Err(e) = io.write_all_buf(&mut wire).await {
        // Nothing written: the connection was dead before the request reached it.
        return Err(if wire.remaining() == total {
            Failure::Retryable(e.into())
        } else {
            Failure::Fatal(e.into())
        });
    }
    let Some(rest) = &mut out.rest else {
        return Ok(());
    };
    write_rest(io, rest, out.chunked)
        .await
        .map_err(Failure::Fatal)
}

/// Streams the remaining frames of a request body the client is still sending.
async fn write_rest(io: &mut TcpStream, body: &mut Body, chunked: bool) -> Result<(), BoxError> {
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            io.write_all_buf(&mut chunk(data)).await?;
        } else {
            io.write_all_buf(&mut data.clone()).await?;
        }
    }
    if chunked {
        io.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// One chunk of a chunked request body: size line, data, CRLF.
fn chunk(data: Bytes) -> bytes::buf::Chain<bytes::buf::Chain<Bytes, Bytes>, Bytes> {
    Bytes::from(format!("{:x}\r\n", data.len()))
        .chain(data)
        .chain(Bytes::from_static(b"\r\n"))
}

/// Reads until a final response head has been parsed; interim 1xx responses are skipped. On
/// failure, also says whether no byte at all had arrived.
async fn read_head(conn: &mut Conn, method: &Method) -> Result<ResponseHead, (BoxError, bool)> {
    let mut nothing_read = true;
    loop {
        if !conn.buf.is_empty() {
            nothing_read = false;
            let data = conn.buf.split().freeze();
            match h1::parse_response(&data, method).map_err(|e| (e.into(), false))? {
                Parsed::Head(head, len) => {
                    conn.buf.extend_from_slice(&data[len..]);
                    return Ok(head);
                }
                Parsed::Interim(len) => {
                    conn.buf.extend_from_slice(&data[len..]);
                    continue;
                }
                Parsed::Partial => conn.buf.extend_from_slice(&data),
            }
        }
        reserve(&mut conn.buf);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) => {
                let e = "upstream closed the connection without a response".into();
                return Err((e, nothing_read));
            }
            Ok(_) => {}
            Err(e) => return Err((e.into(), nothing_read)),
        }
    }
}

/// Room for the next read. The buffer's memory is shared with body data already handed on, so
/// it is only replaced once little spare room is left.
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
}

/// An upstream response body, read from the connection as the client takes it. Once the body
/// has ended the connection returns to the pool; dropped early (the client left an SSE stream),
/// the connection is closed and the upstream sees the stream end.
struct UpstreamBody {
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
    pool: Weak<Pool>,
}

impl UpstreamBody {
    /// Back to the pool if the body ended cleanly and nothing follows it on the connection.
    fn release(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.keep_alive
            && self.decoder.is_done()
            && conn.buf.is_empty()
            && let Some(pool) = self.pool.upgrade()
        {
            pool.checkin(conn);
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.buf) {
                Err(e) => return this.fail(e),
                Ok(Decoded::End) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Decoded::Data(data)) => {
                    // A malformed tail is left in the buffer: the next poll reports it.
                    if this.decoder.settle(&mut conn.buf).unwrap_or(false) {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::NeedMore) => {}
            }
            reserve(&mut conn.buf);
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.buf
            )) {
                Ok(0) if this.decoder.at_eof() => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("upstream closed the connection mid-body"),
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        self.release();
    }
}
