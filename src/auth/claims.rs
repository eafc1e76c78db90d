//! Claim shapes shared by JWTs and introspection responses: `aud`, `scope`/`scp`.

use std::sync::Arc;

use serde::Deserialize;

use super::error::AuthError;

/// RFC 7519 §4.1.3: `aud` is a string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

pub(crate) fn audiences_of(aud: Option<&Audience>) -> Arc<[Box<str>]> {
    match aud {
        None => Arc::from([]),
        Some(Audience::One(a)) => Arc::from([Box::from(a.as_str())]),
        Some(Audience::Many(list)) => list.iter().map(|a| Box::from(a.as_str())).collect(),
    }
}

/// `scope` (RFC 8693 §4.2, RFC 9068 §2.2.3: space-separated) or `scp` (array, or string).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ScopeClaim {
    Spaced(String),
    List(Vec<String>),
}

impl ScopeClaim {
    fn push_into(self, out: &mut Vec<Box<str>>) {
        match self {
            ScopeClaim::Spaced(s) => out.extend(s.split_ascii_whitespace().map(Box::from)),
            ScopeClaim::List(list) => out.extend(list.into_iter().map(String::into_boxed_str)),
        }
    }

    /// Union of `scope` and `scp`, deduplicated, order kept.
    pub(crate) fn merge(scope: Option<ScopeClaim>, scp: Option<ScopeClaim>) -> Arc<[Box<str>]> {
        let mut out = Vec::new();
        for claim in [scope, scp].into_iter().flatten() {
            claim.push_into(&mut out);
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|s| seen.insert(s.clone()));
        out.into()
    }
}

/// RFC 8707 / MCP "Token Audience Binding": one of the route's audiences must be in `aud`.
pub(crate) fn check_audience(token: &[Box<str>], route: &[String]) -> Result<(), AuthError> {
    if token.is_empty() {
        return Err(AuthError::NoAudience);
    }
    let matched = token
        .iter()
        .any(|t| route.iter().any(|r| audience_eq(t, r)));
    if matched {
        Ok(())
    } else {
        Err(AuthError::BadAudience)
    }
}

/// Exact match, except that the scheme and authority of URL-shaped values compare
/// case-insensitively (MCP § Canonical Server URI; RFC 3986 §6.2.2.1). Paths stay byte-exact:
/// `/calendar/mcp` must not match `/Calendar/mcp` or `/calendar/mcp/../admin`.
pub(crate) fn audience_eq(token: &str, route: &str) -> bool {
    if token == route {
        return true;
    }
    match (split_origin(token), split_origin(route)) {
        (Some((t_origin, t_rest)), Some((r_origin, r_rest))) => {
            t_origin.eq_ignore_ascii_case(r_origin) && t_rest == r_rest
        }
        _ => false,
    }
}

/// `https://Host:443/path?q` → (`https://Host:443`, `/path?q`).
fn split_origin(value: &str) -> Option<(&str, &str)> {
    let after_scheme = value.find("://")? + 3;
    let end = value[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(value.len(), |i| after_scheme + i);
    Some(value.split_at(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_compares_origin_case_insensitively_and_path_exactly() {
        assert!(audience_eq(
            "HTTPS://GW.example:8443/calendar/mcp",
            "https://gw.example:8443/calendar/mcp"
        ));
        assert!(!audience_eq(
            "https://gw.example/Calendar/mcp",
            "https://gw.example/calendar/mcp"
        ));
        assert!(!audience_eq(
            "https://gw.example/calendar/mcp/",
            "https://gw.example/calendar/mcp"
        ));
        assert!(!audience_eq(
            "https://gw.example.evil/calendar/mcp",
            "https://gw.example/calendar/mcp"
        ));
        assert!(audience_eq("api://calendar", "api://calendar"));
        assert!(!audience_eq("API://calendar2", "api://calendar"));
    }

    #[test]
    fn empty_audience_is_no_audience_and_mismatch_is_bad_audience() {
        let route = vec!["https://gw/a".to_owned()];
        assert!(matches!(
            check_audience(&[], &route),
            Err(AuthError::NoAudience)
        ));
        assert!(matches!(
            check_audience(&["https://gw/b".into()], &route),
            Err(AuthError::BadAudience)
        ));
        assert!(check_audience(&["x".into(), "https://gw/a".into()], &route).is_ok());
    }

    #[test]
    fn scope_and_scp_merge_without_duplicates() {
        let scopes = ScopeClaim::merge(
            Some(ScopeClaim::Spaced("a  b".into())),
            Some(ScopeClaim::List(vec!["b".into(), "c".into()])),
        );
        let scopes: Vec<&str> = scopes.iter().map(|s| &**s).collect();
        assert_eq!(scopes, ["a", "b", "c"]);
    }
}
