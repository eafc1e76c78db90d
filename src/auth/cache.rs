//! Verified-token cache: skip signature checks for tokens seen before, never past their `exp`.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;

use super::jwt::Verified;

/// Bound on cached tokens. Each entry holds its token (≈ 0.9 KiB for a typical JWT) besides the
/// principal, scopes and audiences, so the cache stays under ≈ 40 MiB whatever the token mix.
const MAX_ENTRIES: u64 = 20_000;

/// A verification and the exact token it was made for.
pub(crate) struct Entry {
    token: SecretBytes,
    pub verified: Verified,
    /// The issuer's key-set generation in which the verifying key was last found (0: not
    /// yet): while it is current, the key need not be looked up again.
    pub trusted_generation: AtomicU64,
}

/// Tokens are found by a 64-bit hash seeded per process (an attacker cannot aim at another
/// token's slot) and confirmed by comparing the whole token in constant time, so a collision
/// can only ever cost a signature check. This runs on every request: hashing the token with
/// BLAKE3 instead cost ~3.7k instructions, 6% of a proxied request.
pub(crate) struct TokenCache {
    entries: moka::sync::Cache<u64, Arc<Entry>, foldhash::quality::RandomState>,
    seed: foldhash::quality::RandomState,
}

impl TokenCache {
    pub fn new() -> Self {
        TokenCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(UntilExp)
                .build_with_hasher(foldhash::quality::RandomState::default()),
            seed: foldhash::quality::RandomState::default(),
        }
    }

    pub fn get(&self, token: &[u8]) -> Option<Arc<Entry>> {
        let entry = self.entries.get(&self.key(token))?;
        entry.token.matches(token).then_some(entry)
    }

    /// Caches `verified` for `token`, replacing whatever held its slot.
    pub fn insert(&self, token: &str, verified: Verified) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            token: SecretBytes(token.as_bytes().into()),
            verified,
            trusted_generation: AtomicU64::new(0),
        });
        self.entries
            .insert(self.key(token.as_bytes()), entry.clone());
        entry
    }

    fn key(&self, token: &[u8]) -> u64 {
        self.seed.hash_one(token)
    }
}

/// A token held by the cache: zeroed when the entry goes, so freed memory does not keep it.
struct SecretBytes(Box<[u8]>);

impl SecretBytes {
    /// Constant time in the content: no early exit on the first differing byte.
    fn matches(&self, other: &[u8]) -> bool {
        let mine = &self.0;
        if mine.len() != other.len() {
            return false;
        }
        let (a_words, a_tail) = mine.as_chunks::<8>();
        let (b_words, b_tail) = other.as_chunks::<8>();
        let mut diff = a_words.iter().zip(b_words).fold(0u64, |d, (a, b)| {
            d | (u64::from_ne_bytes(*a) ^ u64::from_ne_bytes(*b))
        });
        for (a, b) in a_tail.iter().zip(b_tail) {
            diff |= u64::from(a ^ b);
        }
        std::hint::black_box(diff) == 0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// Each entry lives until its token's `exp` and not a moment longer.
struct UntilExp;

impl Expiry<u64, Arc<Entry>> for UntilExp {
    fn expire_after_create(&self, _: &u64, v: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(remaining(v.verified.principal.expires_at))
    }
}

pub(crate) fn remaining(exp: Option<SystemTime>) -> Duration {
    exp.and_then(|e| e.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_byte_for_byte() {
        let held = SecretBytes(
            b"eyJhbGciOiJFUzI1NiJ9.payload.signature-123"
                .as_slice()
                .into(),
        );
        assert!(held.matches(b"eyJhbGciOiJFUzI1NiJ9.payload.signature-123"));
        for other in [
            &b"eyJhbGciOiJFUzI1NiJ9.payload.signature-124"[..],
            b"fyJhbGciOiJFUzI1NiJ9.payload.signature-123",
            b"eyJhbGciOiJFUzI1NiJ9.payload.signature-12",
            b"",
        ] {
            assert!(!held.matches(other), "{}", String::from_utf8_lossy(other));
        }
    }
}
