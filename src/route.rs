//! Path normalisation and route lookup: which route (if any) a request path belongs to.

use std::borrow::Cow;
// foldhash: seeded per process, several times cheaper than SipHash on every request's lookup.
use foldhash::HashMap;

use crate::config::Route;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("dot segment in path")]
    DotSegment,
    #[error("empty segment in path")]
    EmptySegment,
    #[error("encoded slash, backslash or NUL in path")]
    EncodedSeparator,
    #[error("malformed percent-encoding in path")]
    BadEncoding,
}

/// Normalises a request path for matching. Unreserved characters that were percent-encoded
/// are decoded (RFC 3986 §6.2.2.2) so `/cal%65ndar` cannot dodge a route; anything that could
/// change how the upstream splits the path — dot segments, `//`, encoded `/` or `\` — is
/// refused rather than rewritten, so the gateway and the upstream never disagree about it.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let decoded = if path.contains('%') {
        Cow::Owned(decode_unreserved(path)?)
    } else {
        Cow::Borrowed(path)
    };
    check_segments(decoded.as_bytes())?;
    Ok(decoded)
}

/// One pass over the bytes (this runs on every request): no `\`, no `//`, no `.` or `..`
/// segment, reported in that order of precedence.
fn check_segments(path: &[u8]) -> Result<(), PathError> {
    let is_dot = |segment: &[u8]| segment == b"." || segment == b"..";
    let (mut backslash, mut empty, mut dot) = (false, false, false);
    let mut start = 0;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'\\' => backslash = true,
            b'/' => {
                // A segment between two slashes is empty exactly when they are adjacent.
                empty |= i > 0 && start == i;
                dot |= is_dot(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    dot |= is_dot(&path[start..]);
    if backslash {
        Err(PathError::EncodedSeparator)
    } else if empty {
        Err(PathError::EmptySegment)
    } else if dot {
        Err(PathError::DotSegment)
    } else {
        Ok(())
    }
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let hex = path.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
        let value = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEncoding)?;
        match value {
            b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                out.push(b as char)
            }
            _ => out.push_str(&path[i..i + 3]),
        }
        i += 3;
    }
    Ok(out)
}

/// Exact-path routes in a map, subpath routes checked by prefix.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, usize>,
    prefixed: Vec<(String, usize)>,
}

/// The matched route and the rest of the path below the route's path ("" for an exact match).
#[derive(Debug, PartialEq, Eq)]
pub struct Match<'p> {
    pub route: usize,
    pub tail: &'p str,
}

impl Router {
    pub fn new(routes: &[Route]) -> Self {
        let mut router = Router::default();
        for (i, r) in routes.iter().enumerate() {
            router.exact.insert(r.path.clone(), i);
            if r.subpaths {
                router.prefixed.push((format!("{}/", r.path), i));
            }
        }
        // Longest prefix first, so a nested route wins over its parent.
        router
            .prefixed
            .sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        router
    }

    pub fn find<'p>(&self, path: &'p str) -> Option<Match<'p>> {
        if let Some(&route) = self.exact.get(path) {
            return Some(Match { route, tail: "" });
        }
        self.prefixed.iter().find_map(|(prefix, route)| {
            path.strip_prefix(prefix.as_str()).map(|_| Match {
                route: *route,
                tail: &path[prefix.len() - 1..],
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass_unchanged() {
        assert_eq!(normalize("/calendar/mcp").unwrap(), "/calendar/mcp");
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("/a/b/").unwrap(), "/a/b/");
    }

    #[test]
    fn traversal_and_encoded_separators_are_refused() {
        assert_eq!(normalize("/a/../b"), Err(PathError::DotSegment));
        assert_eq!(normalize("/a/%2e%2e/b"), Err(PathError::DotSegment));
        assert_eq!(normalize("/a/./b"), Err(PathError::DotSegment));
        assert_eq!(normalize("/a//b"), Err(PathError::EmptySegment));
        assert_eq!(normalize("//a"), Err(PathError::EmptySegment));
        assert_eq!(normalize("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a\\b"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEncoding));
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_plain_definition_on_every_short_path() {
        let plain = |p: &str| {
            if p.contains('\\') {
                Err(PathError::EncodedSeparator)
            } else if p.contains("//") {
                Err(PathError::EmptySegment)
            } else if p.split('/').any(|s| s == "." || s == "..") {
                Err(PathError::DotSegment)
            } else {
                Ok(())
            }
        };
        let alphabet = ['/', '.', 'a', '\\'];
        let mut paths = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            for p in &longer {
                assert_eq!(check_segments(p.as_bytes()), plain(p), "{p:?}");
            }
            paths = longer;
        }
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded() {
        assert_eq!(normalize("/cal%65ndar/mcp").unwrap(), "/calendar/mcp");
        assert_eq!(normalize("/a%20b").unwrap(), "/a%20b");
    }
}
