//! Typed authentication errors; `reason()` is the bounded metric label.

use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::Algorithm;

/// Why a presented credential was not accepted.
///
/// Every variant is a 401 except those for which [`AuthError::is_unavailable`] is true (503):
/// an outage of our dependencies must not look like a bad token, and must not let one through.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("token is malformed: {0}")]
    Malformed(Malformed),
    #[error("token type is not an access token (RFC 9068 §4)")]
    BadType,
    #[error("algorithm {alg:?} is not allowed for this issuer or key")]
    AlgNotAllowed { alg: Option<Algorithm> },
    #[error("no key of issuer {issuer} matches the token's kid")]
    UnknownKid { issuer: Arc<str> },
    #[error("keys of issuer {issuer} are not available")]
    KeysUnavailable { issuer: Arc<str> },
    #[error("signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token issuer is not configured")]
    BadIssuer,
    #[error("issuer {issuer} is not trusted by route {route}")]
    UntrustedIssuer { issuer: Arc<str>, route: Arc<str> },
    #[error("token audience does not include this resource")]
    BadAudience,
    #[error("token has no audience")]
    NoAudience,
    #[error("token is not active")]
    Inactive,
    #[error("introspection at issuer {issuer} failed")]
    IntrospectionUnavailable {
        issuer: Arc<str>,
        #[source]
        source: Arc<FetchError>,
    },
    #[error("opaque token and no introspection endpoint trusted by route {route}")]
    OpaqueNotAccepted { route: Arc<str> },
    #[error("API key does not match")]
    BadApiKey,
}

/// Which part of a token could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("not three base64url segments")]
    Segments,
    #[error("header is not valid base64url JSON")]
    Header,
    #[error("claims are not valid base64url JSON")]
    Claims,
    #[error("header lists critical extensions we do not implement (RFC 7515 §4.1.11)")]
    Crit,
    #[error("claim `{0}` is missing or has the wrong type")]
    Claim(&'static str),
    #[error("signature encoding is invalid")]
    Signature,
    #[error("token contains characters not allowed in a bearer token (RFC 6750 §2.1)")]
    Charset,
}

impl AuthError {
    /// Stable, bounded label for `auth_total{reason}` and the `auth.reason` log field.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::TooLarge { .. } => "too_large",
            AuthError::Malformed(_) => "malformed",
            AuthError::BadType => "bad_type",
            AuthError::AlgNotAllowed { .. } => "alg_not_allowed",
            AuthError::UnknownKid { .. } => "unknown_kid",
            AuthError::KeysUnavailable { .. } => "keys_unavailable",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid | AuthError::IssuedInFuture => "not_yet_valid",
            AuthError::BadIssuer => "bad_issuer",
            AuthError::UntrustedIssuer { .. } => "untrusted_issuer",
            AuthError::BadAudience => "bad_audience",
            AuthError::NoAudience => "no_audience",
            AuthError::Inactive => "inactive",
            AuthError::IntrospectionUnavailable { .. } => "introspection_unavailable",
            AuthError::OpaqueNotAccepted { .. } => "opaque_not_accepted",
            AuthError::BadApiKey => "bad_api_key",
        }
    }

    /// True when the failure is ours (issuer keys or introspection down): answer 503, not 401.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            AuthError::KeysUnavailable { .. } | AuthError::IntrospectionUnavailable { .. }
        )
    }
}

/// An outbound fetch (metadata, JWKS, introspection) that failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("URL {0} is not https and not a loopback host")]
    InsecureUrl(url::Url),
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
    #[error("request timed out")]
    Timeout,
    #[error("transport error: {0}")]
    Transport(#[from] hyper_util::client::legacy::Error),
    #[error("unexpected HTTP status {0}")]
    Status(http::StatusCode),
    #[error("response body exceeds {max} bytes")]
    TooLarge { max: usize },
    #[error("reading response body failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("response is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("metadata `issuer` does not equal the configured issuer (RFC 8414 §3.3)")]
    IssuerMismatch,
    #[error("JWKS holds no usable signature key")]
    NoUsableKeys,
    #[error("metadata has no usable `jwks_uri`")]
    NoJwksUri,
    #[error("no discovery document found")]
    NoMetadata,
}

/// Why an [`crate::auth::Authenticator`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("issuer {issuer}: algorithm {alg:?} is not allowed (symmetric or none)")]
    SymmetricAlgorithm { issuer: String, alg: Algorithm },
    #[error("issuer {issuer}: no algorithms allowed")]
    NoAlgorithms { issuer: String },
    #[error("issuer {issuer}: {url} must be https (or http on a loopback host)")]
    InsecureUrl { issuer: String, url: url::Url },
    #[error("issuer {issuer}: cannot read CA file {path}: {source}")]
    CaFile {
        issuer: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("issuer {issuer}: CA file {path} holds no usable certificate")]
    CaEmpty { issuer: String, path: PathBuf },
    #[error("issuer {issuer}: TLS setup failed: {source}")]
    Tls {
        issuer: String,
        #[source]
        source: rustls::Error,
    },
    #[error("issuer {issuer}: static key set holds no usable key")]
    StaticKeys { issuer: String },
    #[error("registering metrics failed: {0}")]
    Metrics(#[from] prometheus::Error),
}
