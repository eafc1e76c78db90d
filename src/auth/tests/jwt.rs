//! JWT validation: every rejection names its reason, and the happy path returns the claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::harness::*;
use crate::auth::{AuthError, PrincipalKind, RouteAuth};

async fn reason(auth: &crate::auth::Authenticator, route: &RouteAuth, token: &str) -> &'static str {
    auth.authenticate(route, token)
        .await
        .expect_err("token must be rejected")
        .reason()
}

#[tokio::test]
async fn valid_tokens_of_each_algorithm_are_accepted() {
    let rsa = TestKey::rsa();
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let ed = TestKey::generate(Algorithm::EdDSA, "ed-1");
    let (_server, auth, iss) = ready_issuer(&[&rsa, &ec, &ed]).await;
    for key in [&rsa, &ec, &ed] {
        let token = key.sign(&claims(&iss));
        let p = auth
            .authenticate(&route(vec![0]), &token)
            .await
            .expect("valid token");
        assert_eq!(p.kind, PrincipalKind::Jwt);
        assert_eq!(&*p.subject, "alice");
        assert_eq!(&*p.issuer, iss);
        assert_eq!(p.client_id.as_deref(), Some("cli"));
        assert!(p.has_scope("mcp:tools") && p.has_scope("calendar:read"));
        assert_eq!(*p.token_fingerprint, crate::auth::token_fingerprint(&token));
        assert!(p.expires_at.is_some());
    }
}

#[tokio::test]
async fn scp_array_azp_and_audience_array_are_understood() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let (_server, auth, iss) = ready_issuer(&[&ec]).await;
    let mut c = claims(&iss);
    c["aud"] = json!(["other", AUD]);
    c["scp"] = json!(["files:read"]);
    c.as_object_mut().unwrap().remove("scope");
    c.as_object_mut().unwrap().remove("client_id");
    c["azp"] = json!("spa");
    let p = auth
        .authenticate(&route(vec![0]), &ec.sign(&c))
        .await
        .unwrap();
    assert!(p.has_scope("files:read"));
    assert_eq!(p.client_id.as_deref(), Some("spa"));
}

#[tokio::test]
async fn time_claims_are_enforced_with_leeway() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let (_server, auth, iss) = ready_issuer(&[&ec]).await;
    let r = route(vec![0]);
    let mut expired = claims(&iss);
    expired["exp"] = json!(now() - 60);
    assert_eq!(reason(&auth, &r, &ec.sign(&expired)).await, "expired");
    let mut within_leeway = claims(&iss);
    within_leeway["exp"] = json!(now() - 2);
    assert!(
        auth.authenticate(&r, &ec.sign(&within_leeway))
            .await
            .is_ok()
    );
    // Past exp + leeway (5 s) by a fraction of a second, which whole-second arithmetic (as in
    // jsonwebtoken) would still accept: refused.
    let since_epoch = || std::time::UNIX_EPOCH.elapsed().unwrap();
    if since_epoch().subsec_millis() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut just_past = claims(&iss);
    just_past["exp"] = json!(since_epoch().as_secs() - 5);
    assert_eq!(reason(&auth, &r, &ec.sign(&just_past)).await, "expired");
    let mut future_nbf = claims(&iss);
    future_nbf["nbf"] = json!(now() + 120);
    assert_eq!(
        reason(&auth, &r, &ec.sign(&future_nbf)).await,
        "not_yet_valid"
    );
    let mut future_iat = claims(&iss);
    future_iat["iat"] = json!(now() + 120);
    let err = auth
        .authenticate(&r, &ec.sign(&future_iat))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::IssuedInFuture), "{err:?}");
    let mut no_exp = claims(&iss);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(reason(&auth, &r, &ec.sign(&no_exp)).await, "malformed");
    // `exp` is compared by the gateway, not jsonwebtoken: values that are not a number are refused.
    for odd in [json!(null), json!("9999999999"), json!([1])] {
        let mut odd_exp = claims(&iss);
        odd_exp["exp"] = odd.clone();
        assert_eq!(
            reason(&auth, &r, &ec.sign(&odd_exp)).await,
            "malformed",
            "exp = {odd}"
        );
    }
}

