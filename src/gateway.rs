//! The request path in one screen: route → origin → authenticate → authorise → forward.
//!
//! `handle` is the outer layer (request id, span, error → response, metrics, audit);
//! `try_handle` is the inner one and reads top to bottom in the order a request is checked.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, header};
use tracing::{Instrument, info, info_span, warn};

use crate::audit::{self, Auditor};
use crate::auth::bearer;
use crate::auth::{Authenticator, Principal, PrincipalKind, RouteAuth};
use crate::authorize::{self, Grant, Verdict};
use crate::body::{Body, read_limited};
use crate::config::Route;
use crate::cors;
use crate::error::{ErrorContext, GatewayError, respond};
use crate::metadata::RouteMetadata;
use crate::metrics::{Metrics, NO_ROUTE};
use crate::policy::Policy;
use crate::proxy::filter::filter_response;
use crate::proxy::headers::{ForwardedFor, Outbound, forwarding};
use crate::proxy::lifetime::{self, Expiry};
use crate::proxy::{Payload, Upstream};
use crate::request_id;
use crate::route::{self, Router};
use crate::server::{ConnInfo, RequestBody};
use crate::session::{Owner, SessionSealer};
use crate::wellknown::{self, WellKnown};

pub use crate::state::{BuildError, Shared};

const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// Everything a request needs, built once from a validated config (see `state.rs`). A reload
/// builds a new one and swaps it in; requests in flight keep the one they started with.
pub struct Gateway {
    pub config: Arc<crate::config::Config>,
    pub(crate) router: Router,
    pub(crate) routes: Vec<RouteState>,
    pub(crate) auth: Authenticator,
    pub(crate) wellknown: WellKnown,
    pub(crate) sessions: SessionSealer,
    pub shared: Arc<Shared>,
}

/// The runtime form of one route.
pub(crate) struct RouteState {
    pub upstream: Upstream,
    pub auth: RouteAuth,
    pub policy: Arc<Policy>,
    pub metadata: RouteMetadata,
    pub metrics: crate::metrics::RouteHandles,
    /// Request headers never forwarded on this route.
    pub strip: crate::proxy::headers::StripSet,
}

impl Gateway {
    pub fn ready(&self) -> bool {
        self.auth.ready()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
}

/// Per-request facts gathered on the way in, for the error body, metrics, logs and audit.
struct RequestState {
    request_id: HeaderValue,
    route: Option<usize>,
    jsonrpc_id: Option<Box<str>>,
    principal: Option<Principal>,
    verdicts: Vec<Verdict>,
    upstream_status: Option<u16>,
    arguments: Option<serde_json::Value>,
}

/// Outer handler: never fails; every error becomes a response here, once.
pub async fn handle(gw: Arc<Gateway>, req: Request<RequestBody>, conn: ConnInfo) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut state = RequestState {
        request_id: request_id::from_headers(req.headers()),
        route: None,
        jsonrpc_id: None,
        principal: None,
        verdicts: Vec::new(),
        upstream_status: None,
        arguments: None,
    };
    let span = info_span!("request", request.id = state.request_id.to_str().unwrap_or(""), http.method = %method, client.ip = %conn.peer.ip());
    // Boxed once here: unboxed, this future (several KiB) was copied whole into the span
    // wrapper, the await slot and the connection's boxed handler future on every request.
    let result = Box::pin(try_handle(&gw, req, conn, &mut state))
        .instrument(span.clone())
        .await;
    let route_id = state
        .route
        .map(|i| &*gw.config.routes[i].id)
        .unwrap_or(NO_ROUTE);
    let (mut resp, error) = match result {
        Ok(resp) => (resp, None),
        Err(err) => {
            span.in_scope(|| log_error(&err, route_id));
            count_error(&gw, route_id, &err);
            let ctx = ErrorContext {
                request_id: &state.request_id,
                jsonrpc_id: state.jsonrpc_id.as_deref(),
                metadata: state.route.map(|i| &gw.routes[i].metadata),
            };
            (respond(&err, &ctx), Some(err))
        }
    };
    let status = resp.status().as_u16();
    cors::decorate(
        resp.headers_mut(),
        origin.as_ref(),
        &gw.config.server.cors_allowed_origins,
    );
    resp.headers_mut()
        .insert(request_id::HEADER_NAME, state.request_id.clone());
    let elapsed = started.elapsed();
    match state.route {
        Some(i) => gw.routes[i].metrics.request_done(
            gw.metrics(),
            route_id,
            method.as_str(),
            status,
            elapsed,
        ),
        None => gw
            .metrics()
            .request_done(route_id, method.as_str(), status, elapsed),
    }
    span.in_scope(|| {
        info!(
            route.id = route_id,
            http.status = status,
            duration_ms = audit::millis(elapsed),
            "request done"
        )
    });
    if let Some(i) = state.route {
        audit(
            &gw.shared.auditor,
            &mut state,
            &gw.config.routes[i].id,
            &method,
            status,
            error.as_ref(),
            elapsed,
        );
    }
    resp
}

