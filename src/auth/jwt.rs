//! JWT access token verification (RFC 9068 profile, RFC 8725 best practices).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::claims::{Audience, ScopeClaim, audiences_of};
use super::error::{AuthError, Malformed};
use super::jwks::IssuerKeys;
use super::keys::{KeySet, Selection, VerifyKey};
use super::{Identity, Principal, PrincipalKind, RouteAuth};

/// A verified token before route-specific checks: what the verified-token cache stores.
pub(crate) struct Verified {
    pub principal: Principal,
    pub issuer_idx: usize,
    /// All `aud` values; each route checks its own audiences against them.
    pub audiences: Arc<[Box<str>]>,
    /// Thumbprint of the verifying key: a cached token dies with its key (rotation out).
    pub key: Arc<str>,
}

/// The JOSE header fields we act on. `jku`, `x5u`, `jwk` and `x5c` are deliberately not read:
/// keys come only from the issuer's own JWKS (RFC 8725 §3.10, no attacker-supplied keys).
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    #[serde(default)]
    iss: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    scope: Option<ScopeClaim>,
    #[serde(default)]
    scp: Option<ScopeClaim>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

/// A compact JWS has exactly three dot-separated segments (RFC 7515 §7.1).
pub(crate) fn is_jwt_shaped(token: &str) -> bool {
    // A sum rather than `filter().count()`, so that it vectorises: it runs over every token.
    token
        .bytes()
        .fold(0usize, |dots, b| dots + usize::from(b == b'.'))
        == 2
}

/// Verify signature and claims; the route's audiences are checked by the caller.
pub(crate) async fn verify(
    issuers: &[Arc<IssuerKeys>],
    route: &RouteAuth,
    token: &str,
    fingerprint: &str,
) -> Result<Verified, AuthError> {
    let (header, alg) = parse_header(token)?;
    let issuer_idx = select_issuer(issuers, route, &unverified_issuer(token)?)?;
    let issuer = &issuers[issuer_idx];
    if !issuer.settings.algorithms.contains(&alg) || is_symmetric(alg) {
        return Err(AuthError::AlgNotAllowed { alg: Some(alg) });
    }
    let keys = key_set_for(issuer, header.kid.as_deref(), alg).await?;
    let key = select_key(issuer, &keys, header.kid.as_deref(), alg)?;
    let claims = decode_claims(token, key, &issuer.settings, alg)?;
    let audiences = audiences_of(claims.aud.as_ref());
    let principal = principal_from(issuer, claims, fingerprint)?;
    Ok(Verified {
        principal,
        issuer_idx,
        audiences,
        key: key.thumbprint.clone(),
    })
}

fn parse_header(token: &str) -> Result<(Header, Algorithm), AuthError> {
    let segment = token
        .split('.')
        .next()
        .ok_or(AuthError::Malformed(Malformed::Segments))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed(Malformed::Header))?;
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed(Malformed::Header))?;
    // "none" and unknown names do not parse; HS* parse but are refused (RFC 8725 §3.1).
    let alg =
        Algorithm::from_str(&header.alg).map_err(|_| AuthError::AlgNotAllowed { alg: None })?;
    if is_symmetric(alg) {
        return Err(AuthError::AlgNotAllowed { alg: Some(alg) });
    }
    check_typ(header.typ.as_deref())?;
    // RFC 7515 §4.1.11: we understand no extension, so any `crit` means reject.
    if header.crit.is_some() {
        return Err(AuthError::Malformed(Malformed::Crit));
    }
    Ok((header, alg))
}

fn is_symmetric(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// RFC 9068 §4 wants `at+jwt`; plain `JWT` or no `typ` is what most IdPs still issue.
/// Anything else (an ID token's, a logout token's, a DPoP proof's type) is refused, which stops
/// other JWTs from the same issuer being replayed as access tokens (RFC 8725 §3.11).
fn check_typ(typ: Option<&str>) -> Result<(), AuthError> {
    match typ {
        None => Ok(()),
        Some(t)
            if t.eq_ignore_ascii_case("at+jwt")
                || t.eq_ignore_ascii_case("application/at+jwt")
                || t.eq_ignore_ascii_case("JWT") =>
        {
            Ok(())
        }
        Some(_) => Err(AuthError::BadType),
    }
}

fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    let segment = token
        .split('.')
        .nth(1)
        .ok_or(AuthError::Malformed(Malformed::Segments))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed(Malformed::Claims))?;
    let parsed: UnverifiedIssuer = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed(Malformed::Claim("iss")))?;
    parsed
        .iss
        .ok_or(AuthError::Malformed(Malformed::Claim("iss")))
}

/// Pick the issuer by the (still unverified) `iss`, but only among those the route trusts:
/// a token signed by another configured issuer is refused even if its signature is fine.
fn select_issuer(
    issuers: &[Arc<IssuerKeys>],
    route: &RouteAuth,
    iss: &str,
) -> Result<usize, AuthError> {
    let trusted = route
        .issuers
        .iter()
        .copied()
        .find(|&i| issuers.get(i).is_some_and(|k| k.settings.issuer == iss));
    if let Some(idx) = trusted {
        return Ok(idx);
    }
    match issuers.iter().find(|k| k.settings.issuer == iss) {
        Some(other) => Err(AuthError::UntrustedIssuer {
            issuer: other.id.clone(),
            route: route.route_id.clone(),
        }),
        None => Err(AuthError::BadIssuer),
    }
}