#[tokio::test]
async fn issuer_and_audience_are_pinned() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let (_server, auth, iss) = ready_issuer(&[&ec]).await;
    let r = route(vec![0]);
    let mut wrong_iss = claims(&iss);
    wrong_iss["iss"] = json!(format!("{iss}/"));
    assert_eq!(reason(&auth, &r, &ec.sign(&wrong_iss)).await, "bad_issuer");
    let mut wrong_aud = claims(&iss);
    wrong_aud["aud"] = json!(OTHER_AUD);
    assert_eq!(
        reason(&auth, &r, &ec.sign(&wrong_aud)).await,
        "bad_audience"
    );
    let mut no_aud = claims(&iss);
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(reason(&auth, &r, &ec.sign(&no_aud)).await, "no_audience");
    let mut upper = claims(&iss);
    upper["aud"] = json!("HTTPS://GW.EXAMPLE/calendar/mcp");
    assert!(auth.authenticate(&r, &ec.sign(&upper)).await.is_ok());
}

#[tokio::test]
async fn alg_none_and_hs256_with_the_rsa_public_key_are_refused() {
    let rsa = TestKey::rsa();
    let (_server, auth, iss) = ready_issuer(&[&rsa]).await;
    let r = route(vec![0]);
    let payload = URL_SAFE_NO_PAD.encode(claims(&iss).to_string());
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
    assert_eq!(
        reason(&auth, &r, &format!("{none_header}.{payload}.")).await,
        "alg_not_allowed"
    );
    let none_with_sig = format!("{none_header}.{payload}.c2ln");
    assert_eq!(reason(&auth, &r, &none_with_sig).await, "alg_not_allowed");

    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims(&iss),
        &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
    )
    .unwrap();
    assert_eq!(reason(&auth, &r, &confused).await, "alg_not_allowed");
}

#[tokio::test]
async fn damaged_tokens_are_rejected() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let (_server, auth, iss) = ready_issuer(&[&ec]).await;
    let r = route(vec![0]);
    let token = ec.sign(&claims(&iss));
    let parts: Vec<&str> = token.split('.').collect();

    let mut evil = claims(&iss);
    evil["sub"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(evil.to_string()),
        parts[2]
    );
    assert_eq!(reason(&auth, &r, &tampered).await, "bad_signature");

    let truncated = &token[..token.len() - 10];
    assert!(matches!(
        reason(&auth, &r, truncated).await,
        "bad_signature" | "malformed"
    ));
    assert_eq!(
        reason(&auth, &r, &format!("{}.{}", parts[0], parts[1])).await,
        "opaque_not_accepted"
    );
    assert_eq!(reason(&auth, &r, "a.b.c").await, "malformed");
    assert_eq!(reason(&auth, &r, "a b.c").await, "malformed");
    assert_eq!(reason(&auth, &r, "").await, "malformed");

    let huge = format!("{}.{}.{}", parts[0], "A".repeat(16 * 1024), parts[2]);
    let err = auth.authenticate(&r, &huge).await.unwrap_err();
    assert_eq!(err.reason(), "too_large");
}

