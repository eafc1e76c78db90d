//! Documents served under `/.well-known/` on the public listener, before authentication:
//! a client needs them to obtain a token in the first place (RFC 9728 §3, RFC 8414 §3).

use foldhash::HashMap;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::auth::Authenticator;
use crate::body::{Body, full};
use crate::metadata::{AS_METADATA_PATH, PRM_PREFIX};

/// Metadata changes only with config; a few minutes of caching spares the gateway without
/// keeping clients on stale data for long after a reload.
const CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=300");

#[derive(Debug, Clone)]
enum Document {
    /// Prepared at build time (protected resource metadata, dev issuer discovery and JWKS).
    Static(Bytes),
    /// The issuer's own metadata, fetched and cached by the authenticator.
    IssuerMetadata(usize),
}

#[derive(Debug, Default)]
pub struct WellKnown {
    documents: HashMap<String, Document>,
}

impl WellKnown {
    pub fn add_static(&mut self, path: String, body: Bytes) {
        self.documents.entry(path).or_insert(Document::Static(body));
    }

    pub fn add_issuer_metadata(&mut self, path: &str, issuer: usize) {
        self.documents
            .entry(path.to_string())
            .or_insert(Document::IssuerMetadata(issuer));
    }

    /// Whether a path is one of ours; other `/.well-known/` paths fall through to routing (404).
    pub fn serves(&self, path: &str) -> bool {
        self.documents.contains_key(path)
    }

    /// Answers GET/HEAD for a known document.
    pub async fn respond(
        &self,
        path: &str,
        method: &Method,
        auth: &Authenticator,
    ) -> Option<Response<Body>> {
        let doc = self.documents.get(path)?;
        if !matches!(*method, Method::GET | Method::HEAD) {
            let mut resp = Response::new(crate::body::empty());
            *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            resp.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            return Some(resp);
        }
        let body = match doc {
            Document::Static(b) => Some(b.clone()),
            Document::IssuerMetadata(i) => auth.issuer_metadata(*i).await,
        };
        Some(match body {
            Some(b) => json(StatusCode::OK, b),
            None => json(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(br#"{"error":"temporarily_unavailable"}"#),
            ),
        })
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::OK {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, CACHE_CONTROL);
    }
    resp
}

pub fn is_well_known(path: &str) -> bool {
    path.starts_with("/.well-known/")
}

/// The documents of the root: PRM for the default route, AS metadata for 2025-03-26 clients.
pub const ROOT_PRM: &str = PRM_PREFIX;
pub const ROOT_AS: &str = AS_METADATA_PATH;
