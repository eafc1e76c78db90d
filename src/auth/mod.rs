//! Authentication core: JWT (JWKS) and opaque (RFC 7662) access tokens, and route API keys.
//!
//! The gateway extracts the bearer token (RFC 6750 §2.1) and calls [`Authenticator::authenticate`]
//! with the route's [`RouteAuth`]; the returned [`Principal`] is the evidence that the request
//! passed authentication. Audience binding (RFC 8707, MCP "Token Audience Binding") and issuer
//! trust are per route, also for tokens served from the verified-token cache.

mod api_key;
pub mod bearer;
mod cache;
mod claims;
pub mod dev;
mod discovery;
mod error;
mod http;
mod introspect;
mod jwks;
mod jwt;
mod keys;
mod metrics;
mod settings;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

pub use api_key::{API_KEY_ISSUER, ApiKey, hash_api_key, parse_api_key_hash};
pub use error::{AuthError, AuthSetupError, FetchError, Malformed};
pub use metrics::AuthMetrics;
pub use settings::{IntrospectionSettings, IssuerSettings, Secret};

use cache::TokenCache;
use introspect::{IntrospectionCache, Outcome};
use jwks::{IssuerKeys, KeyCache};

/// Tokens above this size are refused before any decoding (a real access token is < 2 KiB;
/// parsing attacker-sized base64/JSON is wasted work).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a route accepts.
#[derive(Clone, Debug)]
pub struct RouteAuth {
    pub route_id: Arc<str>,
    /// Indexes into the issuer list given to [`Authenticator::new`].
    pub issuers: Vec<usize>,
    /// Route resource first, then configured extras.
    pub audiences: Vec<String>,
    pub api_keys: Vec<ApiKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    Jwt,
    Introspected,
    ApiKey,
    Anonymous,
}

/// Who is calling: the result of a successful authentication. One shared allocation per
/// verified credential: the verified-token cache, every request made with the token and every
/// audit line about them hold the same [`Identity`], so passing it along copies no text.
#[derive(Clone, Debug)]
pub struct Principal(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    identity: Identity,
    /// The identity's members of an audit line, rendered once by the audit writer.
    audit_members: OnceLock<Box<str>>,
}

#[derive(Debug)]
pub struct Identity {
    pub kind: PrincipalKind,
    /// Exact `iss` for tokens, [`API_KEY_ISSUER`] for API keys.
    pub issuer: Arc<str>,
    pub subject: Arc<str>,
    pub client_id: Option<Arc<str>>,
    pub scopes: Arc<[Box<str>]>,
    pub expires_at: Option<SystemTime>,
    /// The last moment the gateway accepts the credential without checking it again: `exp` plus
    /// the issuer's leeway for a JWT; for an introspected token, the end of its cached answer
    /// (its `exp`, or `cache_ttl` after the introspection). A GET's event stream ends then.
    pub valid_until: Option<SystemTime>,
    /// [`token_fingerprint`] of the credential, safe for logs and audit.
    pub token_fingerprint: Arc<str>,
}

impl From<Identity> for Principal {
    fn from(identity: Identity) -> Self {
        Principal(Arc::new(Shared {
            identity,
            audit_members: OnceLock::new(),
        }))
    }
}

impl std::ops::Deref for Principal {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.0.identity
    }
}

impl Principal {
    /// The principal of a request on a route that allows anonymous access.
    pub fn anonymous() -> Self {
        Principal::from(Identity {
            kind: PrincipalKind::Anonymous,
            issuer: "anonymous".into(),
            subject: "anonymous".into(),
            client_id: None,
            scopes: Arc::from([]),
            expires_at: None,
            valid_until: None,
            token_fingerprint: Arc::from(""),
        })
    }

    /// The identity's audit-line members, rendered by `render` the first time they are asked for.
    pub(crate) fn audit_members(&self, render: impl FnOnce(&Identity) -> Box<str>) -> &str {
        self.0
            .audit_members
            .get_or_init(|| render(&self.0.identity))
    }
}

impl Identity {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| &**s == scope)
    }
}

/// First 12 hex digits of the token's BLAKE3 hash: correlates log lines without revealing the token.
pub fn token_fingerprint(token: &str) -> String {
    fingerprint_of(&cache_key(token))
}

