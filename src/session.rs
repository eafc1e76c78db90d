//! Session binding: an upstream's `Mcp-Session-Id` is handed to the client sealed with a MAC
//! over the route, the principal (issuer, subject) and the upstream id.
//!
//! Binding to the principal rather than the token keeps a session alive across token refresh
//! (the stacklok/toolhive#5306 pitfall); the MAC makes the binding stateless, so any replica
//! holding the same secret can check it and no table grows with the number of sessions. A
//! session presented by another principal is answered 404, which tells a well-behaved client
//! to initialise again (Streamable HTTP, "Session Management").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{constant_time, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;

const VERSION: &str = "v1";
/// Upstream session ids longer than this are not sealed (and the response is refused), so a
/// hostile upstream cannot make every later request header grow without bound.
const MAX_UPSTREAM_ID: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session id is not one this gateway issued")]
    Malformed,
    #[error("session id belongs to another principal or route")]
    Foreign,
    #[error("session id is older than the configured max age")]
    Expired,
    #[error("upstream session id is too long or not visible ASCII")]
    BadUpstreamId,
}

impl SessionError {
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::Malformed => "session_malformed",
            SessionError::Foreign => "session_foreign",
            SessionError::Expired => "session_expired",
            SessionError::BadUpstreamId => "session_bad_upstream_id",
        }
    }
}

/// Who a session belongs to.
pub struct Owner<'a> {
    pub route: &'a str,
    pub issuer: &'a str,
    pub subject: &'a str,
}

pub struct SessionSealer {
    key: hmac::Key,
    max_age: Duration,
}

impl SessionSealer {
    /// `secret` shared by every replica; without one a random key makes sessions valid on
    /// this process only.
    pub fn new(secret: Option<&[u8]>, max_age: Duration) -> Self {
        let key = match secret {
            Some(s) => hmac::Key::new(hmac::HMAC_SHA256, s),
            None => {
                let mut random = [0u8; 32];
                getrandom::fill(&mut random).expect("operating system randomness");
                hmac::Key::new(hmac::HMAC_SHA256, &random)
            }
        };
        SessionSealer { key, max_age }
    }

    /// Wraps the upstream's session id for the client.
    pub fn seal(
        &self,
        owner: &Owner<'_>,
        upstream_id: &HeaderValue,
    ) -> Result<HeaderValue, SessionError> {
        let id = upstream_id.as_bytes();
        if id.is_empty()
            || id.len() > MAX_UPSTREAM_ID
            || !id.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return Err(SessionError::BadUpstreamId);
        }
        let issued = now_secs();
        let tag = self.tag(owner, issued, id);
        let text = format!(
            "{VERSION}.{issued:x}.{}.{}",
            URL_SAFE_NO_PAD.encode(id),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        );
        HeaderValue::from_str(&text).map_err(|_| SessionError::BadUpstreamId)
    }

    /// Checks a client's session id against the current principal and returns the upstream's.
    pub fn open(
        &self,
        owner: &Owner<'_>,
        presented: &HeaderValue,
    ) -> Result<HeaderValue, SessionError> {
        let text = presented.to_str().map_err(|_| SessionError::Malformed)?;
        let mut parts = text.split('.');
        let (Some(VERSION), Some(issued), Some(id), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SessionError::Malformed);
        };
        let issued = u64::from_str_radix(issued, 16).map_err(|_| SessionError::Malformed)?;
        let id = URL_SAFE_NO_PAD
            .decode(id)
            .map_err(|_| SessionError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| SessionError::Malformed)?;
        let expected = self.tag(owner, issued, &id);
        constant_time::verify_slices_are_equal(expected.as_ref(), &tag)
            .map_err(|_| SessionError::Foreign)?;
        if now_secs().saturating_sub(issued) > self.max_age.as_secs() {
            return Err(SessionError::Expired);
        }
        HeaderValue::from_bytes(&id).map_err(|_| SessionError::Malformed)
    }

    /// Length-prefixed fields, so ("ab","c") and ("a","bc") never MAC the same.
    fn tag(&self, owner: &Owner<'_>, issued: u64, upstream_id: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        for field in [
            VERSION.as_bytes(),
            owner.route.as_bytes(),
            owner.issuer.as_bytes(),
            owner.subject.as_bytes(),
            upstream_id,
        ] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field);
        }
        ctx.update(&issued.to_be_bytes());
        ctx.sign()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Owner<'static> = Owner {
        route: "r",
        issuer: "https://idp",
        subject: "alice",
    };
    const BOB: Owner<'static> = Owner {
        route: "r",
        issuer: "https://idp",
        subject: "bob",
    };

    #[test]
    fn the_owner_gets_the_upstream_id_back() {
        let s = SessionSealer::new(
            Some(b"0123456789abcdef0123456789abcdef"),
            Duration::from_secs(60),
        );
        let sealed = s.seal(&ALICE, &HeaderValue::from_static("up-123")).unwrap();
        assert_eq!(s.open(&ALICE, &sealed).unwrap(), "up-123");
    }

    #[test]
    fn another_principal_or_route_is_refused() {
        let s = SessionSealer::new(None, Duration::from_secs(60));
        let sealed = s.seal(&ALICE, &HeaderValue::from_static("up-123")).unwrap();
        assert_eq!(s.open(&BOB, &sealed), Err(SessionError::Foreign));
        let other_route = Owner {
            route: "r2",
            ..ALICE
        };
        assert_eq!(s.open(&other_route, &sealed), Err(SessionError::Foreign));
    }

    #[test]
    fn replicas_sharing_a_secret_accept_each_other() {
        let a = SessionSealer::new(
            Some(b"shared-secret-shared-secret-1234"),
            Duration::from_secs(60),
        );
        let b = SessionSealer::new(
            Some(b"shared-secret-shared-secret-1234"),
            Duration::from_secs(60),
        );
        let c = SessionSealer::new(
            Some(b"another-secret-another-secret-12"),
            Duration::from_secs(60),
        );
        let sealed = a.seal(&ALICE, &HeaderValue::from_static("up")).unwrap();
        assert!(b.open(&ALICE, &sealed).is_ok());
        assert_eq!(c.open(&ALICE, &sealed), Err(SessionError::Foreign));
    }

    #[test]
    fn raw_or_tampered_ids_are_refused() {
        let s = SessionSealer::new(None, Duration::from_secs(60));
        assert_eq!(
            s.open(&ALICE, &HeaderValue::from_static("up-123")),
            Err(SessionError::Malformed)
        );
        let sealed = s.seal(&ALICE, &HeaderValue::from_static("up-123")).unwrap();
        let tampered = sealed.to_str().unwrap().replace(
            &URL_SAFE_NO_PAD.encode("up-123"),
            &URL_SAFE_NO_PAD.encode("up-124"),
        );
        assert_eq!(
            s.open(&ALICE, &HeaderValue::from_str(&tampered).unwrap()),
            Err(SessionError::Foreign)
        );
    }

    #[test]
    fn expired_sessions_are_refused() {
        let s = SessionSealer::new(None, Duration::ZERO);
        let issued = now_secs() - 5;
        let tag = s.tag(&ALICE, issued, b"up");
        let text = format!(
            "v1.{issued:x}.{}.{}",
            URL_SAFE_NO_PAD.encode("up"),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        );
        assert_eq!(
            s.open(&ALICE, &HeaderValue::from_str(&text).unwrap()),
            Err(SessionError::Expired)
        );
    }
}
