//! Request ids: accept a sane `x-request-id` from the client or mint one.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue};

pub const HEADER: &str = "x-request-id";

/// Longest client-supplied id we echo; anything longer or stranger is replaced, so a client
/// can never inject log syntax or bloat every log line.
const MAX_LEN: usize = 64;

/// Takes the client's id when it is short and made of `[A-Za-z0-9._:-]`, else mints one.
pub fn from_headers(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(HEADER)
        .filter(|v| is_sane(v.as_bytes()))
        .cloned()
        .unwrap_or_else(mint)
}

fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A process-random prefix plus a counter: unique across replicas without a syscall per
/// request. Ids are correlation handles, not secrets.
pub fn mint() -> HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).unwrap_or_default();
        u32::from_le_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let text = format!("{prefix:08x}-{n:012x}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_client_id() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123.def"));
        assert_eq!(from_headers(&h), "abc-123.def");
    }

    #[test]
    fn replaces_an_injection_attempt() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("a\" level=error x=\""));
        assert_ne!(from_headers(&h), "a\" level=error x=\"");
        h.insert(HEADER, HeaderValue::from_str(&"a".repeat(65)).unwrap());
        assert_eq!(from_headers(&h).len(), 21);
    }

    #[test]
    fn minted_ids_differ() {
        assert_ne!(mint(), mint());
    }
}
