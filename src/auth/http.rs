//! Outbound HTTPS for metadata, JWKS and introspection: timeouts, size cap, https-only.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use url::Url;

use super::error::{AuthSetupError, FetchError};

/// Largest metadata / JWKS / introspection response we read; a JWKS is a few KiB.
pub(crate) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// TCP connect budget, separate from the total budget so a black-holed host fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Total budget (connect + TLS + headers + body) for metadata and JWKS fetches.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A response that passed the status and size checks.
pub(crate) struct Fetched {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// HTTP client bound to one issuer's trust roots.
#[derive(Clone)]
pub(crate) struct HttpFetcher {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpFetcher {
    /// `ca_file` replaces the web PKI roots: an issuer with a private CA trusts only that CA.
    pub(crate) fn new(issuer: &str, ca_file: Option<&Path>) -> Result<Self, AuthSetupError> {
        let roots = match ca_file {
            Some(path) => load_roots(issuer, path)?,
            None => RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| AuthSetupError::Tls {
                issuer: issuer.to_owned(),
                source,
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // Plain http is still allowed by the connector for loopback issuers (tests, dev);
        // `check_secure` runs before every request so nothing else gets through.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { client })
    }

    /// GET a JSON document. Redirects are not followed (a redirect is an error status).
    pub(crate) async fn get(&self, url: &Url) -> Result<Fetched, FetchError> {
        check_secure(url)?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(url.as_str())
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))?;
        self.send(req, FETCH_TIMEOUT).await
    }

    /// POST an `application/x-www-form-urlencoded` body with an Authorization header.
    pub(crate) async fn post_form(
        &self,
        url: &Url,
        authorization: HeaderValue,
        form: String,
        timeout: Duration,
    ) -> Result<Fetched, FetchError> {
        check_secure(url)?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(url.as_str())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(AUTHORIZATION, authorization)
            .body(Full::new(Bytes::from(form)))?;
        self.send(req, timeout).await
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(timeout, self.send_inner(req)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout),
        }
    }

    async fn send_inner(&self, req: Request<Full<Bytes>>) -> Result<Fetched, FetchError> {
        let resp = self.client.request(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(FetchError::Status(resp.status()));
        }
        if declared_length(resp.headers()).is_some_and(|len| len > MAX_RESPONSE_BYTES as u64) {
            return Err(FetchError::TooLarge {
                max: MAX_RESPONSE_BYTES,
            });
        }
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => FetchError::TooLarge {
                    max: MAX_RESPONSE_BYTES,
                },
                Err(other) => FetchError::Body(other),
            })?
            .to_bytes();
        Ok(Fetched {
            headers: parts.headers,
            body,
        })
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn load_roots(issuer: &str, path: &Path) -> Result<RootCertStore, AuthSetupError> {
    let pem = std::fs::read(path).map_err(|source| AuthSetupError::CaFile {
        issuer: issuer.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        // A certificate webpki cannot parse is skipped; an all-bad file fails below.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(AuthSetupError::CaEmpty {
            issuer: issuer.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// OAuth 2.1 §1.5 / RFC 8414 §3: authorization server endpoints must be https.
/// Plain http is tolerated only for loopback hosts (local development and tests).
pub(crate) fn check_secure(url: &Url) -> Result<(), FetchError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        _ => Err(FetchError::InsecureUrl(url.clone())),
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_fetched() {
        let ok = [
            "https://idp.example/jwks",
            "http://127.0.0.1:8080/j",
            "http://[::1]/j",
            "http://localhost/j",
        ];
        for u in ok {
            assert!(check_secure(&Url::parse(u).unwrap()).is_ok(), "{u}");
        }
        let bad = [
            "http://idp.example/jwks",
            "http://10.0.0.1/j",
            "ftp://127.0.0.1/j",
            "http://localhost.evil.com/j",
        ];
        for u in bad {
            assert!(check_secure(&Url::parse(u).unwrap()).is_err(), "{u}");
        }
    }
}
