//! The request path in one screen: route → origin → authenticate → authorise → forward.
//!
//! `handle` is the outer layer (request id, span, error → response, metrics); `try_handle`
//! is the inner one and reads top to bottom in the order a request is checked.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;
use serde_json::value::RawValue;
use tracing::{Instrument, info, info_span, warn};

use crate::body::{Body, full, read_limited};
use crate::config::{Config, Route, UpstreamTarget};
use crate::error::{ErrorContext, GatewayError, respond};
use crate::metrics::{Metrics, NO_ROUTE};
use crate::proxy::headers::{ForwardedFor, prepare_request};
use crate::proxy::{SetupError, Upstream};
use crate::request_id;
use crate::route::{self, Router};
use crate::server::ConnInfo;

/// Everything a request needs, built once from a validated config. A reload builds a new one
/// and swaps it in; requests in flight keep the one they started with.
pub struct Gateway {
    pub config: Arc<Config>,
    router: Router,
    upstreams: Vec<Upstream>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("routes[{index}].upstream: {source}")]
    Upstream { index: usize, source: SetupError },
}

impl Gateway {
    /// `demo` is the address of the built-in demo upstream, when a route uses it.
    pub fn build(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        demo: Option<std::net::SocketAddr>,
    ) -> Result<Self, BuildError> {
        let mut upstreams = Vec::with_capacity(config.routes.len());
        for (index, r) in config.routes.iter().enumerate() {
            let uri = match (&r.upstream, demo) {
                (UpstreamTarget::Http(uri), _) => uri.clone(),
                (UpstreamTarget::BuiltinDemo, Some(addr)) => format!("http://{addr}/mcp")
                    .parse()
                    .expect("valid demo URI"),
                (UpstreamTarget::BuiltinDemo, None) => {
                    "http://127.0.0.1:9/mcp".parse().expect("valid URI")
                }
            };
            let up = Upstream::new(
                &uri,
                r.connect_timeout,
                r.upstream_timeout,
                r.ca_file.as_deref(),
            )
            .map_err(|source| BuildError::Upstream { index, source })?;
            upstreams.push(up);
        }
        Ok(Gateway {
            router: Router::new(&config.routes),
            upstreams,
            metrics,
            config,
        })
    }

    pub fn ready(&self) -> bool {
        true
    }
}

/// Per-request facts gathered on the way in, used for the error body, metrics and logs.
struct RequestState {
    request_id: HeaderValue,
    route: Option<usize>,
    jsonrpc_id: Option<Box<RawValue>>,
}

/// Outer handler: never fails; every error becomes a response here, once.
pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let mut state = RequestState {
        request_id: request_id::from_headers(req.headers()),
        route: None,
        jsonrpc_id: None,
    };
    let span = info_span!("request", request.id = state.request_id.to_str().unwrap_or(""), http.method = %method, client.ip = %conn.peer.ip());
    let result = try_handle(&gw, req, conn, &mut state)
        .instrument(span.clone())
        .await;
    let route_id = state
        .route
        .map(|i| &*gw.config.routes[i].id)
        .unwrap_or(NO_ROUTE);
    let mut resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            span.in_scope(|| log_error(&err, route_id));
            if let GatewayError::Upstream(e) = &err {
                gw.metrics.upstream_error(route_id, e.kind());
            }
            respond(
                &err,
                &ErrorContext {
                    request_id: &state.request_id,
                    jsonrpc_id: state.jsonrpc_id.as_deref(),
                },
            )
        }
    };
    let status = resp.status().as_u16();
    resp.headers_mut()
        .insert(request_id::HEADER, state.request_id);
    gw.metrics
        .request_done(route_id, method.as_str(), status, started.elapsed());
    span.in_scope(|| {
        info!(
            route.id = route_id,
            http.status = status,
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
            "request done"
        )
    });
    resp
}

fn log_error(err: &GatewayError, route_id: &str) {
    let source = std::error::Error::source(err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    match err {
        GatewayError::Upstream(_) => {
            warn!(route.id = route_id, error = %err, cause = %source, "upstream failure")
        }
        _ => info!(route.id = route_id, error = %err, cause = %source, "request refused"),
    }
}

/// Inner handler: each step either refuses the request or hands its evidence to the next.
async fn try_handle(
    gw: &Gateway,
    req: Request<Incoming>,
    conn: ConnInfo,
    state: &mut RequestState,
) -> Result<Response<Body>, GatewayError> {
    // 1. Routing, on a normalised path: traversal tricks are refused, never rewritten.
    let path = route::normalize(req.uri().path())?.into_owned();
    let found = gw.router.find(&path).ok_or(GatewayError::NoRoute)?;
    state.route = Some(found.route);
    let route = &gw.config.routes[found.route];
    let tail = found.tail.to_string();

    // 2. Browser origin check comes before anything else (DNS rebinding, MCP 2025-11-25).
    check_origin(&gw.config, req.headers())?;
    if !matches!(*req.method(), Method::POST | Method::GET | Method::DELETE) {
        return Err(GatewayError::MethodNotAllowed);
    }

    // 3. Read the body within the route's limit: the JSON-RPC message decides what is allowed.
    let (mut parts, body) = req.into_parts();
    let body = read_body(&parts, body, route).await?;
    state.jsonrpc_id = jsonrpc_id(&body);

    // 4. Forward: credentials stripped, forwarding headers set, response streamed back.
    let host = host_of(&parts);
    let fwd = ForwardedFor {
        client_ip: conn.peer.ip(),
        proto: if conn.tls { "https" } else { "http" },
        host: host.as_ref(),
    };
    prepare_request(
        &mut parts.headers,
        &route.strip_headers,
        route.identity_headers.names().cloned(),
        &fwd,
    );
    for (name, value) in &route.upstream_headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    let upstream = &gw.upstreams[found.route];
    Ok(upstream
        .send(Request::from_parts(parts, full(body)), &tail)
        .await?)
}

fn check_origin(config: &Config, headers: &http::HeaderMap) -> Result<(), GatewayError> {
    match headers.get(header::ORIGIN) {
        None => Ok(()),
        Some(origin)
            if config
                .server
                .cors_allowed_origins
                .iter()
                .any(|o| o == origin) =>
        {
            Ok(())
        }
        Some(_) => Err(GatewayError::OriginForbidden),
    }
}

async fn read_body(
    parts: &http::request::Parts,
    body: Incoming,
    route: &Route,
) -> Result<Bytes, GatewayError> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > route.max_body) {
        return Err(crate::body::ReadError::TooLarge {
            limit: route.max_body,
        }
        .into());
    }
    Ok(read_limited(body, route.max_body).await?)
}

fn jsonrpc_id(body: &[u8]) -> Option<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<Box<RawValue>>,
    }
    serde_json::from_slice::<IdOnly>(body)
        .ok()
        .and_then(|m| m.id)
}

/// The host the client asked for: `Host` in HTTP/1.1, `:authority` in HTTP/2.
fn host_of(parts: &http::request::Parts) -> Option<HeaderValue> {
    parts.headers.get(header::HOST).cloned().or_else(|| {
        parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}
