//! Key loading: discovery, readiness, unknown-kid refetch limits, rotation, outages.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::json;

use super::harness::*;

#[tokio::test]
async fn random_kids_cause_at_most_a_few_fetches() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let server = TestIssuer::start().await;
    server.set_jwks(&[&ec]);
    let iss = format!("{}/flood", server.base());
    let mut settings = server.settings("flood", &iss);
    settings.refresh_min_interval = Duration::from_secs(30);
    let auth = authenticator(vec![settings]);
    auth.start();
    wait_ready(&auth).await;
    let r = route(vec![0]);
    let tokens: Vec<String> = (0..1000)
        .map(|i| ec.with_kid(&format!("random-{i}")).sign(&claims(&iss)))
        .collect();
    let tasks = tokens.into_iter().map(|t| {
        let (auth, r) = (auth.clone(), r.clone());
        tokio::spawn(async move {
            auth.authenticate(&r, &t)
                .await
                .map(|_| ())
                .map_err(|e| e.reason())
        })
    });
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err("unknown_kid"));
    }
    assert!(server.jwks_hits() <= 3, "fetches: {}", server.jwks_hits());
    assert_eq!(
        auth.inner.metrics.jwks_fetch_count("flood") as usize,
        server.jwks_hits()
    );
}

#[tokio::test]
async fn rotated_keys_come_in_and_go_out() {
    let old = TestKey::generate(Algorithm::ES256, "old");
    let new = TestKey::generate(Algorithm::ES256, "new");
    let (server, auth, iss) = ready_issuer(&[&old]).await;
    let r = route(vec![0]);
    let old_token = old.sign(&claims(&iss));
    // Verified, then served from the cache, which then knows its key is in the current set.
    for _ in 0..3 {
        assert!(auth.authenticate(&r, &old_token).await.is_ok());
    }

    // Rotation in: the unknown kid triggers a refetch that finds the new key.
    server.set_jwks(&[&old, &new]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        auth.authenticate(&r, &new.sign(&claims(&iss)))
            .await
            .is_ok()
    );
    // A new key set: the cached token's key is looked up again, and is still there.
    for _ in 0..2 {
        assert!(auth.authenticate(&r, &old_token).await.is_ok());
    }

    // Rotation out: after the next refresh the old key, and tokens cached under it, stop working.
    server.set_jwks(&[&new]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let probe = TestKey::generate(Algorithm::ES256, "probe").sign(&claims(&iss));
    let _ = auth.authenticate(&r, &probe).await; // unknown kid → refetch
    let err = auth.authenticate(&r, &old_token).await.unwrap_err();
    assert_eq!(err.reason(), "unknown_kid");
}

#[tokio::test]
async fn scheduled_refresh_follows_cache_control_max_age() {
    let old = TestKey::generate(Algorithm::ES256, "old");
    let new = TestKey::generate(Algorithm::ES256, "new");
    let server = TestIssuer::start().await;
    server.set_jwks(&[&old]);
    *server.state.jwks_cache_control.lock().unwrap() = Some("public, max-age=0".into());
    let iss = format!("{}/cc", server.base());
    let mut settings = server.settings("cc", &iss);
    settings.refresh_min_interval = Duration::from_millis(300);
    let auth = authenticator(vec![settings]);
    auth.start();
    wait_ready(&auth).await;
    let old_token = old.sign(&claims(&iss));
    assert!(auth.authenticate(&route(vec![0]), &old_token).await.is_ok());
    server.set_jwks(&[&new]);
    // max-age=0 is clamped up to refresh_min_interval (300 ms): the loader refreshes by itself.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(server.jwks_hits() >= 2);
    let err = auth
        .authenticate(&route(vec![0]), &old_token)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "unknown_kid");
}

