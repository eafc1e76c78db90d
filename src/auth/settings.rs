//! Runtime issuer settings, already validated by the config layer.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use url::Url;

/// One trusted authorization server (RFC 8414 issuer) in runtime form.
#[derive(Clone, Debug)]
pub struct IssuerSettings {
    /// Config id; the only value used as a metric label for this issuer.
    pub id: String,
    /// Exact `iss` value (RFC 9068 §4: compared byte for byte, no normalisation).
    pub issuer: String,
    /// Allowed JWS algorithms. Never HS*/none: [`crate::auth::Authenticator::new`] refuses them too.
    pub algorithms: Vec<Algorithm>,
    /// `None` = discover from RFC 8414 / OpenID Connect metadata.
    pub jwks_uri: Option<Url>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Minimum gap between two unknown-kid refetches (protects the issuer from kid spraying).
    pub refresh_min_interval: Duration,
    /// Refresh period when the JWKS response carries no `Cache-Control: max-age`.
    pub refresh_default: Duration,
    /// Upper clamp on `max-age`.
    pub refresh_max: Duration,
    /// Keys are dropped this long after the last successful fetch.
    pub max_staleness: Duration,
    /// PEM bundle replacing the public web PKI roots for this issuer's endpoints.
    pub ca_file: Option<PathBuf>,
    /// RFC 7662 introspection for opaque tokens.
    pub introspection: Option<IntrospectionSettings>,
    /// Keys known up front (embedded dev issuer): no fetch, never stale.
    pub static_keys: Option<JwkSet>,
}

impl IssuerSettings {
    /// Settings with the schema defaults (CONFIG-SCHEMA.md), discovery enabled.
    pub fn new(id: impl Into<String>, issuer: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            issuer: issuer.into(),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            jwks_uri: None,
            leeway: Duration::from_secs(30),
            refresh_min_interval: Duration::from_secs(10),
            refresh_default: Duration::from_secs(300),
            refresh_max: Duration::from_secs(86_400),
            max_staleness: Duration::from_secs(86_400),
            ca_file: None,
            introspection: None,
            static_keys: None,
        }
    }
}

/// RFC 7662 token introspection client settings.
#[derive(Clone, Debug)]
pub struct IntrospectionSettings {
    pub endpoint: Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// Upper bound on caching an active result (also bounded by the token's `exp`).
    pub cache_ttl: Duration,
    /// How long an `active: false` answer is remembered.
    pub inactive_ttl: Duration,
    /// Total time for one introspection call; on expiry the request fails closed (503).
    pub timeout: Duration,
}

/// A secret string that never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