fn log_error(err: &GatewayError, route_id: &str) {
    let cause = std::error::Error::source(err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    match err {
        GatewayError::Upstream(_) | GatewayError::UpstreamSession(_) => {
            warn!(route.id = route_id, error = %err, cause = %cause, "upstream failure")
        }
        _ => {
            info!(route.id = route_id, reason = err.reason(), error = %err, cause = %cause, "request refused")
        }
    }
}

fn count_error(gw: &Gateway, route_id: &str, err: &GatewayError) {
    let m = &gw.shared.metrics;
    match err {
        GatewayError::Upstream(e) => m.upstream_error(route_id, e.kind()),
        GatewayError::UpstreamSession(_) => m.upstream_error(route_id, "bad_session_id"),
        GatewayError::Credential(_) | GatewayError::Unauthenticated => {
            m.auth(route_id, "denied", err.reason())
        }
        GatewayError::Auth(e) => m.auth(
            route_id,
            if e.is_unavailable() {
                "error"
            } else {
                "denied"
            },
            e.reason(),
        ),
        GatewayError::RateLimited { .. } => m.rate_limited(route_id),
        _ => {}
    }
}

/// Inner handler: each step either refuses the request or hands its evidence to the next.
async fn try_handle(
    gw: &Gateway,
    req: Request<RequestBody>,
    conn: ConnInfo,
    state: &mut RequestState,
) -> Result<Response<Body>, GatewayError> {
    // 1. The Origin check comes before anything else (DNS rebinding, MCP 2025-11-25 transports).
    if !cors::origin_allowed(&gw.config.server.cors_allowed_origins, req.headers()) {
        return Err(GatewayError::OriginForbidden);
    }
    // 2. Normalise the path: traversal tricks are refused, never rewritten.
    let path = route::normalize(req.uri().path())?.into_owned();
    if req.method() == Method::OPTIONS {
        if gw.router.find(&path).is_none() && !gw.wellknown.serves(&path) {
            return Err(GatewayError::NoRoute);
        }
        return Ok(cors::preflight(req.headers().get(header::ORIGIN)));
    }
    // 3. Metadata is public: clients read it to learn how to get a token at all.
    if wellknown::is_well_known(&path) {
        // Boxed: the metadata paths (which may fetch the issuer's document) stay out of the
        // request future's inline layout, which every proxied request pays to move.
        let served = Box::pin(gw.wellknown.respond(&path, req.method(), &gw.auth)).await;
        if let Some(resp) = served {
            return Ok(resp);
        }
    }
    // 4. Route.
    let found = gw.router.find(&path).ok_or(GatewayError::NoRoute)?;
    state.route = Some(found.route);
    let route = &gw.config.routes[found.route];
    let rs = &gw.routes[found.route];
    let tail = found.tail.to_string();
    if !matches!(*req.method(), Method::POST | Method::GET | Method::DELETE) {
        return Err(GatewayError::MethodNotAllowed);
    }
    // 5. Authenticate: a Principal, or a 400/401/503.
    let principal = authenticate(gw, rs, route, &req).await?;
    rs.metrics.auth_ok.inc();
    state.principal = Some(principal.clone());
    if !route.rate_limit.is_some_and(|l| l.per_tool) {
        rate_limit(gw, route, &principal, conn.peer.ip(), None)?;
    }

    // 6. Session: only the principal that opened a session may use it.
    let (mut parts, body) = req.into_parts();
    let owner = Owner {
        route: &route.id,
        issuer: &principal.issuer,
        subject: &principal.subject,
    };
    if let Some(sealed) = parts.headers.get(MCP_SESSION_ID) {
        let upstream_id = gw.sessions.open(&owner, sealed)?;
        parts.headers.insert(MCP_SESSION_ID, upstream_id);
    }

    // 7. Authorise: the route's scopes, then every JSON-RPC message against the policy.
    let (body, grant) = if parts.method == Method::POST {
        authorize::check_post_headers(&parts.headers)?;
        let body = read_body(&parts.headers, body, route).await?;
        let caller = Caller {
            gw,
            rs,
            route,
            principal: &principal,
            peer: conn.peer.ip(),
        };
        let grant = authorize_post(&caller, &parts.headers, &body, state)?;
        (Payload::Buffered(body), grant)
    } else {
        let grant = authorize::authorize(
            &rs.policy,
            route,
            &principal,
            None,
            &rs.metrics,
            &mut state.verdicts,
        )?;
        (
            Payload::Streaming(streaming_body(&parts.headers, body, route)?),
            grant,
        )
    };

    // 8. Forward: credentials stripped, identity added if configured, response streamed back.
    let host = host_of(&parts);
    let fwd = ForwardedFor {
        client_ip: conn.peer.ip(),
        proto: if conn.tls { "https" } else { "http" },
        host: host.as_ref(),
    };
    let mut added = Vec::with_capacity(8);
    forwarding(&fwd, &mut added);
    add_identity(&mut added, route, &principal);
    // The upstream logs the same id the client and our logs see; a client's unsafe id never passes.
    added.push((request_id::HEADER_NAME, state.request_id.clone()));
    added.extend(route.upstream_headers.iter().cloned());
    let outbound = Outbound {
        strip: &rs.strip,
        added,
    };
    let is_get = parts.method == Method::GET;
    let resp = rs
        .upstream
        .send(Request::from_parts(parts, body), &tail, outbound)
        .await?;
    state.upstream_status = Some(resp.status().as_u16());
    let resp = finish_response(gw, rs, &owner, grant, resp).await?;
    Ok(match principal.valid_until {
        Some(until)
            if is_get && route.end_streams_at_expiry && lifetime::is_event_stream(&resp) =>
        {
            let expiry = Expiry {
                route: route.id.clone(),
                request_id: state.request_id.clone(),
                counter: rs.metrics.streams_expired.clone(),
            };
            lifetime::end_at(resp, until, expiry)
        }
        _ => resp,
    })
}

async fn authenticate(
    gw: &Gateway,
    rs: &RouteState,
    route: &Route,
    req: &Request<RequestBody>,
) -> Result<Principal, GatewayError> {
    match bearer::bearer(req.headers(), req.uri())? {
        Some(token) => {
            if let Some(cached) = gw.auth.authenticate_cached(&rs.auth, token.as_bytes()) {
                return Ok(cached?);
            }
            Ok(gw.auth.authenticate(&rs.auth, token.check()?).await?)
        }
        None if route.allow_anonymous => Ok(Principal::anonymous()),
        None => Err(GatewayError::Unauthenticated),
    }
}

/// Takes a token from the caller's bucket. `tool` is set when the route limits each tool on its
/// own (`per_tool = true`); the bucket is then per principal, route and tool.
fn rate_limit(
    gw: &Gateway,
    route: &Route,
    principal: &Principal,
    peer: IpAddr,
    tool: Option<&str>,
) -> Result<(), GatewayError> {
    let Some(limit) = &route.rate_limit else {
        return Ok(());
    };
    // Anonymous callers share no identity, so their bucket is per client address.
    let mut key = match principal.kind {
        PrincipalKind::Anonymous => format!("{}\0anonymous\0{peer}", route.id),
        _ => format!("{}\0{}\0{}", route.id, principal.issuer, principal.subject),
    };
    if let Some(tool) = tool {
        key.push('\0');
        key.push_str(tool);
    }
    gw.shared
        .limiter
        .check(&key, limit)
        .map_err(|retry_after| GatewayError::RateLimited { retry_after })
}

/// The authenticated caller on a matched route: what the authorisation steps need.
struct Caller<'a> {
    gw: &'a Gateway,
    rs: &'a RouteState,
    route: &'a Route,
    principal: &'a Principal,
    peer: IpAddr,
}

