//! The built-in demo upstream: a small real Streamable HTTP MCP server on a loopback port,
//! so the quick start works with no MCP server installed. Tools: echo, add, whoami.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::body::{Body, empty, full, read_limited};

const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
const MAX_BODY: u64 = 1 << 20;

/// Sessions the demo has handed out; bounded and expiring like everything else.
struct Demo {
    sessions: moka::sync::Cache<String, ()>,
}

/// Binds the demo server on 127.0.0.1 (ephemeral port) and serves it in the background.
pub async fn spawn() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let demo = Arc::new(Demo {
        sessions: moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_idle(Duration::from_secs(3600))
            .build(),
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let demo = demo.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let demo = demo.clone();
                    async move { Ok::<_, Infallible>(demo.handle(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

impl Demo {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let session = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match *req.method() {
            Method::POST => {}
            Method::DELETE => return self.delete(session),
            _ => return status(StatusCode::METHOD_NOT_ALLOWED),
        }
        let headers = req.headers().clone();
        let Ok(body) = read_limited(req.into_body(), MAX_BODY).await else {
            return status(StatusCode::PAYLOAD_TOO_LARGE);
        };
        let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                &rpc_error(Value::Null, -32700, "Parse error"),
                None,
            );
        };
        let method = msg
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if method != "initialize" && !self.known(session.as_deref()) {
            return status(if session.is_some() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            });
        }
        let Some(id) = msg.get("id").cloned() else {
            return status(StatusCode::ACCEPTED); // notifications and client responses
        };
        if method == "initialize" {
            return self.initialize(id, &msg);
        }
        json_response(StatusCode::OK, &call(id, method, &msg, &headers), None)
    }

    fn known(&self, session: Option<&str>) -> bool {
        session.is_some_and(|s| self.sessions.contains_key(s))
    }

    fn initialize(&self, id: Value, msg: &Value) -> Response<Body> {
        let asked = msg
            .pointer("/params/protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let version = PROTOCOL_VERSIONS
            .iter()
            .find(|v| **v == asked)
            .unwrap_or(&PROTOCOL_VERSIONS[0]);
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).unwrap_or_default();
        let session: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.sessions.insert(session.clone(), ());
        let result = json!({
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": { "name": "mcpgate-demo", "version": env!("CARGO_PKG_VERSION") },
            "instructions": "Demo upstream built into mcpgate: tools echo, add and whoami."
        });
        json_response(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Some(session),
        )
    }

    fn delete(&self, session: Option<String>) -> Response<Body> {
        match session {
            Some(s) if self.sessions.contains_key(&s) => {
                self.sessions.invalidate(&s);
                status(StatusCode::OK)
            }
            Some(_) => status(StatusCode::NOT_FOUND),
            None => status(StatusCode::BAD_REQUEST),
        }
    }
}

fn call(id: Value, method: &str, msg: &Value, headers: &http::HeaderMap) -> Value {
    let result = match method {
        "ping" => json!({}),
        "tools/list" => json!({ "tools": tool_list() }),
        "tools/call" => return tool_call(id, msg, headers),
        _ => return rpc_error(id, -32601, "Method not found"),
    };
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn tool_list() -> Value {
    json!([
        { "name": "echo", "description": "Returns the message it is given.",
          "inputSchema": { "type": "object", "properties": { "message": { "type": "string" } }, "required": ["message"] } },
        { "name": "add", "description": "Adds two numbers.",
          "inputSchema": { "type": "object", "properties": { "a": { "type": "number" }, "b": { "type": "number" } }, "required": ["a", "b"] } },
        { "name": "whoami", "description": "Returns the HTTP headers this server received (shows what the gateway forwards).",
          "inputSchema": { "type": "object", "properties": {} } }
    ])
}

fn tool_call(id: Value, msg: &Value, headers: &http::HeaderMap) -> Value {
    let name = msg
        .pointer("/params/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let args = msg
        .pointer("/params/arguments")
        .cloned()
        .unwrap_or(json!({}));
    let text = match name {
        "echo" => match args.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => return tool_error(id, "echo needs a string argument `message`"),
        },
        "add" => match (
            args.get("a").and_then(Value::as_f64),
            args.get("b").and_then(Value::as_f64),
        ) {
            (Some(a), Some(b)) => (a + b).to_string(),
            _ => return tool_error(id, "add needs numbers `a` and `b`"),
        },
        "whoami" => {
            let seen: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                    )
                })
                .collect();
            Value::Object(seen).to_string()
        }
        _ => return rpc_error(id, -32602, "Unknown tool"),
    };
    json!({"jsonrpc": "2.0", "id": id, "result": { "content": [{ "type": "text", "text": text }], "isError": false }})
}

fn tool_error(id: Value, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": { "content": [{ "type": "text", "text": text }], "isError": true }})
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message }})
}

fn json_response(status: StatusCode, value: &Value, session: Option<String>) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
        resp.headers_mut().insert("mcp-session-id", s);
    }
    resp
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = code;
    resp
}
