//! Opaque tokens through RFC 7662 introspection: active, inactive, slow (fail closed).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::harness::*;
use crate::auth::{Authenticator, IntrospectionSettings, PrincipalKind, Secret};

async fn introspecting(timeout: Duration) -> (TestIssuer, Authenticator, String) {
    let server = TestIssuer::start().await;
    server.set_jwks(&[&TestKey::generate(jsonwebtoken::Algorithm::ES256, "k")]);
    let iss = format!("{}/is", server.base());
    let mut settings = server.settings("is", &iss);
    settings.introspection = Some(IntrospectionSettings {
        endpoint: server.url("/introspect"),
        client_id: "mcpgate".into(),
        client_secret: Secret::new("s3cret"),
        cache_ttl: Duration::from_secs(60),
        inactive_ttl: Duration::from_secs(60),
        timeout,
    });
    let auth = authenticator(vec![settings]);
    auth.start();
    wait_ready(&auth).await;
    (server, auth, iss)
}

#[tokio::test]
async fn active_token_is_accepted_and_cached() {
    let (server, auth, iss) = introspecting(Duration::from_secs(2)).await;
    let body = json!({"active": true, "sub": "carol", "client_id": "c1", "scope": "mcp:tools",
                      "exp": now() + 300, "iss": iss, "aud": AUD});
    server.reply("opaque-active", body, Duration::ZERO);
    let p = auth
        .authenticate(&route(vec![0]), "opaque-active")
        .await
        .unwrap();
    assert_eq!(p.kind, PrincipalKind::Introspected);
    assert_eq!(&*p.subject, "carol");
    assert!(p.has_scope("mcp:tools"));
    assert!(
        auth.authenticate(&route(vec![0]), "opaque-active")
            .await
            .is_ok()
    );
    assert_eq!(server.state.introspection_hits.load(Ordering::SeqCst), 1);
    let sent = server
        .state
        .introspection_auth
        .lock()
        .unwrap()
        .clone()
        .unwrap();
    assert!(sent.starts_with("Basic "), "client_secret_basic");
}

#[tokio::test]
async fn inactive_wrong_audience_and_wrong_issuer_are_rejected() {
    let (server, auth, _iss) = introspecting(Duration::from_secs(2)).await;
    server.reply(
        "opaque-aud",
        json!({"active": true, "sub": "x", "aud": OTHER_AUD}),
        Duration::ZERO,
    );
    server.reply(
        "opaque-iss",
        json!({"active": true, "sub": "x", "iss": "https://evil"}),
        Duration::ZERO,
    );
    server.reply(
        "opaque-noaud",
        json!({"active": true, "sub": "x"}),
        Duration::ZERO,
    );
    let r = route(vec![0]);
    assert_eq!(
        auth.authenticate(&r, "opaque-inactive")
            .await
            .unwrap_err()
            .reason(),
        "inactive"
    );
    assert_eq!(
        auth.authenticate(&r, "opaque-inactive")
            .await
            .unwrap_err()
            .reason(),
        "inactive"
    );
    assert_eq!(
        server.state.introspection_hits.load(Ordering::SeqCst),
        1,
        "inactive answer cached"
    );
    assert_eq!(
        auth.authenticate(&r, "opaque-aud")
            .await
            .unwrap_err()
            .reason(),
        "bad_audience"
    );
    assert_eq!(
        auth.authenticate(&r, "opaque-iss")
            .await
            .unwrap_err()
            .reason(),
        "bad_issuer"
    );
    assert!(
        auth.authenticate(&r, "opaque-noaud").await.is_ok(),
        "absent aud is accepted"
    );
}

#[tokio::test]
async fn slow_introspection_fails_closed() {
    let (server, auth, _iss) = introspecting(Duration::from_millis(200)).await;
    server.reply(
        "opaque-slow",
        json!({"active": true, "sub": "x"}),
        Duration::from_secs(2),
    );
    let err = auth
        .authenticate(&route(vec![0]), "opaque-slow")
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "introspection_unavailable");
    assert!(err.is_unavailable());
    let failures = auth.inner.metrics.introspection_failures_count("is");
    assert_eq!(failures, 1);
}

#[tokio::test]
async fn introspection_down_fails_closed() {
    let (server, auth, _iss) = introspecting(Duration::from_secs(2)).await;
    server.set_down(true);
    let err = auth
        .authenticate(&route(vec![0]), "opaque-any")
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}