/// BLAKE3 of a token: the stable source of its fingerprint, and the key of the introspection
/// cache, which thus never holds an opaque token.
pub fn cache_key(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// SHA-256, the form API-key hashes take in the config.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn fingerprint_of(digest: &[u8; 32]) -> String {
    hex(&digest[..6])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Validates credentials against the configured issuers. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    issuers: Vec<Arc<IssuerKeys>>,
    tokens: TokenCache,
    introspections: IntrospectionCache,
    metrics: AuthMetrics,
    started: AtomicBool,
    /// Stops the background loaders when the last handle is dropped (e.g. after a reload).
    cancel: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Authenticator {
    /// Build and register metrics on `registry`.
    pub fn new(
        issuers: Vec<IssuerSettings>,
        registry: &prometheus::Registry,
    ) -> Result<Self, AuthSetupError> {
        Self::with_metrics(issuers, AuthMetrics::register(registry)?)
    }

    /// Build with already-registered metrics (config reload keeps the same collectors).
    pub fn with_metrics(
        issuers: Vec<IssuerSettings>,
        metrics: AuthMetrics,
    ) -> Result<Self, AuthSetupError> {
        let key_cache: KeyCache = jwks::key_cache(issuers.len());
        let mut built = Vec::with_capacity(issuers.len());
        for (idx, settings) in issuers.into_iter().enumerate() {
            validate_settings(&settings)?;
            let fetcher = http::HttpFetcher::new(&settings.id, settings.ca_file.as_deref())?;
            let keys = IssuerKeys::new(idx, settings, key_cache.clone(), fetcher, metrics.clone());
            built.push(Arc::new(keys));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                issuers: built,
                tokens: TokenCache::new(),
                introspections: introspect::introspection_cache(),
                metrics,
                started: AtomicBool::new(false),
                cancel: CancellationToken::new(),
            }),
        })
    }

    /// Spawn the background JWKS loaders (once; later calls do nothing). Needs a Tokio runtime.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        for issuer in &self.inner.issuers {
            tokio::spawn(issuer.clone().run(self.inner.cancel.child_token()));
        }
    }

    /// True once every issuer has loaded its keys (or learnt it has none) at least once.
    pub fn ready(&self) -> bool {
        self.inner.issuers.iter().all(|i| i.loaded_once())
    }

    /// Authenticate a bearer credential for `route`: API key, JWT, or opaque token.
    pub async fn authenticate(
        &self,
        route: &RouteAuth,
        token: &str,
    ) -> Result<Principal, AuthError> {
        let result = self.authenticate_inner(route, token).await;
        if let Err(err) = &result {
            log_rejected(route, err, token);
        }
        result
    }

    async fn authenticate_inner(
        &self,
        route: &RouteAuth,
        token: &str,
    ) -> Result<Principal, AuthError> {
        check_shape(token)?;
        if !route.api_keys.is_empty()
            && let Some(key) = api_key::find(&route.api_keys, &sha256(token.as_bytes()))
        {
            return Ok(api_key::principal(key, token_fingerprint(token)));
        }
        // A token verified before skips the character checks: the cache compared every byte,
        // and those bytes passed every check when they were verified.
        if let Some(admitted) = self.cached_jwt(route, token.as_bytes()) {
            return admitted;
        }
        let digest = cache_key(token);
        let fp = fingerprint_of(&digest);
        if jwt::is_jwt_shaped(token) {
            return self.verify_jwt(route, token, &fp).await;
        }
        check_charset(token)?;
        // Boxed, like the JWT miss path: introspection's HTTP exchange would otherwise be laid
        // out inline in every request's future, which is moved on each request.
        Box::pin(self.authenticate_opaque(route, token, &digest, &fp)).await
    }

    /// The verified-token cache alone, looked up by the token's bytes before any syntax check
    /// (see [`bearer::Bearer`]). `None`: not cached, or the route takes API keys, which
    /// [`Authenticator::authenticate`] tries first.
    pub fn authenticate_cached(
        &self,
        route: &RouteAuth,
        token: &[u8],
    ) -> Option<Result<Principal, AuthError>> {
        if !route.api_keys.is_empty() {
            return None;
        }
        let result = self.cached_jwt(route, token)?;
        if let Err(err) = &result {
            // The bytes equal a verified token's, so they are ASCII.
            log_rejected(route, err, &String::from_utf8_lossy(token));
        }
        Some(result)
    }

    /// API keys only (no token paths): for routes or callers that accept nothing else.
    pub fn authenticate_api_key(
        &self,
        route: &RouteAuth,
        key: &str,
    ) -> Result<Principal, AuthError> {
        check_shape(key)?;
        let digest = sha256(key.as_bytes());
        api_key::find(&route.api_keys, &digest)
            .map(|k| api_key::principal(k, token_fingerprint(key)))
            .ok_or(AuthError::BadApiKey)
    }

    /// Raw RFC 8414 / OIDC metadata of an issuer, for the 2025-03-26 back-compat endpoint.
    pub async fn issuer_metadata(&self, issuer_idx: usize) -> Option<Bytes> {
        self.inner
            .issuers
            .get(issuer_idx)?
            .metadata_document()
            .await
    }

    /// The verified-token cache: `None` when the token is not there or no longer trusted.
    fn cached_jwt(&self, route: &RouteAuth, token: &[u8]) -> Option<Result<Principal, AuthError>> {
        let entry = self.inner.tokens.get(token)?;
        if !self.still_trusted(&entry) {
            return None;
        }
        let hit = &entry.verified;
        self.inner.metrics.token_cache_hit();
        Some(admit(
            route,
            &hit.principal,
            hit.issuer_idx,
            &hit.audiences,
            &self.inner.issuers,
        ))
    }

    async fn verify_jwt(
        &self,
        route: &RouteAuth,
        token: &str,
        fp: &str,
    ) -> Result<Principal, AuthError> {
        self.inner.metrics.token_cache_miss();
        check_charset(token)?;
        let verified = Box::pin(jwt::verify(&self.inner.issuers, route, token, fp)).await?;
        let entry = self.inner.tokens.insert(token, verified);
        let verified = &entry.verified;
        admit(
            route,
            &verified.principal,
            verified.issuer_idx,
            &verified.audiences,
            &self.inner.issuers,
        )
    }

    /// A cached verification stands only while the verifying key is still published and fresh.
    /// Once the key was found in the current key set, the entry remembers that set's
    /// generation, and later hits compare generations instead of searching the set again.
    fn still_trusted(&self, entry: &cache::Entry) -> bool {
        let v = &entry.verified;
        let issuer = &self.inner.issuers[v.issuer_idx];
        let fresh = issuer.fresh_generation();
        let key_present = match fresh {
            Some(generation) if entry.trusted_generation.load(Ordering::Relaxed) == generation => {
                true
            }
            _ => issuer.current().is_some_and(|set| {
                let present = set.contains(&v.key);
                if present && fresh == Some(set.generation) {
                    entry
                        .trusted_generation
                        .store(set.generation, Ordering::Relaxed);
                }
                present
            }),
        };
        key_present && introspect::still_valid(&v.principal)
    }

    async fn authenticate_opaque(
        &self,
        route: &RouteAuth,
        token: &str,
        digest: &[u8; 32],
        fp: &str,
    ) -> Result<Principal, AuthError> {
        let mut outcome: Option<AuthError> = None;
        for &idx in &route.issuers {
            let Some(issuer) = self.inner.issuers.get(idx) else {
                continue;
            };
            let Some(settings) = &issuer.settings.introspection else {
                continue;
            };
            match self
                .introspect_cached(issuer, idx, settings, token, digest, fp)
                .await
            {
                Ok(entry) => match &entry.outcome {
                    Outcome::Active {
                        principal,
                        audiences,
                    } => {
                        return admit_introspected(route, principal, audiences);
                    }
                    Outcome::Rejected(why) => {
                        // An outage elsewhere outranks a "no" here: that issuer might say yes.
                        if !outcome.as_ref().is_some_and(AuthError::is_unavailable) {
                            outcome = Some(why.error());
                        }
                    }
                },
                Err(err) => outcome = Some(err),
            }
        }
        Err(outcome.unwrap_or_else(|| match route.api_keys.is_empty() {
            true => AuthError::OpaqueNotAccepted {
                route: route.route_id.clone(),
            },
            false => AuthError::BadApiKey,
        }))
    }

    async fn introspect_cached(
        &self,
        issuer: &IssuerKeys,
        idx: usize,
        settings: &IntrospectionSettings,
        token: &str,
        digest: &[u8; 32],
        fp: &str,
    ) -> Result<Arc<introspect::Introspected>, AuthError> {
        let key = (idx, *digest);
        if let Some(hit) = self.inner.introspections.get(&key).await {
            self.inner.metrics.token_cache_hit();
            return Ok(hit);
        }
        self.inner.metrics.token_cache_miss();
        // try_get_with: concurrent requests with the same token share one introspection call;
        // errors are not cached, so the next request retries.
        self.inner
            .introspections
            .try_get_with(key, introspect::introspect(issuer, settings, token, fp))
            .await
            .map_err(|source| AuthError::IntrospectionUnavailable {
                issuer: issuer.id.clone(),
                source,
            })
    }
}

