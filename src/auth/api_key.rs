//! Static API keys per route, stored as SHA-256 hashes and compared in constant time.

use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::{Identity, Principal, PrincipalKind, hex};

/// One accepted key of a route. Only the hash is kept in memory.
#[derive(Clone, Debug)]
pub struct ApiKey {
    pub hash: [u8; 32],
    pub subject: String,
    pub scopes: Vec<String>,
}

/// Issuer name reported for API-key principals.
pub const API_KEY_ISSUER: &str = "api-key";
const HASH_PREFIX: &str = "sha256:";

/// `sha256:<64 hex>`, the form stored in gateway.toml (`mcpgate hash-key`).
pub fn hash_api_key(key: &str) -> String {
    format!("{HASH_PREFIX}{}", hex(&super::sha256(key.as_bytes())))
}

/// Parse the config form `sha256:<64 hex>` back into bytes.
pub fn parse_api_key_hash(value: &str) -> Option<[u8; 32]> {
    let hex_part = value.strip_prefix(HASH_PREFIX)?;
    if hex_part.len() != 64 || !hex_part.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex_part[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Find the key whose hash equals `presented`, visiting every key with no early exit so the
/// time taken reveals neither whether nor where a key matched.
pub(crate) fn find<'a>(keys: &'a [ApiKey], presented: &[u8; 32]) -> Option<&'a ApiKey> {
    let mut found: u32 = 0;
    for (i, key) in keys.iter().enumerate() {
        let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
        found = u32::conditional_select(&found, &index, key.hash.ct_eq(presented));
    }
    let found = usize::try_from(found).ok()?;
    found.checked_sub(1).and_then(|i| keys.get(i))
}

pub(crate) fn principal(key: &ApiKey, fingerprint: String) -> Principal {
    Principal::from(Identity {
        kind: PrincipalKind::ApiKey,
        issuer: API_KEY_ISSUER.into(),
        subject: key.subject.as_str().into(),
        client_id: None,
        scopes: key.scopes.iter().map(|s| Box::from(s.as_str())).collect(),
        expires_at: None,
        valid_until: None,
        token_fingerprint: fingerprint.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str, subject: &str) -> ApiKey {
        let hash = parse_api_key_hash(&hash_api_key(secret)).unwrap();
        ApiKey {
            hash,
            subject: subject.into(),
            scopes: vec![],
        }
    }

    #[test]
    fn hash_round_trips_through_config_form() {
        let h = hash_api_key("s3cret");
        assert!(h.starts_with("sha256:") && h.len() == 71);
        assert!(parse_api_key_hash(&h).is_some());
        assert!(parse_api_key_hash("sha256:zz").is_none());
        assert!(parse_api_key_hash("md5:00").is_none());
    }

    #[test]
    fn find_returns_the_matching_key_only() {
        let keys = [key("a", "alice"), key("b", "bob")];
        let digest = super::super::sha256(b"b");
        assert_eq!(
            find(&keys, &digest).map(|k| k.subject.as_str()),
            Some("bob")
        );
        let digest = super::super::sha256(b"c");
        assert!(find(&keys, &digest).is_none());
        assert!(find(&[], &digest).is_none());
    }
}
