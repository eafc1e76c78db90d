//! Route API keys presented as bearer credentials.

use super::harness::*;
use crate::auth::{
    API_KEY_ISSUER, ApiKey, PrincipalKind, RouteAuth, hash_api_key, parse_api_key_hash,
};

fn key(secret: &str, subject: &str) -> ApiKey {
    ApiKey {
        hash: parse_api_key_hash(&hash_api_key(secret)).unwrap(),
        subject: subject.into(),
        scopes: vec!["mcp:tools".into()],
    }
}

#[tokio::test]
async fn api_keys_work_only_on_their_route() {
    let auth = authenticator(vec![]);
    let ci = RouteAuth {
        api_keys: vec![key("other", "x"), key("k-123", "ci-bot")],
        ..route(vec![])
    };
    let other = RouteAuth {
        route_id: "files".into(),
        api_keys: vec![key("zzz", "y")],
        ..route(vec![])
    };

    let p = auth.authenticate(&ci, "k-123").await.unwrap();
    assert_eq!(p.kind, PrincipalKind::ApiKey);
    assert_eq!(&*p.issuer, API_KEY_ISSUER);
    assert_eq!(&*p.subject, "ci-bot");
    assert!(p.has_scope("mcp:tools"));
    assert!(auth.authenticate_api_key(&ci, "k-123").is_ok());

    assert_eq!(
        auth.authenticate(&ci, "k-124").await.unwrap_err().reason(),
        "bad_api_key"
    );
    assert_eq!(
        auth.authenticate_api_key(&ci, "k-124")
            .unwrap_err()
            .reason(),
        "bad_api_key"
    );
    assert_eq!(
        auth.authenticate(&other, "k-123")
            .await
            .unwrap_err()
            .reason(),
        "bad_api_key"
    );
}

#[test]
fn symmetric_algorithms_and_plain_http_endpoints_are_refused_at_setup() {
    let mut hs = crate::auth::IssuerSettings::new("hs", "https://idp.example");
    hs.algorithms = vec![jsonwebtoken::Algorithm::HS256];
    let err = crate::auth::Authenticator::new(vec![hs], &prometheus::Registry::new())
        .err()
        .unwrap();
    assert!(
        matches!(err, crate::auth::AuthSetupError::SymmetricAlgorithm { .. }),
        "{err}"
    );

    let mut plain = crate::auth::IssuerSettings::new("plain", "https://idp.example");
    plain.jwks_uri = Some(url::Url::parse("http://idp.example/jwks").unwrap());
    let err = crate::auth::Authenticator::new(vec![plain], &prometheus::Registry::new())
        .err()
        .unwrap();
    assert!(
        matches!(err, crate::auth::AuthSetupError::InsecureUrl { .. }),
        "{err}"
    );
}