/// Route checks applied to every JWT, fresh or cached: issuer trusted here, audience is ours.
fn admit(
    route: &RouteAuth,
    principal: &Principal,
    issuer_idx: usize,
    audiences: &[Box<str>],
    issuers: &[Arc<IssuerKeys>],
) -> Result<Principal, AuthError> {
    if !route.issuers.contains(&issuer_idx) {
        return Err(AuthError::UntrustedIssuer {
            issuer: issuers[issuer_idx].id.clone(),
            route: route.route_id.clone(),
        });
    }
    claims::check_audience(audiences, &route.audiences)?;
    Ok(principal.clone())
}

/// RFC 7662 makes `aud` optional. When the AS returns one it must name this resource; when it
/// returns none we accept, because many servers (e.g. Keycloak for some clients) omit it and
/// the AS, not the token, is then the authority that the token is valid here.
fn admit_introspected(
    route: &RouteAuth,
    principal: &Principal,
    audiences: &[Box<str>],
) -> Result<Principal, AuthError> {
    if !introspect::still_valid(principal) {
        return Err(AuthError::Expired);
    }
    if !audiences.is_empty() {
        claims::check_audience(audiences, &route.audiences)?;
    }
    Ok(principal.clone())
}

fn log_rejected(route: &RouteAuth, err: &AuthError, token: &str) {
    tracing::debug!(route.id = %route.route_id, auth.reason = err.reason(), token.fp = %token_fingerprint(token), error = %err, "credential rejected");
}

