//! CORS for browser-based MCP clients, tied to the same Origin allow-list that guards against
//! DNS rebinding: an allowed origin gets CORS headers on every response (errors included, or
//! the browser hides the 401 challenge), any other origin never gets past the Origin check.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{Body, empty};

const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, DELETE, OPTIONS");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name",
);
/// Without `WWW-Authenticate` here a browser client cannot read the challenge and never
/// starts OAuth discovery.
const EXPOSE_HEADERS: HeaderValue =
    HeaderValue::from_static("WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version");
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// Whether a request may proceed: no `Origin` (not a browser) or an allowed one.
pub fn origin_allowed(allowed: &[HeaderValue], headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => allowed.iter().any(|o| o == origin),
    }
}

/// Answers a preflight; the caller has already checked the origin.
pub fn preflight(origin: Option<&HeaderValue>) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

/// Adds the CORS response headers for an allowed origin.
pub fn decorate(headers: &mut HeaderMap, origin: Option<&HeaderValue>, allowed: &[HeaderValue]) {
    let Some(origin) = origin.filter(|o| allowed.iter().any(|a| a == *o)) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_origin_is_a_non_browser_client_and_allowed() {
        assert!(origin_allowed(&[], &HeaderMap::new()));
    }

    #[test]
    fn foreign_origin_is_refused_and_gets_no_cors_headers() {
        let allowed = [HeaderValue::from_static("https://app.example")];
        let mut req = HeaderMap::new();
        req.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_allowed(&allowed, &req));
        let mut resp = HeaderMap::new();
        decorate(&mut resp, req.get(header::ORIGIN), &allowed);
        assert!(resp.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    #[test]
    fn allowed_origin_sees_the_challenge_header() {
        let allowed = [HeaderValue::from_static("https://app.example")];
        let mut resp = HeaderMap::new();
        decorate(&mut resp, allowed.first(), &allowed);
        assert_eq!(
            resp[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert!(
            resp[header::ACCESS_CONTROL_EXPOSE_HEADERS]
                .to_str()
                .unwrap()
                .contains("WWW-Authenticate")
        );
    }
}
