//! Extracting the caller's credential from a request (RFC 6750 §2.1), strictly: one
//! `Authorization: Bearer` header and nothing else.

use http::{HeaderMap, Uri, header};

/// Why the credential itself is malformed: answered with 400 `invalid_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("more than one Authorization header")]
    Duplicate,
    #[error("Authorization scheme is not Bearer")]
    NotBearer,
    #[error("bearer token is not token68 syntax")]
    BadSyntax,
    #[error("access token in the query string")]
    InQuery,
}

impl CredentialError {
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialError::Duplicate => "duplicate_credentials",
            CredentialError::NotBearer => "not_bearer",
            CredentialError::BadSyntax => "malformed",
            CredentialError::InQuery => "token_in_query",
        }
    }
}

/// A bearer token as sent, not yet checked against the token68 grammar. A token the
/// verified-token cache holds needs no check: its bytes passed every check when it was
/// verified, and checking a ~1 KiB JWT on every request cost ~1.7k instructions (callgrind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bearer<'h>(&'h [u8]);

impl<'h> Bearer<'h> {
    pub fn as_bytes(self) -> &'h [u8] {
        self.0
    }

    /// The token, once it is `b64token` syntax (RFC 6750 §2.1).
    pub fn check(self) -> Result<&'h str, CredentialError> {
        if !is_token68(self.0) {
            return Err(CredentialError::BadSyntax);
        }
        std::str::from_utf8(self.0).map_err(|_| CredentialError::BadSyntax)
    }
}

/// The bearer token, if any. MCP forbids tokens in the URI (authorization spec, "Access Token
/// Usage"); one there is refused even when a header is present too, so it is never logged by
/// an access log somewhere along the way without the client hearing about it.
pub fn bearer<'h>(
    headers: &'h HeaderMap,
    uri: &Uri,
) -> Result<Option<Bearer<'h>>, CredentialError> {
    if uri.query().is_some_and(query_has_token) {
        return Err(CredentialError::InQuery);
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::Duplicate);
    }
    let bytes = value.as_bytes();
    let Some(space) = bytes.iter().position(|&b| b == b' ') else {
        return Err(not_bearer(bytes));
    };
    if !bytes[..space].eq_ignore_ascii_case(b"bearer") {
        return Err(not_bearer(bytes));
    }
    // `1*SP b64token` (RFC 6750 §2.1): spaces only, no other whitespace.
    let rest = &bytes[space + 1..];
    let token = &rest[rest.iter().take_while(|&&b| b == b' ').count()..];
    Ok(Some(Bearer(token)))
}

/// A value that is not visible ASCII is malformed whatever its scheme.
fn not_bearer(value: &[u8]) -> CredentialError {
    if value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        CredentialError::NotBearer
    } else {
        CredentialError::BadSyntax
    }
}

fn query_has_token(query: &str) -> bool {
    query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        key.eq_ignore_ascii_case("access_token")
    })
}

/// RFC 6750 §2.1 `b64token`: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
///
/// Runs over every token on every request, so the per-byte test is branch-free and has no early
/// exit: the compiler vectorises it (a table lookup per byte cost ~4 instructions a byte).
pub(crate) fn is_token68(token: &[u8]) -> bool {
    let padding = token.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &token[..token.len() - padding];
    !body.is_empty() && body.iter().fold(true, |ok, &b| ok & b64token_byte(b))
}

fn b64token_byte(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_branch_free_byte_test_matches_the_grammar_for_every_byte() {
        for b in 0..=255u8 {
            let grammar =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(b64token_byte(b), grammar, "byte {b:#04x}");
        }
    }

    /// `bearer` followed by the syntax check, as the gateway does on a cache miss.
    fn checked<'h>(h: &'h HeaderMap, uri: &Uri) -> Result<Option<&'h str>, CredentialError> {
        bearer(h, uri)?.map(Bearer::check).transpose()
    }

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn one_bearer_header_yields_the_token() {
        let uri: Uri = "/mcp".parse().unwrap();
        assert_eq!(
            checked(&headers(&["Bearer abc.def-ghi"]), &uri),
            Ok(Some("abc.def-ghi"))
        );
        assert_eq!(checked(&headers(&["bearer abc"]), &uri), Ok(Some("abc")));
        assert_eq!(checked(&HeaderMap::new(), &uri), Ok(None));
    }

    #[test]
    fn malformed_or_duplicated_credentials_are_refused() {
        let uri: Uri = "/mcp".parse().unwrap();
        assert_eq!(
            checked(&headers(&["Bearer a", "Bearer b"]), &uri),
            Err(CredentialError::Duplicate)
        );
        assert_eq!(
            checked(&headers(&["Basic YTpi"]), &uri),
            Err(CredentialError::NotBearer)
        );
        assert_eq!(
            checked(&headers(&["Bearer"]), &uri),
            Err(CredentialError::NotBearer)
        );
        assert_eq!(
            checked(&headers(&["Bearer a b"]), &uri),
            Err(CredentialError::BadSyntax)
        );
        assert_eq!(
            checked(&headers(&["Bearer =="]), &uri),
            Err(CredentialError::BadSyntax)
        );
        assert_eq!(
            checked(&headers(&["Bearer \tabc"]), &uri),
            Err(CredentialError::BadSyntax),
            "only spaces separate scheme and token"
        );
        assert_eq!(
            checked(&headers(&["Bearer   abc=="]), &uri),
            Ok(Some("abc=="))
        );
        for raw in [&b"B\xc3\xa4arer abc"[..], b"Bearer ab\xc3\xa4"] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_bytes(raw).unwrap());
            assert_eq!(checked(&h, &uri), Err(CredentialError::BadSyntax));
        }
    }

    #[test]
    fn token_in_query_is_refused_even_with_a_header() {
        let uri: Uri = "/mcp?x=1&access_token=abc".parse().unwrap();
        assert_eq!(
            checked(&headers(&["Bearer a"]), &uri),
            Err(CredentialError::InQuery)
        );
    }
}