fn check_shape(token: &str) -> Result<(), AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge {
            max: MAX_TOKEN_BYTES,
        });
    }
    if token.is_empty() {
        return Err(AuthError::Malformed(Malformed::Segments));
    }
    Ok(())
}

/// RFC 6750 §2.1 b64token: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then "=" padding.
fn check_charset(token: &str) -> Result<(), AuthError> {
    if bearer::is_token68(token.as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::Malformed(Malformed::Charset))
    }
}

fn validate_settings(s: &IssuerSettings) -> Result<(), AuthSetupError> {
    if s.algorithms.is_empty() {
        return Err(AuthSetupError::NoAlgorithms {
            issuer: s.id.clone(),
        });
    }
    if let Some(&alg) = s.algorithms.iter().find(|a| {
        matches!(
            a,
            jsonwebtoken::Algorithm::HS256
                | jsonwebtoken::Algorithm::HS384
                | jsonwebtoken::Algorithm::HS512
        )
    }) {
        return Err(AuthSetupError::SymmetricAlgorithm {
            issuer: s.id.clone(),
            alg,
        });
    }
    let urls = s
        .jwks_uri
        .iter()
        .chain(s.introspection.as_ref().map(|i| &i.endpoint));
    for url in urls {
        if http::check_secure(url).is_err() {
            return Err(AuthSetupError::InsecureUrl {
                issuer: s.id.clone(),
                url: url.clone(),
            });
        }
    }
    if let Some(set) = &s.static_keys
        && keys::from_set(set).is_empty()
    {
        return Err(AuthSetupError::StaticKeys {
            issuer: s.id.clone(),
        });
    }
    Ok(())
}
