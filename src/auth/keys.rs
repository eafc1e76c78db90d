//! Parsed verification keys: which JWK may verify which JWS algorithm (RFC 7517, RFC 7518 §3).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
    ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// Key material families we can verify with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn of(jwk: &Jwk) -> Option<Self> {
        match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Some(KeyKind::Rsa),
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Some(KeyKind::P256),
                EllipticCurve::P384 => Some(KeyKind::P384),
                _ => None,
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => Some(KeyKind::Ed25519),
                _ => None,
            },
            // Symmetric ("oct") keys are never used: a public JWKS must not hold secrets, and
            // accepting one would reopen the HS256-with-public-key confusion (RFC 8725 §2.1).
            _ => None,
        }
    }

    /// RFC 7518 §3.1: the key type a JWS `alg` requires.
    fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// The JWS algorithm a JWK's `alg` names; encryption algorithms (RSA-OAEP, …) give `None`.
fn signing_alg(declared: KeyAlgorithm) -> Option<Algorithm> {
    use Algorithm as A;
    use KeyAlgorithm as K;
    Some(match declared {
        K::ES256 => A::ES256,
        K::ES384 => A::ES384,
        K::RS256 => A::RS256,
        K::RS384 => A::RS384,
        K::RS512 => A::RS512,
        K::PS256 => A::PS256,
        K::PS384 => A::PS384,
        K::PS512 => A::PS512,
        K::EdDSA => A::EdDSA,
        _ => return None,
    })
}

/// One signing key of an issuer.
pub(crate) struct VerifyKey {
    pub kid: Option<String>,
    /// RFC 7638 thumbprint: identifies the key across refreshes (kids may be reused).
    pub thumbprint: Arc<str>,
    kind: KeyKind,
    /// The JWK's own `alg`, when it declares one (RFC 7517 §4.4).
    alg: Option<Algorithm>,
    pub decoding: DecodingKey,
}

impl VerifyKey {
    /// Build from a JWK, or `None` when the key is not a usable signature-verification key.
    pub(crate) fn from_jwk(jwk: &Jwk) -> Option<Self> {
        // RFC 7517 §4.2/§4.3: a key marked for encryption must not verify signatures.
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            return None;
        }
        if let Some(ops) = &jwk.common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return None;
        }
        let kind = KeyKind::of(jwk)?;
        let alg = match jwk.common.key_algorithm {
            Some(declared) => Some(signing_alg(declared).filter(|a| kind.verifies(*a))?),
            None => None,
        };
        Some(Self {
            kid: jwk.common.key_id.clone(),
            thumbprint: jwk.thumbprint(ThumbprintHash::SHA256).ok()?.into(),
            kind,
            alg,
            decoding: DecodingKey::from_jwk(jwk).ok()?,
        })
    }

    /// Whether this key may verify a token whose header says `alg`.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.verifies(alg) && self.alg.is_none_or(|declared| declared == alg)
    }
}

/// Outcome of choosing a key for a token header.
pub(crate) enum Selection<'a> {
    Found(&'a VerifyKey),
    /// No key with that kid (or no suitable key at all): worth one refetch.
    Unknown,
    /// A key with that kid exists but cannot verify this alg.
    Incompatible,
    /// No kid and several suitable keys: we refuse to guess.
    Ambiguous,
}

/// The usable keys of one issuer at one point in time.
pub(crate) struct KeySet {
    keys: Vec<VerifyKey>,
    /// Bumped on every load; lets unknown-kid waiters see that a refetch already happened.
    pub generation: u64,
    /// `None` for static keys: they never go stale.
    pub max_staleness: Option<Duration>,
}

impl KeySet {
    pub(crate) fn new(
        keys: Vec<VerifyKey>,
        generation: u64,
        max_staleness: Option<Duration>,
    ) -> Self {
        Self {
            keys,
            generation,
            max_staleness,
        }
    }

    /// RFC 7515 §4.1.4: select by kid; without a kid only an unambiguous key is used.
    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection<'_> {
        match kid {
            Some(kid) => {
                let mut with_kid = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if with_kid.peek().is_none() {
                    return Selection::Unknown;
                }
                with_kid
                    .find(|k| k.accepts(alg))
                    .map_or(Selection::Incompatible, Selection::Found)
            }
            None => {
                let mut suitable = self.keys.iter().filter(|k| k.accepts(alg));
                match (suitable.next(), suitable.next()) {
                    (Some(key), None) => Selection::Found(key),
                    (None, _) => Selection::Unknown,
                    (Some(_), Some(_)) => Selection::Ambiguous,
                }
            }
        }
    }

    pub(crate) fn contains(&self, thumbprint: &str) -> bool {
        self.keys.iter().any(|k| &*k.thumbprint == thumbprint)
    }
}

#[derive(Deserialize)]
struct RawJwkSet {
    keys: Vec<serde_json::Value>,
}

/// Parse a JWKS document key by key, so one exotic or broken entry does not hide the others.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<Vec<VerifyKey>, serde_json::Error> {
    let raw: RawJwkSet = serde_json::from_slice(body)?;
    Ok(raw
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| VerifyKey::from_jwk(&jwk))
        .collect())
}

/// Usable keys of a static set (embedded dev issuer).
pub(crate) fn from_set(set: &JwkSet) -> Vec<VerifyKey> {
    set.keys.iter().filter_map(VerifyKey::from_jwk).collect()
}