fn authorize_post(
    caller: &Caller<'_>,
    headers: &HeaderMap,
    body: &Bytes,
    state: &mut RequestState,
) -> Result<Grant, GatewayError> {
    let Caller {
        gw,
        rs,
        route,
        principal,
        peer,
    } = *caller;
    let env = authorize::classify(body, route)?;
    state.jsonrpc_id = env.first_id().map(|id| id.as_json().into());
    authorize::check(&env, headers, route)?;
    if gw.shared.auditor.logs_arguments() {
        state.arguments = gw.shared.auditor.arguments_of(body);
    }
    let grant = authorize::authorize(
        &rs.policy,
        route,
        principal,
        Some(&env),
        &rs.metrics,
        &mut state.verdicts,
    )?;
    if route.rate_limit.is_some_and(|l| l.per_tool) {
        for msg in env.messages() {
            let tool = msg
                .name
                .as_deref()
                .filter(|_| msg.method() == Some("tools/call"));
            rate_limit(gw, route, principal, peer, tool)?;
        }
    }
    Ok(grant)
}

/// Reads a POST body within the route's limit: the JSON-RPC message decides what is allowed.
async fn read_body(
    headers: &HeaderMap,
    body: RequestBody,
    route: &Route,
) -> Result<Bytes, GatewayError> {
    if declared_length(headers).is_some_and(|len| len > route.max_body) {
        return Err(crate::body::ReadError::TooLarge {
            limit: route.max_body,
        }
        .into());
    }
    Ok(read_limited(body, route.max_body).await?)
}

