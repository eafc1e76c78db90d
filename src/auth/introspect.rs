//! RFC 7662 token introspection for opaque tokens, with positive and negative caching.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use moka::Expiry;
use serde::Deserialize;
use url::form_urlencoded;

use super::claims::{Audience, ScopeClaim, audiences_of};
use super::error::{AuthError, FetchError, Malformed};
use super::jwks::IssuerKeys;
use super::jwt::{unix_now, unix_time};
use super::settings::IntrospectionSettings;
use super::{Identity, Principal, PrincipalKind};

/// Cache key: (issuer index, SHA-256 of the token). Never the token itself (OAuth 2.1 §7.1).
pub(crate) type IntrospectionKey = (usize, [u8; 32]);
pub(crate) type IntrospectionCache = moka::future::Cache<IntrospectionKey, Arc<Introspected>>;

/// Bound on remembered introspection answers.
const MAX_ENTRIES: u64 = 100_000;

pub(crate) fn introspection_cache() -> IntrospectionCache {
    moka::future::Cache::builder()
        .max_capacity(MAX_ENTRIES)
        .expire_after(TtlExpiry)
        .build()
}

/// One introspection answer and how long it may be reused.
pub(crate) struct Introspected {
    pub outcome: Outcome,
    ttl: Duration,
}

pub(crate) enum Outcome {
    Active {
        principal: Principal,
        audiences: Arc<[Box<str>]>,
    },
    Rejected(Rejection),
}

/// Why an answered introspection does not grant access.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rejection {
    Inactive,
    WrongIssuer,
    Expired,
    NoSubject,
}

impl Rejection {
    pub(crate) fn error(self) -> AuthError {
        match self {
            Rejection::Inactive => AuthError::Inactive,
            Rejection::WrongIssuer => AuthError::BadIssuer,
            Rejection::Expired => AuthError::Expired,
            Rejection::NoSubject => AuthError::Malformed(Malformed::Claim("sub")),
        }
    }
}

struct TtlExpiry;

impl Expiry<IntrospectionKey, Arc<Introspected>> for TtlExpiry {
    fn expire_after_create(
        &self,
        _: &IntrospectionKey,
        v: &Arc<Introspected>,
        _: Instant,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// RFC 7662 §2.2 response members we use.
#[derive(Deserialize)]
struct Response {
    active: bool,
    #[serde(default)]
    scope: Option<ScopeClaim>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    iss: Option<String>,
}

/// Ask one issuer about a token. Errors are transport/protocol failures (fail closed, 503).
pub(crate) async fn introspect(
    issuer: &IssuerKeys,
    settings: &IntrospectionSettings,
    token: &str,
    fingerprint: &str,
) -> Result<Arc<Introspected>, FetchError> {
    let started = Instant::now();
    let result = call(issuer, settings, token).await;
    issuer.metrics().introspected(&issuer.id, started.elapsed());
    let response = result.inspect_err(|err| {
        issuer.metrics().introspection_failed(&issuer.id);
        tracing::warn!(issuer.id = %issuer.id, token.fp = fingerprint, error = %err, "introspection failed");
    })?;
    Ok(Arc::new(interpret(issuer, settings, response, fingerprint)))
}

async fn call(
    issuer: &IssuerKeys,
    settings: &IntrospectionSettings,
    token: &str,
) -> Result<Response, FetchError> {
    // RFC 7662 §2.1: form-encoded POST; token_type_hint helps the AS look in the right table.
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .append_pair("token_type_hint", "access_token")
        .finish();
    let fetched = issuer
        .fetcher
        .post_form(
            &settings.endpoint,
            basic_auth(settings)?,
            form,
            settings.timeout,
        )
        .await?;
    Ok(serde_json::from_slice(&fetched.body)?)
}

/// RFC 6749 §2.3.1 client_secret_basic: id and secret are form-urlencoded before base64.
fn basic_auth(settings: &IntrospectionSettings) -> Result<HeaderValue, FetchError> {
    let id: String = form_urlencoded::byte_serialize(settings.client_id.as_bytes()).collect();
    let secret: String =
        form_urlencoded::byte_serialize(settings.client_secret.expose().as_bytes()).collect();
    let encoded = STANDARD.encode(format!("{id}:{secret}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|e| FetchError::Request(http::Error::from(e)))?;
    value.set_sensitive(true);
    Ok(value)
}

fn interpret(
    issuer: &IssuerKeys,
    settings: &IntrospectionSettings,
    r: Response,
    fingerprint: &str,
) -> Introspected {
    let negative = |why| Introspected {
        outcome: Outcome::Rejected(why),
        ttl: settings.inactive_ttl,
    };
    if !r.active {
        return negative(Rejection::Inactive);
    }
    // `iss` is optional in RFC 7662; when present it must be the issuer we asked.
    if r.iss
        .as_deref()
        .is_some_and(|iss| iss != issuer.settings.issuer)
    {
        return negative(Rejection::WrongIssuer);
    }
    let now = unix_now();
    let leeway = issuer.settings.leeway.as_secs_f64();
    if r.exp.is_some_and(|exp| exp + leeway < now) {
        return negative(Rejection::Expired);
    }
    let client_id = r.client_id;
    let Some(subject) = r.sub.or(r.username).or_else(|| client_id.clone()) else {
        return negative(Rejection::NoSubject);
    };
    // Never reuse an answer past the token's own expiry.
    let ttl = match r.exp {
        // Clamp before converting: a huge `exp` must not overflow Duration.
        Some(exp) => {
            Duration::from_secs_f64((exp - now).clamp(0.0, settings.cache_ttl.as_secs_f64()))
        }
        None => settings.cache_ttl,
    };
    let principal = Principal::from(Identity {
        kind: PrincipalKind::Introspected,
        issuer: issuer.settings.issuer.as_str().into(),
        subject: subject.into(),
        client_id: client_id.map(Into::into),
        scopes: ScopeClaim::merge(r.scope, None),
        expires_at: r.exp.map(unix_time),
        // Trusted without asking again only while this answer is cached: a stream opened with
        // the token ends then, so a revocation reaches open streams within `cache_ttl`.
        valid_until: Some(SystemTime::now() + ttl),
        token_fingerprint: Arc::from(fingerprint),
    });
    let audiences = audiences_of(r.aud.as_ref());
    Introspected {
        outcome: Outcome::Active {
            principal,
            audiences,
        },
        ttl,
    }
}

/// True while a cached active answer is still within the token's lifetime.
pub(crate) fn still_valid(principal: &Principal) -> bool {
    principal
        .expires_at
        .is_none_or(|exp| exp > SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let settings = IntrospectionSettings {
            endpoint: url::Url::parse("https://as.example/introspect").unwrap(),
            client_id: "gw:1".into(),
            client_secret: Secret::new("p@ss word"),
            cache_ttl: Duration::from_secs(60),
            inactive_ttl: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
        };
        let value = basic_auth(&settings).unwrap();
        assert!(value.is_sensitive());
        let b64 = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap();
        assert_eq!(decoded, "gw%3A1:p%40ss+word");
        assert_eq!(format!("{:?}", settings.client_secret), "[redacted]");
    }
}
