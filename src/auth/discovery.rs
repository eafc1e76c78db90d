//! Authorization server metadata discovery (RFC 8414, OpenID Connect Discovery 1.0).

use bytes::Bytes;
use serde::Deserialize;
use url::Url;

use super::error::FetchError;
use super::http::{HttpFetcher, check_secure};

/// A validated metadata document: the raw bytes (re-served by the gateway for 2025-03-26
/// clients) and the one field we use.
#[derive(Clone, Debug)]
pub(crate) struct Metadata {
    pub raw: Bytes,
    pub jwks_uri: Option<Url>,
}

#[derive(Deserialize)]
struct MetadataFields {
    issuer: String,
    #[serde(default)]
    jwks_uri: Option<String>,
}

/// Candidate metadata URLs in the order the MCP authorization spec (2025-06-18 §2.3.2) tries them:
/// RFC 8414 path-inserted, OIDC path-inserted (RFC 8414 §5), OIDC appended (OIDC Discovery §4).
pub(crate) fn metadata_urls(issuer: &Url) -> Vec<Url> {
    let origin = issuer.origin().ascii_serialization();
    // RFC 8414 §3.1: a terminating "/" is removed before inserting the well-known segment.
    let path = issuer.path().trim_end_matches('/');
    let candidates = if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ]
    };
    candidates
        .iter()
        .filter_map(|c| Url::parse(c).ok())
        .collect()
}

/// Fetch the first metadata document that exists and names exactly our issuer.
pub(crate) async fn discover(fetcher: &HttpFetcher, issuer: &str) -> Result<Metadata, FetchError> {
    let issuer_url = Url::parse(issuer).map_err(|_| FetchError::NoMetadata)?;
    let mut last = FetchError::NoMetadata;
    for url in metadata_urls(&issuer_url) {
        match fetch_one(fetcher, &url, issuer).await {
            Ok(metadata) => return Ok(metadata),
            Err(err) => {
                tracing::debug!(url = %url, error = %err, "metadata candidate rejected");
                last = err;
            }
        }
    }
    Err(last)
}

async fn fetch_one(fetcher: &HttpFetcher, url: &Url, issuer: &str) -> Result<Metadata, FetchError> {
    let fetched = fetcher.get(url).await?;
    let fields: MetadataFields = serde_json::from_slice(&fetched.body)?;
    // RFC 8414 §3.3 / OIDC Discovery §4.3: the document must be for exactly this issuer,
    // otherwise an attacker-controlled document could substitute its own jwks_uri (mix-up).
    if fields.issuer != issuer {
        return Err(FetchError::IssuerMismatch);
    }
    let jwks_uri = match fields.jwks_uri {
        Some(raw) => {
            let url = Url::parse(&raw).map_err(|_| FetchError::NoJwksUri)?;
            check_secure(&url)?;
            Some(url)
        }
        None => None,
    };
    Ok(Metadata {
        raw: fetched.body,
        jwks_uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(issuer: &str) -> Vec<String> {
        metadata_urls(&Url::parse(issuer).unwrap())
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn issuer_with_path_tries_inserted_then_appended_forms() {
        assert_eq!(
            urls("https://auth.example.com/realms/mcp/"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/realms/mcp",
                "https://auth.example.com/.well-known/openid-configuration/realms/mcp",
                "https://auth.example.com/realms/mcp/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn issuer_without_path_tries_both_root_documents() {
        assert_eq!(
            urls("https://auth.example.com:8443"),
            [
                "https://auth.example.com:8443/.well-known/oauth-authorization-server",
                "https://auth.example.com:8443/.well-known/openid-configuration",
            ]
        );
    }
}