/// GET and DELETE carry no JSON-RPC body; whatever they carry streams, within the limit.
fn streaming_body(
    headers: &HeaderMap,
    body: RequestBody,
    route: &Route,
) -> Result<Body, GatewayError> {
    use http_body_util::BodyExt;
    if declared_length(headers).is_some_and(|len| len > route.max_body) {
        return Err(crate::body::ReadError::TooLarge {
            limit: route.max_body,
        }
        .into());
    }
    let limit = usize::try_from(route.max_body).unwrap_or(usize::MAX);
    Ok(http_body_util::Limited::new(body, limit).boxed_unsync())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Identity headers for the upstream, when the route asks for them. Client-sent headers of the
/// same names are in the route's strip set, so these cannot be spoofed.
fn add_identity(added: &mut Vec<(HeaderName, HeaderValue)>, route: &Route, principal: &Principal) {
    if principal.kind == PrincipalKind::Anonymous {
        return;
    }
    let ids = &route.identity_headers;
    let scopes = ids.scopes.as_ref().map(|_| principal.scopes.join(" "));
    let values = [
        (&ids.subject, Some(&*principal.subject)),
        (&ids.client_id, principal.client_id.as_deref()),
        (&ids.scopes, scopes.as_deref()),
        (&ids.issuer, Some(&*principal.issuer)),
    ];
    for (name, value) in values {
        if let (Some(name), Some(value)) = (name, value)
            && let Ok(v) = HeaderValue::from_str(value)
        {
            added.push((name.clone(), v));
        }
    }
}

/// Seals a new upstream session id to the principal and filters list results.
async fn finish_response(
    gw: &Gateway,
    rs: &RouteState,
    owner: &Owner<'_>,
    grant: Grant,
    mut resp: Response<Body>,
) -> Result<Response<Body>, GatewayError> {
    if let Some(upstream_id) = resp.headers().get(MCP_SESSION_ID) {
        let sealed = gw
            .sessions
            .seal(owner, upstream_id)
            .map_err(GatewayError::UpstreamSession)?;
        resp.headers_mut().insert(MCP_SESSION_ID, sealed);
    }
    match grant.list {
        Some((target, kind)) if resp.status().is_success() => Ok(Box::pin(filter_response(
            resp,
            target,
            kind,
            rs.policy.clone(),
            grant.granted,
        ))
        .await),
        _ => Ok(resp),
    }
}

/// The host the client asked for: `Host` in HTTP/1.1, `:authority` in HTTP/2.
fn host_of(parts: &http::request::Parts) -> Option<HeaderValue> {
    parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// One audit event per JSON-RPC message, or one for a request refused before its body was read.
fn audit(
    auditor: &Auditor,
    state: &mut RequestState,
    route_id: &Arc<str>,
    method: &Method,
    status: u16,
    error: Option<&GatewayError>,
    elapsed: Duration,
) {
    let p = state.principal.as_ref();
    let duration_ms = audit::millis(elapsed);
    // The per-message fields start empty without allocating (unlike `Event::default()`), and
    // each verdict's text moves into its event.
    let base = || audit::Event {
        time: std::time::UNIX_EPOCH,
        request_id: state.request_id.clone(),
        route: route_id.clone(),
        principal: p.cloned(),
        method: Cow::Borrowed(""),
        target: None,
        decision: "",
        reason: "",
        rule: None,
        required_scopes: Vec::new(),
        http_status: status,
        upstream_status: state.upstream_status,
        duration_ms,
        arguments: None,
    };
    let verdicts = std::mem::take(&mut state.verdicts);
    if verdicts.is_empty() {
        auditor.record(audit::Event {
            method: Cow::Owned(method.as_str().to_owned()),
            decision: if error.is_some() { "deny" } else { "allow" },
            reason: error.map_or("allowed", GatewayError::reason),
            ..base()
        });
        return;
    }
    let mut arguments = state.arguments.take();
    let last = verdicts.len() - 1;
    for (i, v) in verdicts.into_iter().enumerate() {
        auditor.record(audit::Event {
            method: v.method.unwrap_or(Cow::Borrowed("response")),
            target: v.target,
            decision: if v.allowed && error.is_none() {
                "allow"
            } else {
                "deny"
            },
            reason: if v.allowed {
                error.map_or("allowed", GatewayError::reason)
            } else {
                v.reason
            },
            rule: Some(v.rule),
            required_scopes: v.required,
            // Moved into the last event rather than copied: there is usually only one.
            arguments: if i == last {
                arguments.take()
            } else {
                arguments.clone()
            },
            ..base()
        });
    }
}
