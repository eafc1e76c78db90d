//! The one place where an error becomes an HTTP status, headers and a JSON-RPC error body.
//!
//! Clients get a short generic message and the request id; the precise cause goes to the log
//! line carrying the same request id. No arm is a catch-all, so a new variant forces a choice.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::value::RawValue;

use crate::body::{Body, ReadError, full};
use crate::proxy::UpstreamError;
use crate::route::PathError;

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
    #[error(transparent)]
    Body(#[from] ReadError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// What is known about the request when it fails, for the error body.
pub struct ErrorContext<'a> {
    pub request_id: &'a HeaderValue,
    /// The caller's JSON-RPC id as raw JSON, when the body was read far enough to know it.
    pub jsonrpc_id: Option<&'a RawValue>,
}

/// JSON-RPC error codes: the standard ones plus the implementation-defined server range.
mod code {
    pub const INVALID_REQUEST: i64 = -32600;
    pub const UPSTREAM: i64 = -32001;
}

pub fn respond(err: &GatewayError, ctx: &ErrorContext<'_>) -> Response<Body> {
    let (status, rpc_code, message) = classify(err);
    let mut resp = json_rpc_error(status, rpc_code, message, ctx);
    if matches!(err, GatewayError::MethodNotAllowed) {
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
    }
    resp
}

fn classify(err: &GatewayError) -> (StatusCode, i64, &'static str) {
    match err {
        GatewayError::Path(_) => (
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "Bad request path",
        ),
        GatewayError::NoRoute => (StatusCode::NOT_FOUND, code::INVALID_REQUEST, "Not found"),
        GatewayError::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            code::INVALID_REQUEST,
            "Method not allowed",
        ),
        GatewayError::OriginForbidden => (
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "Origin not allowed",
        ),
        GatewayError::Body(ReadError::TooLarge { .. }) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            code::INVALID_REQUEST,
            "Request body too large",
        ),
        GatewayError::Body(ReadError::Io(_)) => (
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "Request body could not be read",
        ),
        GatewayError::Upstream(UpstreamError::Timeout(_)) => (
            StatusCode::GATEWAY_TIMEOUT,
            code::UPSTREAM,
            "Upstream timed out",
        ),
        GatewayError::Upstream(UpstreamError::Connect(_) | UpstreamError::Reset(_)) => (
            StatusCode::BAD_GATEWAY,
            code::UPSTREAM,
            "Upstream unavailable",
        ),
    }
}

/// A JSON-RPC error response body: `{"jsonrpc":"2.0","id":…,"error":{…,"data":{"request_id":…}}}`.
pub fn json_rpc_error(
    status: StatusCode,
    rpc_code: i64,
    message: &str,
    ctx: &ErrorContext<'_>,
) -> Response<Body> {
    let id = ctx.jsonrpc_id.map(RawValue::get).unwrap_or("null");
    let request_id = ctx.request_id.to_str().unwrap_or("");
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{rpc_code},"message":{},"data":{{"request_id":{}}}}}}}"#,
        serde_json::Value::from(message),
        serde_json::Value::from(request_id),
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
