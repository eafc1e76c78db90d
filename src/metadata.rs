//! RFC 9728 Protected Resource Metadata documents and the `WWW-Authenticate` challenges that
//! point clients at them (MCP authorization spec 2025-06-18 and 2025-11-25).
//!
//! Everything here is computed once per route when the gateway is built; a request only picks
//! a prepared document or header value.

use bytes::Bytes;
use http::HeaderValue;
use serde_json::json;

use crate::config::{Config, Route};

/// RFC 9728 §3: the well-known suffix, inserted between the host and the resource's path.
pub const PRM_PREFIX: &str = "/.well-known/oauth-protected-resource";
/// RFC 8414 §3, for clients that still follow MCP 2025-03-26.
pub const AS_METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// What one route publishes about itself.
#[derive(Debug)]
pub struct RouteMetadata {
    /// Absolute URL of the metadata document, as advertised in challenges.
    pub url: String,
    /// Path on the gateway origin where the document is served.
    pub path: String,
    pub document: Bytes,
    /// 401 without credentials: `resource_metadata` and the route's scopes, no `error`
    /// (RFC 6750 §3.1: a request without credentials gets no error code).
    pub challenge_missing: HeaderValue,
    /// 401 for a token that failed validation.
    pub challenge_invalid: HeaderValue,
    /// 400 for malformed credentials (two tokens, bad syntax, token in the query).
    pub challenge_malformed: HeaderValue,
}

/// Builds a route's metadata. `issuers` are the issuer identifiers it trusts and `scopes` the
/// scopes it may ask for (route scopes first, then per-tool scopes).
pub fn build(route: &Route, issuers: &[&str], scopes: &[String]) -> RouteMetadata {
    let (origin, resource_path) = split_resource(&route.resource);
    let path = format!("{PRM_PREFIX}{resource_path}");
    let url = format!("{origin}{path}");
    let mut doc = json!({
        "resource": route.resource,
        "authorization_servers": issuers,
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
    });
    if let Some(name) = &route.resource_name {
        doc["resource_name"] = json!(name);
    }
    if let Some(docs) = &route.resource_documentation {
        doc["resource_documentation"] = json!(docs);
    }
    let route_scopes = route.scopes.join(" ");
    RouteMetadata {
        challenge_missing: header(&challenge(None, &url, &route_scopes)),
        challenge_invalid: header(&challenge(
            Some(("invalid_token", "The access token is invalid or expired")),
            &url,
            &route_scopes,
        )),
        challenge_malformed: header(&challenge(
            Some(("invalid_request", "Malformed or duplicated credentials")),
            &url,
            "",
        )),
        document: Bytes::from(doc.to_string()),
        url,
        path,
    }
}

/// 403 step-up challenge (MCP 2025-11-25 "Runtime Insufficient Scope Errors"): the scopes this
/// call needs, so the client can ask for exactly those.
pub fn insufficient_scope(metadata_url: &str, scopes: &str) -> HeaderValue {
    header(&challenge(
        Some((
            "insufficient_scope",
            "The access token lacks a scope this call needs",
        )),
        metadata_url,
        scopes,
    ))
}

/// 401 for an anonymous caller reaching something that needs a scope: like a missing token,
/// but naming the scopes of this call.
pub fn sign_in_required(metadata_url: &str, scopes: &str) -> HeaderValue {
    header(&challenge(None, metadata_url, scopes))
}

fn challenge(error: Option<(&str, &str)>, metadata_url: &str, scopes: &str) -> String {
    // One allocation, sized up front: step-up challenges are built on every refused call.
    let mut out = String::with_capacity(160 + metadata_url.len() + scopes.len());
    out.push_str("Bearer ");
    if let Some((code, description)) = error {
        for part in [
            "error=\"",
            code,
            "\", error_description=\"",
            description,
            "\", ",
        ] {
            out.push_str(part);
        }
    }
    for part in ["resource_metadata=\"", metadata_url, "\""] {
        out.push_str(part);
    }
    if !scopes.is_empty() {
        for part in [", scope=\"", scopes, "\""] {
            out.push_str(part);
        }
    }
    out
}

/// Config validation guarantees scopes and URLs are visible ASCII without quotes.
fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// Splits `https://h:1/a/b` into (`https://h:1`, `/a/b`).
fn split_resource(resource: &str) -> (&str, &str) {
    let after_scheme = resource.find("://").map(|i| i + 3).unwrap_or(0);
    match resource[after_scheme..].find('/') {
        Some(i) => resource.split_at(after_scheme + i),
        None => (resource, ""),
    }
}

/// The issuer identifiers a route trusts, in config order; API-key-only routes have none.
pub fn route_issuers<'c>(config: &'c Config, route: &Route) -> Vec<&'c str> {
    route
        .issuers
        .iter()
        .map(|&i| config.issuers[i].issuer.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_is_inserted_after_the_host_never_appended() {
        assert_eq!(
            split_resource("https://h.example:8443/calendar/mcp"),
            ("https://h.example:8443", "/calendar/mcp")
        );
        assert_eq!(
            split_resource("https://h.example"),
            ("https://h.example", "")
        );
    }

    #[test]
    fn challenges_follow_rfc6750_and_mcp() {
        assert_eq!(
            challenge(
                None,
                "https://h/.well-known/oauth-protected-resource/mcp",
                "a b"
            ),
            r#"Bearer resource_metadata="https://h/.well-known/oauth-protected-resource/mcp", scope="a b""#
        );
        let c = insufficient_scope("https://h/m", "x:admin");
        assert_eq!(
            c,
            r#"Bearer error="insufficient_scope", error_description="The access token lacks a scope this call needs", resource_metadata="https://h/m", scope="x:admin""#
        );
    }
}