#[tokio::test]
async fn unknown_kid_and_foreign_typ_are_rejected() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let (_server, auth, iss) = ready_issuer(&[&ec]).await;
    let r = route(vec![0]);
    let stranger = TestKey::generate(Algorithm::ES256, "nobody");
    assert_eq!(
        reason(&auth, &r, &stranger.sign(&claims(&iss))).await,
        "unknown_kid"
    );

    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".into());
    header.typ = Some("id_token+jwt".into());
    assert_eq!(
        reason(&auth, &r, &ec.sign_with(header, &claims(&iss))).await,
        "bad_type"
    );

    // No kid and exactly one suitable key: that key is used.
    let mut header = Header::new(Algorithm::ES256);
    header.typ = None;
    assert!(
        auth.authenticate(&r, &ec.sign_with(header, &claims(&iss)))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn embedded_header_keys_are_ignored() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let (_server, auth, iss) = ready_issuer(&[&ec]).await;
    let attacker = TestKey::generate(Algorithm::ES256, "ec-1");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".into());
    header.jwk = Some(attacker.jwk.clone());
    header.jku = Some("http://127.0.0.1:1/evil-jwks".into());
    let token = attacker.sign_with(header, &claims(&iss));
    assert_eq!(
        reason(&auth, &route(vec![0]), &token).await,
        "bad_signature"
    );
}

#[tokio::test]
async fn key_type_must_match_the_header_alg() {
    let ec = TestKey::generate(Algorithm::ES256, "shared");
    let (_server, auth, iss) = ready_issuer(&[&ec]).await;
    // An RS256 header pointing at an EC key must not be tried with that key.
    let rsa = TestKey::rsa().with_kid("shared");
    assert_eq!(
        reason(&auth, &route(vec![0]), &rsa.sign(&claims(&iss))).await,
        "alg_not_allowed"
    );
}

#[tokio::test]
async fn token_of_an_issuer_the_route_does_not_trust_is_refused() {
    let a_key = TestKey::generate(Algorithm::ES256, "a-1");
    let b_key = TestKey::generate(Algorithm::ES256, "b-1");
    let a = TestIssuer::start().await;
    let b = TestIssuer::start().await;
    a.set_jwks(&[&a_key]);
    b.set_jwks(&[&b_key]);
    let (a_iss, b_iss) = (format!("{}/a", a.base()), format!("{}/b", b.base()));
    let auth = authenticator(vec![a.settings("a", &a_iss), b.settings("b", &b_iss)]);
    auth.start();
    wait_ready(&auth).await;
    let only_a = route(vec![0]);
    let token_b = b_key.sign(&claims(&b_iss));
    assert_eq!(reason(&auth, &only_a, &token_b).await, "untrusted_issuer");
    assert!(auth.authenticate(&route(vec![1]), &token_b).await.is_ok());
    // Cached on route b, still refused on route a.
    assert_eq!(reason(&auth, &only_a, &token_b).await, "untrusted_issuer");
}

#[tokio::test]
async fn cached_token_is_rechecked_per_route_and_counted() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let (_server, auth, iss) = ready_issuer(&[&ec]).await;
    let token = ec.sign(&claims(&iss));
    let calendar = route(vec![0]);
    let files = RouteAuth {
        audiences: vec![OTHER_AUD.into()],
        ..route(vec![0])
    };
    assert!(auth.authenticate(&calendar, &token).await.is_ok());
    assert!(auth.authenticate(&calendar, &token).await.is_ok());
    assert_eq!(reason(&auth, &files, &token).await, "bad_audience");
    let metrics = &auth.inner.metrics;
    assert_eq!(metrics.token_cache_count("miss"), 1);
    assert_eq!(metrics.token_cache_count("hit"), 2);
}

#[tokio::test]
async fn cached_token_expires_with_its_exp() {
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let server = TestIssuer::start().await;
    server.set_jwks(&[&ec]);
    let iss = format!("{}/t", server.base());
    let mut settings = server.settings("t", &iss);
    settings.leeway = std::time::Duration::ZERO;
    let auth = authenticator(vec![settings]);
    auth.start();
    wait_ready(&auth).await;
    let mut c = claims(&iss);
    c["exp"] = json!(now() + 1);
    let token = ec.sign(&c);
    assert!(auth.authenticate(&route(vec![0]), &token).await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(reason(&auth, &route(vec![0]), &token).await, "expired");
}
