//! The one place where an error becomes an HTTP status, headers and a JSON-RPC error body.
//!
//! Clients get a short generic message and the request id; the precise cause goes to the log
//! line carrying the same request id. No arm is a catch-all, so a new variant forces a choice.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::auth::AuthError;
use crate::auth::bearer::CredentialError;
use crate::body::{Body, ReadError, full};
use crate::jsonrpc::{self, ClassifyError, RawId};
use crate::metadata::{self, RouteMetadata};
use crate::proxy::UpstreamError;
use crate::route::PathError;
use crate::session::SessionError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bad request path: {0}")]
    Path(#[from] PathError),
    #[error("no route for this path")]
    NoRoute,
    #[error("method not allowed on an MCP endpoint")]
    MethodNotAllowed,
    #[error("origin not allowed")]
    OriginForbidden,
    #[error("malformed credentials: {0}")]
    Credential(#[from] CredentialError),
    #[error("no credentials")]
    Unauthenticated,
    #[error("token rejected: {0}")]
    Auth(#[from] AuthError),
    #[error("anonymous caller needs scopes {scopes:?}")]
    SignInRequired { scopes: String },
    #[error("insufficient scope: needs {scopes:?} ({reason}, rule {rule})")]
    InsufficientScope {
        scopes: String,
        reason: &'static str,
        rule: String,
    },
    #[error("forbidden by policy ({reason}, rule {rule})")]
    Forbidden { reason: &'static str, rule: String },
    #[error("rate limit exceeded")]
    RateLimited { retry_after: Duration },
    #[error("session refused: {0}")]
    Session(#[from] SessionError),
    #[error("content type is not application/json")]
    UnsupportedMediaType,
    #[error("compressed request bodies are not inspected and not accepted")]
    CompressedBody,
    #[error("JSON-RPC body refused: {0}")]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Body(#[from] ReadError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream sent an unusable session id: {0}")]
    UpstreamSession(SessionError),
}

impl GatewayError {
    /// Stable reason for metrics and audit.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::Path(_) => "bad_path",
            GatewayError::NoRoute => "no_route",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::OriginForbidden => "origin_forbidden",
            GatewayError::Credential(e) => e.reason(),
            GatewayError::Unauthenticated => "no_credentials",
            GatewayError::Auth(e) => e.reason(),
            GatewayError::SignInRequired { .. } => "sign_in_required",
            GatewayError::InsufficientScope { reason, .. }
            | GatewayError::Forbidden { reason, .. } => reason,
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::Session(e) | GatewayError::UpstreamSession(e) => e.reason(),
            GatewayError::UnsupportedMediaType => "unsupported_media_type",
            GatewayError::CompressedBody => "compressed_body",
            GatewayError::Classify(_) => "invalid_jsonrpc",
            GatewayError::Body(ReadError::TooLarge { .. }) => "body_too_large",
            GatewayError::Body(ReadError::Io(_)) => "body_read",
            GatewayError::Upstream(e) => e.kind(),
        }
    }
}

/// What is known about the request when it fails, for the error body and the challenge.
pub struct ErrorContext<'a> {
    pub request_id: &'a HeaderValue,
    /// The caller's JSON-RPC id as raw JSON text, when the body was read far enough to know it.
    pub jsonrpc_id: Option<&'a str>,
    /// The matched route's metadata, for `WWW-Authenticate`.
    pub metadata: Option<&'a RouteMetadata>,
}

/// JSON-RPC error codes: the standard ones plus the implementation-defined server range.
mod code {
    pub const INVALID_REQUEST: i64 = -32600;
    pub const UNAUTHORIZED: i64 = -32001;
    pub const FORBIDDEN: i64 = -32003;
    pub const UPSTREAM: i64 = -32002;
    pub const UNAVAILABLE: i64 = -32004;
    pub const RATE_LIMITED: i64 = -32005;
}

pub fn respond(err: &GatewayError, ctx: &ErrorContext<'_>) -> Response<Body> {
    let (status, rpc_code, message) = classify(err);
    let mut resp = json_rpc_error(status, rpc_code, message, ctx);
    let headers = resp.headers_mut();
    if let Some(challenge) = challenge(err, ctx.metadata) {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    match err {
        GatewayError::MethodNotAllowed => {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
            );
        }
        GatewayError::RateLimited { retry_after } => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        GatewayError::Auth(e) if e.is_unavailable() => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        _ => {}
    }
    resp
}

fn classify(err: &GatewayError) -> (StatusCode, i64, &'static str) {
    use GatewayError as E;
    match err {
        E::Path(_) => (
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "Bad request path",
        ),
        E::NoRoute => (StatusCode::NOT_FOUND, code::INVALID_REQUEST, "Not found"),
        E::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            code::INVALID_REQUEST,
            "Method not allowed",
        ),
        E::OriginForbidden => (StatusCode::FORBIDDEN, code::FORBIDDEN, "Origin not allowed"),
        E::Credential(_) => (
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "Malformed credentials",
        ),
        E::Unauthenticated | E::SignInRequired { .. } => (
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "Authorization required",
        ),
        E::Auth(e) if e.is_unavailable() => (
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNAVAILABLE,
            "Token validation temporarily unavailable",
        ),
        E::Auth(_) => (
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "Invalid or expired token",
        ),
        E::InsufficientScope { .. } => {
            (StatusCode::FORBIDDEN, code::FORBIDDEN, "Insufficient scope")
        }
        E::Forbidden { .. } => (
            StatusCode::FORBIDDEN,
            code::FORBIDDEN,
            "Not permitted on this route",
        ),
        E::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            code::RATE_LIMITED,
            "Rate limit exceeded",
        ),
        // 404 tells a well-behaved client to initialise a new session (Streamable HTTP).
        E::Session(_) => (
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "Session not found",
        ),
        E::UnsupportedMediaType | E::CompressedBody => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "Body must be uncompressed application/json",
        ),
        E::Classify(ClassifyError::Parse { .. }) => {
            (StatusCode::BAD_REQUEST, jsonrpc::PARSE_ERROR, "Parse error")
        }
        E::Classify(e @ ClassifyError::HeaderMismatch { .. }) => (
            StatusCode::BAD_REQUEST,
            e.code(),
            "Header does not match body",
        ),
        E::Classify(e) => (StatusCode::BAD_REQUEST, e.code(), "Invalid request"),
        E::Body(ReadError::TooLarge { .. }) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            code::INVALID_REQUEST,
            "Request body too large",
        ),
        E::Body(ReadError::Io(_)) => (
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "Request body could not be read",
        ),
        E::Upstream(UpstreamError::Timeout(_)) => (
            StatusCode::GATEWAY_TIMEOUT,
            code::UPSTREAM,
            "Upstream timed out",
        ),
        E::Upstream(UpstreamError::Connect(_) | UpstreamError::Reset(_))
        | E::UpstreamSession(_) => (
            StatusCode::BAD_GATEWAY,
            code::UPSTREAM,
            "Upstream unavailable",
        ),
    }
}