/// The key set to verify with; an unknown kid triggers the shared, rate-limited refetch.
async fn key_set_for(
    issuer: &IssuerKeys,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Arc<KeySet>, AuthError> {
    let current = issuer.current();
    if let Some(set) = &current
        && !matches!(set.select(kid, alg), Selection::Unknown)
    {
        return Ok(set.clone());
    }
    let seen = current.as_ref().map_or(0, |s| s.generation);
    if let Some(fresh) = issuer.refetch(seen).await {
        return Ok(fresh);
    }
    // No newer keys: answer with what we have (→ unknown_kid), or report the outage.
    current.ok_or_else(|| AuthError::KeysUnavailable {
        issuer: issuer.id.clone(),
    })
}

fn select_key<'a>(
    issuer: &IssuerKeys,
    keys: &'a KeySet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'a VerifyKey, AuthError> {
    match keys.select(kid, alg) {
        Selection::Found(key) => Ok(key),
        Selection::Incompatible => Err(AuthError::AlgNotAllowed { alg: Some(alg) }),
        Selection::Unknown | Selection::Ambiguous => Err(AuthError::UnknownKid {
            issuer: issuer.id.clone(),
        }),
    }
}

fn validation(settings: &super::IssuerSettings, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = settings.leeway.as_secs();
    // `exp` is required (below) but compared in `decode_claims`, to the exact time: jsonwebtoken
    // compares whole seconds, which accepts a token up to a second past exp + leeway.
    v.validate_exp = false;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "iss"]);
    // RFC 9068 §4: iss must match exactly.
    v.set_issuer(&[settings.issuer.as_str()]);
    // Audience is route-specific and compared with scheme/host case folding: done by the caller.
    v.validate_aud = false;
    v
}

fn decode_claims(
    token: &str,
    key: &VerifyKey,
    settings: &super::IssuerSettings,
    alg: Algorithm,
) -> Result<Claims, AuthError> {
    let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation(settings, alg))
        .map_err(|e| map_jwt_error(e.kind()))?;
    let claims = data.claims;
    let now = unix_now();
    // The exact deadline, also the one a GET's event stream ends at (`Identity::valid_until`).
    match claims.exp {
        None => return Err(AuthError::Malformed(Malformed::Claim("exp"))),
        Some(exp) if now > exp + settings.leeway.as_secs_f64() => return Err(AuthError::Expired),
        Some(_) => {}
    }
    if claims
        .iat
        .is_some_and(|iat| iat > now + settings.leeway.as_secs_f64())
    {
        return Err(AuthError::IssuedInFuture);
    }
    Ok(claims)
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::BadIssuer,
        ErrorKind::InvalidAudience => AuthError::BadAudience,
        ErrorKind::InvalidAlgorithm => AuthError::AlgNotAllowed { alg: None },
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
            AuthError::Malformed(Malformed::Claim(claim_name(c)))
        }
        ErrorKind::InvalidToken => AuthError::Malformed(Malformed::Segments),
        ErrorKind::Base64(_) => AuthError::Malformed(Malformed::Signature),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::Malformed(Malformed::Claims),
        // Key-format and provider errors: the signature cannot be shown valid.
        _ => AuthError::BadSignature,
    }
}

fn claim_name(claim: &str) -> &'static str {
    match claim {
        "exp" => "exp",
        "iss" => "iss",
        "nbf" => "nbf",
        "aud" => "aud",
        "sub" => "sub",
        _ => "unknown",
    }
}

fn principal_from(
    issuer: &IssuerKeys,
    claims: Claims,
    fingerprint: &str,
) -> Result<Principal, AuthError> {
    let client_id = claims.client_id.or(claims.azp);
    // RFC 9068 §2.2 requires `sub`; a client-credentials token without one is attributed to its client.
    let subject = claims
        .sub
        .or_else(|| client_id.clone())
        .ok_or(AuthError::Malformed(Malformed::Claim("sub")))?;
    let scopes = ScopeClaim::merge(claims.scope, claims.scp);
    Ok(Principal::from(Identity {
        kind: PrincipalKind::Jwt,
        issuer: issuer.settings.issuer.as_str().into(),
        subject: subject.into(),
        client_id: client_id.map(Into::into),
        scopes,
        expires_at: claims.exp.map(unix_time),
        valid_until: claims
            .exp
            .map(|exp| unix_time(exp) + issuer.settings.leeway),
        token_fingerprint: Arc::from(fingerprint),
    }))
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds since the epoch → SystemTime; out-of-range values saturate instead of panicking.
pub(crate) fn unix_time(secs: f64) -> SystemTime {
    if !secs.is_finite() || secs <= 0.0 {
        return UNIX_EPOCH;
    }
    let capped = secs.min(4_102_444_800.0); // year 2100: plenty, and never overflows
    UNIX_EPOCH + Duration::from_secs_f64(capped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_allows_only_access_token_types() {
        for ok in [
            None,
            Some("at+jwt"),
            Some("application/AT+JWT"),
            Some("jwt"),
            Some("JWT"),
        ] {
            assert!(check_typ(ok).is_ok(), "{ok:?}");
        }
        for bad in ["id_token+jwt", "logout+jwt", "dpop+jwt", ""] {
            assert!(
                matches!(check_typ(Some(bad)), Err(AuthError::BadType)),
                "{bad}"
            );
        }
    }

    #[test]
    fn jwt_shape_needs_exactly_three_segments() {
        assert!(is_jwt_shaped("a.b.c"));
        assert!(!is_jwt_shaped("abc"));
        assert!(!is_jwt_shaped("a.b.c.d.e"));
    }

    #[test]
    fn unix_time_saturates() {
        assert_eq!(unix_time(f64::NAN), UNIX_EPOCH);
        assert_eq!(unix_time(-5.0), UNIX_EPOCH);
        assert!(unix_time(1e300) > UNIX_EPOCH);
    }
}