#[tokio::test]
async fn issuer_down_at_start_is_not_ready_until_it_answers() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let server = TestIssuer::start().await;
    server.set_jwks(&[&ec]);
    server.set_down(true);
    let iss = format!("{}/down", server.base());
    let auth = authenticator(vec![server.settings("down", &iss)]);
    auth.start();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!auth.ready());
    let err = auth
        .authenticate(&route(vec![0]), &ec.sign(&claims(&iss)))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "keys_unavailable");
    assert!(err.is_unavailable());
    assert!(server.jwks_hits() >= 2, "retries: {}", server.jwks_hits());
    server.set_down(false);
    wait_ready(&auth).await;
    assert!(
        auth.authenticate(&route(vec![0]), &ec.sign(&claims(&iss)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn issuer_down_later_keeps_last_keys_until_max_staleness() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let server = TestIssuer::start().await;
    server.set_jwks(&[&ec]);
    let iss = format!("{}/stale", server.base());
    let mut settings = server.settings("stale", &iss);
    settings.max_staleness = Duration::from_millis(1500);
    let auth = authenticator(vec![settings]);
    auth.start();
    wait_ready(&auth).await;
    let cached = ec.sign(&claims(&iss));
    for _ in 0..2 {
        assert!(auth.authenticate(&route(vec![0]), &cached).await.is_ok());
    }
    server.set_down(true);
    // An unknown kid forces a (failing) refetch; known keys stay usable.
    let stranger = TestKey::generate(Algorithm::ES256, "x").sign(&claims(&iss));
    assert_eq!(
        auth.authenticate(&route(vec![0]), &stranger)
            .await
            .unwrap_err()
            .reason(),
        "unknown_kid"
    );
    assert!(
        auth.authenticate(&route(vec![0]), &ec.sign(&claims(&iss)))
            .await
            .is_ok()
    );
    assert!(auth.authenticate(&route(vec![0]), &cached).await.is_ok());
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let err = auth
        .authenticate(&route(vec![0]), &ec.sign(&claims(&iss)))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "keys_unavailable");
    // Tokens verified while the keys were fresh go with them.
    let err = auth
        .authenticate(&route(vec![0]), &cached)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "keys_unavailable");
}

#[tokio::test]
async fn discovery_finds_rfc8414_metadata() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let server = TestIssuer::start().await;
    server.set_jwks(&[&ec]);
    let iss = format!("{}/tenant", server.base());
    let doc = json!({"issuer": iss, "jwks_uri": format!("{}/jwks", server.base()), "x": 1});
    server.set_document(
        "/.well-known/oauth-authorization-server/tenant",
        doc.clone(),
    );
    let mut settings = server.settings("rfc8414", &iss);
    settings.jwks_uri = None;
    let auth = authenticator(vec![settings]);
    auth.start();
    wait_ready(&auth).await;
    assert!(
        auth.authenticate(&route(vec![0]), &ec.sign(&claims(&iss)))
            .await
            .is_ok()
    );
    let raw = auth.issuer_metadata(0).await.expect("metadata");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap(),
        doc
    );
    assert!(auth.issuer_metadata(7).await.is_none());
}

#[tokio::test]
async fn discovery_falls_back_to_openid_configuration() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let server = TestIssuer::start().await;
    server.set_jwks(&[&ec]);
    let iss = format!("{}/realms/oidc", server.base());
    let doc = json!({"issuer": iss, "jwks_uri": format!("{}/jwks", server.base())});
    server.set_document("/realms/oidc/.well-known/openid-configuration", doc);
    let mut settings = server.settings("oidc", &iss);
    settings.jwks_uri = None;
    let auth = authenticator(vec![settings]);
    auth.start();
    wait_ready(&auth).await;
    assert!(
        auth.authenticate(&route(vec![0]), &ec.sign(&claims(&iss)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn metadata_for_another_issuer_is_not_trusted() {
    let server = TestIssuer::start().await;
    let iss = format!("{}/victim", server.base());
    let doc =
        json!({"issuer": "https://evil.example", "jwks_uri": format!("{}/jwks", server.base())});
    server.set_document("/.well-known/oauth-authorization-server/victim", doc);
    let mut settings = server.settings("victim", &iss);
    settings.jwks_uri = None;
    let auth = authenticator(vec![settings]);
    auth.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!auth.ready());
    assert!(auth.issuer_metadata(0).await.is_none());
}

#[tokio::test]
async fn dev_issuer_tokens_verify_with_static_keys() {
    let dir = std::env::temp_dir().join(format!(
        "mcpgate-auth-dev-{}",
        crate::auth::token_fingerprint(&format!("{:?}", std::time::SystemTime::now()))
    ));
    let dev = crate::auth::dev::DevIssuer::load_or_create(&dir, "http://127.0.0.1:8443").unwrap();
    let auth = authenticator(vec![dev.settings("dev")]);
    assert!(auth.ready(), "static keys need no fetch");
    let token = dev
        .mint("bob", AUD, &["mcp:tools".into()], Duration::from_secs(60))
        .unwrap();
    let p = auth.authenticate(&route(vec![0]), &token).await.unwrap();
    assert_eq!(&*p.subject, "bob");
    assert_eq!(p.client_id.as_deref(), Some("mcpgate-dev"));
    assert!(p.has_scope("mcp:tools"));
    let _ = std::fs::remove_dir_all(dir);
}
