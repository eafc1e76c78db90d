//! Forwarding to upstream MCP servers: a pooled client per route, header rules, streaming.

mod direct;
pub mod filter;
mod h1;
pub mod headers;
pub mod lifetime;
pub mod sse;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use bytes::Bytes;

use crate::body::{Body, full};

/// A request body as the upstream exchange takes it.
pub enum Payload {
    /// Read in full and checked (every POST): on a plain-HTTP upstream it goes out with the
    /// head in one write, without a body object around it.
    Buffered(Bytes),
    /// Passed through as it arrives, under the route's size limit.
    Streaming(Body),
}

impl Payload {
    fn into_body(self) -> Body {
        match self {
            Payload::Buffered(bytes) => full(bytes),
            Payload::Streaming(body) => body,
        }
    }
}

/// Why an upstream exchange failed; `kind()` is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream connection failed")]
    Connect(#[source] crate::body::BoxError),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream connection reset or protocol error")]
    Reset(#[source] crate::body::BoxError),
}

impl UpstreamError {
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Reset(_) => "reset",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("upstream URL {0} has no host")]
    NoHost(String),
    #[error("TLS client setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// One upstream: where it is and the pooled keep-alive client that reaches it.
pub struct Upstream {
    transport: Transport,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    /// Upstream path without a trailing slash; the route's sub-path tail is appended.
    base_path: String,
    timeout: Duration,
}

impl Upstream {
    pub fn new(
        uri: &Uri,
        connect_timeout: Duration,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, SetupError> {
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| SetupError::NoHost(uri.to_string()))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| SetupError::NoHost(uri.to_string()))?;
        let transport = if uri.scheme() == Some(&Scheme::HTTPS) {
            Transport::Tls(Box::new(build_client(connect_timeout, ca_file)?))
        } else {
            let port = authority.port_u16().unwrap_or(80);
            let addr = format!("{}:{port}", authority.host());
            Transport::Plain(direct::Pool::new(addr, connect_timeout))
        };
        Ok(Upstream {
            transport,
            scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority,
            host,
            base_path: uri.path().trim_end_matches('/').to_string(),
            timeout,
        })
    }

    /// The absolute upstream URI for a request whose path below the route is `tail`; the
    /// pooled TLS client picks a connection by it.
    fn target(&self, tail: &str, query: Option<&str>) -> Uri {
        let mut pq = String::with_capacity(self.base_path.len() + tail.len() + 1);
        pq.push_str(&self.base_path);
        pq.push_str(tail);
        if pq.is_empty() {
            pq.push('/');
        }
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = PathAndQuery::try_from(pq).ok();
        Uri::from_parts(parts).unwrap_or_default()
    }

    /// Sends a request with the headers `outbound` says and returns the upstream's response
    /// with its body still streaming. The timeout covers connect and response headers only: an
    /// SSE body may legitimately stay open for a long time.
    pub async fn send(
        &self,
        req: Request<Payload>,
        tail: &str,
        outbound: headers::Outbound<'_>,
    ) -> Result<Response<Body>, UpstreamError> {
        // Boxed: hyper-util's client future is large, and only TLS upstreams pay for it.
        let sending = async {
            match &self.transport {
                Transport::Plain(pool) => self.send_plain(pool, req, tail, &outbound).await,
                Transport::Tls(client) => {
                    let req = req.map(Payload::into_body);
                    Box::pin(self.send_tls(client, req, tail, outbound)).await
                }
            }
        };
        tokio::time::timeout(self.timeout, sending)
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
    }

    /// The request head is written straight from the prepared headers; the response comes
    /// back already stripped of hop-by-hop fields.
    async fn send_plain(
        &self,
        pool: &Arc<direct::Pool>,
        req: Request<Payload>,
        tail: &str,
        outbound: &headers::Outbound<'_>,
    ) -> Result<Response<Body>, UpstreamError> {
        let (parts, body) = req.into_parts();
        let head = h1::RequestHead {
            method: &parts.method,
            path: [&self.base_path, tail],
            query: parts.uri.query(),
            host: &self.host,
            headers: &parts.headers,
            outbound,
            length: None,
        };
        pool.send(head, body).await.map_err(|e| match e {
            direct::SendError::Connect(e) => UpstreamError::Connect(e),
            direct::SendError::Exchange(e) => UpstreamError::Reset(e),
        })
    }

    async fn send_tls(
        &self,
        client: &Client<HttpsConnector<HttpConnector>, Body>,
        mut req: Request<Body>,
        tail: &str,
        outbound: headers::Outbound<'_>,
    ) -> Result<Response<Body>, UpstreamError> {
        outbound.apply(req.headers_mut());
        *req.uri_mut() = self.target(tail, req.uri().query());
        *req.version_mut() = http::Version::HTTP_11;
        req.headers_mut()
            .insert(http::header::HOST, self.host.clone());
        let response = client.request(req).await.map_err(|e| {
            if e.is_connect() {
                UpstreamError::Connect(e.into())
            } else {
                UpstreamError::Reset(e.into())
            }
        })?;
        let (mut parts, body) = response.into_parts();
        headers::prepare_response(&mut parts.headers);
        let body = body
            .map_err(|e| Box::new(e) as crate::body::BoxError)
            .boxed_unsync();
        Ok(Response::from_parts(parts, body))
    }
}

/// Plain-HTTP upstreams (a sidecar, a cluster service) take the direct path; TLS upstreams use
/// hyper-util's pooled client, which negotiates HTTP/2 by ALPN where the upstream offers it.
enum Transport {
    Plain(Arc<direct::Pool>),
    Tls(Box<Client<HttpsConnector<HttpConnector>, Body>>),
}

fn build_client(
    connect_timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<Client<HttpsConnector<HttpConnector>, Body>, SetupError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(ca_file)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(512)
        .build(https))
}

/// Upstream TLS trusts the Mozilla roots, plus the route's own CA file when one is set
/// (private PKI inside a cluster).
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let ca_err = |reason: String| SetupError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))?;
        for cert in certs {
            roots
                .add(cert.map_err(|e| ca_err(e.to_string()))?)
                .map_err(|e| ca_err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