/// The `WWW-Authenticate` value for authentication and authorisation failures (RFC 6750 §3,
/// RFC 9728 §5.1, MCP 2025-11-25 step-up). Every 401 carries `resource_metadata`.
fn challenge(err: &GatewayError, meta: Option<&RouteMetadata>) -> Option<HeaderValue> {
    let meta = meta?;
    match err {
        GatewayError::Unauthenticated => Some(meta.challenge_missing.clone()),
        GatewayError::Credential(_) => Some(meta.challenge_malformed.clone()),
        GatewayError::Auth(e) if !e.is_unavailable() => Some(meta.challenge_invalid.clone()),
        GatewayError::SignInRequired { scopes } => {
            Some(metadata::sign_in_required(&meta.url, scopes))
        }
        GatewayError::InsufficientScope { scopes, .. } => {
            Some(metadata::insufficient_scope(&meta.url, scopes))
        }
        _ => None,
    }
}

/// A JSON-RPC error response carrying the caller's id (when known) and `data.request_id`.
pub fn json_rpc_error(
    status: StatusCode,
    rpc_code: i64,
    message: &str,
    ctx: &ErrorContext<'_>,
) -> Response<Body> {
    let body = jsonrpc::jsonrpc_error_body_with_request_id(
        ctx.jsonrpc_id.and_then(RawId::parse),
        rpc_code,
        message,
        ctx.request_id.to_str().unwrap_or(""),
    );
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
