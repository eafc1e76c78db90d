//! A scripted upstream MCP server: a real hyper server on an ephemeral loopback port that
//! records every request it receives and answers with whatever the test's behaviour says.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query, as received.
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Which TCP connection carried it, numbered from 0 in order of acceptance.
    pub connection: usize,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON-RPC message in the body, if it is one.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A latch the test opens to let a gated SSE stream continue.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Gate(Arc::new(watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// What the upstream answers.
pub enum Reply {
    Full {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// `text/event-stream`: `first` is sent at once; then, when a gate is given, the stream
    /// waits for it to open; then `rest` follows, `delay` apart; then the stream ends.
    Sse {
        headers: HeaderMap,
        first: Vec<String>,
        gate: Option<Gate>,
        rest: Vec<String>,
        delay: Duration,
        /// Notified when the upstream has written the last event and ended the body.
        finished: Option<Arc<Notify>>,
    },
    /// Waits before answering: an upstream slower than the gateway's `upstream_timeout`.
    Delayed(Duration, Box<Reply>),
}

impl Reply {
    pub fn status(code: u16) -> Reply {
        Reply::Full {
            status: StatusCode::from_u16(code).expect("status code"),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// A body sent byte for byte as given, with the given status and content type.
    pub fn bytes(code: u16, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        Reply::Full {
            status: StatusCode::from_u16(code).expect("status code"),
            headers,
            body: body.into(),
        }
    }

    pub fn json(value: &Value) -> Reply {
        Reply::bytes(200, "application/json", value.to_string())
    }

    /// `{"jsonrpc":"2.0","id":<the request's id>,"result":{"method":…,"echo":<params>}}`.
    pub fn echo(req: &Recorded) -> Reply {
        let msg = req.json().unwrap_or(Value::Null);
        Reply::json(&json!({
            "jsonrpc": "2.0",
            "id": msg.get("id").cloned().unwrap_or(Value::Null),
            "result": { "method": msg.get("method"), "echo": msg.get("params") },
        }))
    }

    /// An SSE stream of `events`, each sent as one chunk, `delay` apart.
    pub fn sse<S: ToString>(events: &[S], delay: Duration) -> Reply {
        Reply::Sse {
            headers: HeaderMap::new(),
            first: Vec::new(),
            gate: None,
            rest: events.iter().map(ToString::to_string).collect(),
            delay,
            finished: None,
        }
    }

    /// An SSE stream that sends `first`, holds the stream open until `gate` opens, then sends
    /// `rest` and ends; `finished` is notified once the upstream has ended the body.
    pub fn sse_gated<S: ToString>(
        first: &[S],
        gate: &Gate,
        rest: &[S],
        finished: &Arc<Notify>,
    ) -> Reply {
        Reply::Sse {
            headers: HeaderMap::new(),
            first: first.iter().map(ToString::to_string).collect(),
            gate: Some(gate.clone()),
            rest: rest.iter().map(ToString::to_string).collect(),
            delay: Duration::from_millis(10),
            finished: Some(finished.clone()),
        }
    }

    pub fn delayed(self, by: Duration) -> Reply {
        Reply::Delayed(by, Box::new(self))
    }

    /// Adds a response header (appends, so a name may repeat).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Delayed(by, inner) = self {
            return Reply::Delayed(by, Box::new(inner.header(name, value)));
        }
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let value = HeaderValue::from_str(value).expect("header value");
        if let Reply::Full { headers, .. } | Reply::Sse { headers, .. } = &mut self {
            headers.append(name, value);
        }
        self
    }
}

/// One SSE event carrying `data`, with an id.
pub fn sse_event(id: usize, data: &str) -> String {
    format!("id: {id}\nevent: message\ndata: {data}\n\n")
}

/// Behaves like a Streamable HTTP MCP server: POST with an id → JSON echo, POST without an
/// id (notification or response) → 202, GET → a short SSE stream, DELETE → 200.
pub fn mcp_behaviour(req: &Recorded) -> Reply {
    match req.method {
        Method::POST => match req.json() {
            Some(msg) if msg.get("id").is_some() && msg.get("method").is_some() => Reply::echo(req),
            _ => Reply::status(202),
        },
        Method::GET => Reply::sse(
            &[sse_event(
                1,
                r#"{"jsonrpc":"2.0","method":"notifications/ping"}"#,
            )],
            Duration::ZERO,
        ),
        Method::DELETE => Reply::status(200),
        _ => Reply::status(405),
    }
}

type Behaviour = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A running upstream. It stops when the test's runtime ends.
pub struct UpstreamServer {
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
}

impl UpstreamServer {
    /// An upstream that behaves like an MCP server (see [`mcp_behaviour`]).
    pub async fn mcp() -> Self {
        Self::start(mcp_behaviour).await
    }

    /// An upstream answering every request with `behaviour(request)`.
    pub async fn start(behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let behaviour: Behaviour = Arc::new(behaviour);
        let (rec, notify) = (recorded.clone(), arrived.clone());
        tokio::spawn(async move {
            for connection in 0.. {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (rec, notify, behaviour) = (rec.clone(), notify.clone(), behaviour.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (rec, notify, behaviour) =
                            (rec.clone(), notify.clone(), behaviour.clone());
                        async move {
                            let seen = record(req, connection).await;
                            Ok::<_, Infallible>(answer(seen, &rec, &notify, &behaviour).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        UpstreamServer {
            addr,
            recorded,
            arrived,
        }
    }

    /// `http://127.0.0.1:<port><path>`, for a route's `upstream`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("lock").clone()
    }

    /// The only request received; panics if there were none or several.
    pub fn only_request(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected one upstream request, got {all:#?}");
        all.into_iter().next().expect("one request")
    }

    /// Waits (up to 5 s) until at least `n` requests have arrived.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<Recorded> {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                if self.recorded.lock().expect("lock").len() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("upstream did not receive {n} request(s) in 5 s"));
        self.requests()
    }
}

async fn record(req: Request<Incoming>, connection: usize) -> Recorded {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Recorded {
        method: parts.method,
        uri: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_default(),
        version: parts.version,
        headers: parts.headers,
        body,
        connection,
    }
}

async fn answer(
    seen: Recorded,
    recorded: &Mutex<Vec<Recorded>>,
    arrived: &Notify,
    behaviour: &Behaviour,
) -> Response<Body> {
    let reply = behaviour(&seen);
    recorded.lock().expect("lock").push(seen);
    arrived.notify_waiters();
    respond(reply).await
}

async fn respond(reply: Reply) -> Response<Body> {
    let mut reply = reply;
    while let Reply::Delayed(by, inner) = reply {
        tokio::time::sleep(by).await;
        reply = *inner;
    }
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
            *resp.status_mut() = status;
            *resp.headers_mut() = headers;
            resp
        }
        Reply::Sse {
            headers,
            first,
            gate,
            rest,
            delay,
            finished,
        } => {
            let (tx, rx) = mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                for event in first {
                    if tx.send(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
                if let Some(gate) = gate {
                    gate.wait().await;
                }
                for event in rest {
                    tokio::time::sleep(delay).await;
                    if tx.send(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
                drop(tx);
                if let Some(done) = finished {
                    done.notify_one();
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
            });
            let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
            *resp.headers_mut() = headers;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            resp.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            resp
        }
        Reply::Delayed(..) => unreachable!("unwrapped above"),
    }
}

/// An `http://127.0.0.1:<port>` URL where nothing listens: the port was bound, then closed.
pub fn upstream_down(path: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{addr}{path}")
}

/// An upstream that speaks raw bytes: each connection gets the next scripted response, written
/// as is, and is then closed. For framings and faults a well-behaved server never produces.
pub struct WireUpstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl WireUpstream {
    pub async fn start(responses: Vec<Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            for response in responses {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                while !complete_request(&request) {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock().unwrap().push(request);
                let _ = sock.write_all(&response).await;
                let _ = sock.shutdown().await;
            }
        });
        WireUpstream { addr, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The raw bytes of every request received so far.
    pub fn requests(&self) -> Vec<String> {
        let seen = self.requests.lock().unwrap();
        seen.iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }
}

/// Whether `bytes` hold a whole request with a `content-length` body (or none).
fn complete_request(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= end + 4 + length
}
