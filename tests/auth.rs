//! Authentication through the running gateway (issue #3): JWTs against a real issuer's JWKS,
//! introspection, API keys, challenges, metadata documents, CORS and what reaches the upstream.

mod common;

use std::process::Command;
use std::time::Duration;

use common::issuer::{
    Challenge, INTROSPECTION_CLIENT_ID, TestIssuer, TestKey, challenge_of, payload_of, with_payload,
};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

const PATH_A: &str = "/team/a/mcp";
const RES_A: &str = "https://gateway.test/team/a/mcp";
const PRM_A: &str = "https://gateway.test/.well-known/oauth-protected-resource/team/a/mcp";
const PATH_B: &str = "/b/mcp";
const RES_B: &str = "https://gateway.test/b/mcp";
const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_events","arguments":{}}}"#;
const ALLOWED_ORIGIN: &str = "https://app.example";

/// Route `a` at a nested path (default route) trusting `idp`; route `b` trusting `other`.
fn route_a(upstream: &UpstreamServer) -> TestRoute {
    TestRoute::new("a", PATH_A, &upstream.url("/mcp"))
        .line(r#"issuers = ["idp"]"#)
        .line(r#"scopes = ["mcp:tools"]"#)
        .line("default = true")
        .line(r#"resource_name = "Team A calendar""#)
        .table("[routes.tools]\n\"get_events\" = [\"calendar:read\"]\n\"delete_*\" = [\"calendar:admin\"]\n\"*\" = []")
}

fn route_b(upstream: &UpstreamServer) -> TestRoute {
    TestRoute::new("b", PATH_B, &upstream.url("/mcp"))
        .line(r#"issuers = ["other"]"#)
        .line(r#"scopes = ["mcp:tools"]"#)
}

struct Env {
    idp: TestIssuer,
    /// The issuer's published EdDSA key.
    ed: TestKey,
    other: TestIssuer,
    upstream: UpstreamServer,
    gw: TestGateway,
}

/// Two issuers, two routes; `idp_extra` overrides lines of the `idp` issuer table.
async fn env_with(
    idp_extra: &[&str],
    configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> Env {
    let ed = TestKey::eddsa("ed-1");
    let idp = TestIssuer::start(vec![
        TestKey::es256("es-1"),
        TestKey::rsa("rsa-1"),
        ed.clone(),
    ])
    .await;
    let other = TestIssuer::start(vec![TestKey::es256("other-1")]).await;
    let upstream = UpstreamServer::mcp().await;
    let builder = GatewayBuilder::new()
        .route(route_a(&upstream))
        .route(route_b(&upstream))
        .raw(&idp.toml("idp", idp_extra))
        .raw(&other.toml("other", &[]));
    let gw = configure(builder).start().await;
    Env {
        idp,
        ed,
        other,
        upstream,
        gw,
    }
}

async fn env() -> Env {
    let env = env_with(&[], |b| b).await;
    wait_ready(&env.gw).await;
    env
}

/// Polls `/readyz` until 200 (every issuer has loaded its keys).
async fn wait_ready(gw: &TestGateway) {
    within(30, "gateway ready", async {
        while readyz(gw).await != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

async fn readyz(gw: &TestGateway) -> u16 {
    plain_client(HttpVersion::Auto)
        .get(gw.admin_url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .status()
        .as_u16()
}

/// POSTs a JSON-RPC body as an MCP client would, with `token` as a bearer credential.
async fn post(gw: &TestGateway, path: &str, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = gw
        .client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    within(15, "gateway answer", req.send())
        .await
        .expect("request to gateway")
}

/// A token for route `a` with the route scope and `calendar:read`.
fn good_token(idp: &TestIssuer) -> String {
    idp.token()
        .aud(RES_A)
        .scope("mcp:tools calendar:read")
        .sign()
}

fn assert_invalid_token(resp: &reqwest::Response, case: &str) {
    assert_eq!(resp.status(), 401, "{case}");
    let raw = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        raw.starts_with(r#"Bearer error="invalid_token""#),
        "{case}: {raw}"
    );
    let c = Challenge::parse(raw);
    assert_eq!(c.param("resource_metadata"), Some(PRM_A), "{case}: {raw}");
    assert!(
        c.param("error_description").is_some(),
        "{case}: a generic description is given: {raw}"
    );
}

#[tokio::test]
async fn valid_tokens_of_each_algorithm_reach_the_upstream_once_without_authorization() {
    let env = env().await;
    let tokens = [
        env.idp
            .token()
            .aud(RES_A)
            .scope("mcp:tools calendar:read")
            .sign(),
        env.idp
            .token()
            .key(&TestKey::rsa("rsa-1"))
            .auds(&["https://other.example/api", RES_A])
            .scope("mcp:tools calendar:read")
            .sign(),
        env.idp
            .token()
            .key(&env.ed)
            .typ(Some("JWT"))
            .scp(&["mcp:tools", "calendar:read"])
            .aud(RES_A)
            .sign(),
    ];
    for (i, token) in tokens.iter().enumerate() {
        let resp = post(&env.gw, PATH_A, Some(token), CALL).await;
        assert_eq!(resp.status(), 200, "token #{i}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["id"], 1,
            "token #{i}: the upstream's answer comes back"
        );
        let requests = env.upstream.requests();
        assert_eq!(
            requests.len(),
            i + 1,
            "token #{i}: upstream called exactly once"
        );
        let last = requests.last().unwrap();
        assert!(
            last.header("authorization").is_none(),
            "token #{i}: {last:?}"
        );
        assert_eq!(last.body, CALL.as_bytes(), "token #{i}");
    }
}

/// Retries a POST until it is answered 200, for changes the gateway picks up by itself.
async fn retry_until_ok(
    gw: &TestGateway,
    path: &str,
    token: &str,
    body: &str,
) -> reqwest::Response {
    within(15, "request accepted", async {
        loop {
            let resp = post(gw, path, Some(token), body).await;
            if resp.status() == 200 {
                return resp;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

#[tokio::test]
async fn invalid_tokens_get_401_invalid_token_and_never_reach_the_upstream() {
    let env = env().await;
    let idp = &env.idp;
    let base = || idp.token().aud(RES_A).scope("mcp:tools calendar:read");
    let valid = base().sign();
    let mut tampered_claims = payload_of(&valid);
    tampered_claims["scope"] = json!("mcp:tools calendar:read calendar:admin");
    tampered_claims["sub"] = json!("admin");
    let big = base().claim("pad", "x".repeat(12_000)).sign();
    assert!(big.len() >= 16 * 1024, "{}", big.len());
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("expired", base().exp_in(-3600).sign(), &["expired"]),
        ("future nbf", base().nbf_in(3600).sign(), &["not_yet_valid"]),
        (
            "wrong iss",
            base().iss("https://evil.example/realms/test").sign(),
            &["bad_issuer"],
        ),
        ("wrong aud", base().aud(RES_B).sign(), &["bad_audience"]),
        (
            "missing aud",
            base().without("aud").sign(),
            &["no_audience"],
        ),
        ("alg none", base().unsigned_none(), &["alg_not_allowed"]),
        (
            "HS256 keyed with the RSA public key",
            base().key(&TestKey::rsa("rsa-1")).hs256_with_public_key(),
            &["alg_not_allowed"],
        ),
        (
            "tampered payload",
            with_payload(&valid, &tampered_claims),
            &["bad_signature"],
        ),
        (
            "truncated",
            valid[..valid.len() - 10].to_string(),
            &["bad_signature", "malformed"],
        ),
        ("16 KiB", big, &["too_large"]),
        (
            "unknown kid",
            base().key(&TestKey::es256("ghost-kid")).sign(),
            &["unknown_kid"],
        ),
        (
            "issuer configured but not trusted by this route",
            env.other
                .token()
                .aud(RES_A)
                .scope("mcp:tools calendar:read")
                .sign(),
            &["untrusted_issuer"],
        ),
    ];
    for (case, token, reasons) in cases {
        let before = env.gw.metrics().await;
        let resp = post(&env.gw, PATH_A, Some(&token), CALL).await;
        assert_invalid_token(&resp, case);
        let after = env.gw.metrics().await;
        let moved: f64 = reasons
            .iter()
            .map(|r| {
                let labels = [("route", "a"), ("result", "denied"), ("reason", *r)];
                after.count("mcpgate_auth_total", &labels)
                    - before.count("mcpgate_auth_total", &labels)
            })
            .sum();
        assert_eq!(
            moved, 1.0,
            "{case}: mcpgate_auth_total{{reason in {reasons:?}}}"
        );
        assert!(
            env.upstream.requests().is_empty(),
            "{case}: upstream was called"
        );
    }
    // The same issuer's valid token still works: the refusals above were about the tokens.
    assert_eq!(
        post(&env.gw, PATH_A, Some(&valid), CALL).await.status(),
        200
    );
}

#[tokio::test]
async fn missing_token_gets_a_challenge_with_metadata_and_scope_but_no_error() {
    let env = env().await;
    let resp = post(&env.gw, PATH_A, None, CALL).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        format!(r#"Bearer resource_metadata="{PRM_A}", scope="mcp:tools""#).as_str()
    );
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["code"].is_i64(),
        "JSON-RPC error body: {body}"
    );
    // A GET (SSE stream) needs a token just the same.
    let resp = env
        .gw
        .client()
        .get(env.gw.url(PATH_A))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(challenge_of(&resp).param("error").is_none());
    assert!(env.upstream.requests().is_empty());
}

#[tokio::test]
async fn duplicated_basic_or_query_credentials_get_400_invalid_request() {
    let env = env().await;
    let token = good_token(&env.idp);
    let auth = format!("Authorization: Bearer {token}");
    let twice = http1_post(
        PATH_A,
        &[&auth, &auth, "Content-Type: application/json"],
        CALL,
    );
    let basic = http1_post(
        PATH_A,
        &[
            "Authorization: Basic YWxpY2U6c2VjcmV0",
            "Content-Type: application/json",
        ],
        CALL,
    );
    let query_path = format!("{PATH_A}?access_token={token}");
    let in_query = http1_post(&query_path, &["Content-Type: application/json"], CALL);
    let both_path = format!("{PATH_A}?x=1&access_token={token}");
    let query_and_header = http1_post(&both_path, &[&auth, "Content-Type: application/json"], CALL);
    for (case, wire) in [
        ("two Authorization headers", twice),
        ("Basic", basic),
        ("?access_token=", in_query),
        ("?access_token= with a header too", query_and_header),
    ] {
        let resp = raw::request(env.gw.public_addr, &wire).await;
        assert_eq!(resp.status, 400, "{case}");
        let c = Challenge::parse(resp.header("www-authenticate").expect(case));
        assert_eq!(c.param("error"), Some("invalid_request"), "{case}");
        assert_eq!(c.param("resource_metadata"), Some(PRM_A), "{case}");
        assert!(
            env.upstream.requests().is_empty(),
            "{case}: upstream called"
        );
    }
}

#[tokio::test]
async fn valid_token_without_the_route_scope_gets_403_insufficient_scope() {
    let env = env().await;
    let token = env.idp.token().aud(RES_A).scope("calendar:read").sign();
    let resp = post(&env.gw, PATH_A, Some(&token), CALL).await;
    assert_eq!(resp.status(), 403);
    let c = challenge_of(&resp);
    assert_eq!(c.param("error"), Some("insufficient_scope"));
    assert_eq!(c.param("resource_metadata"), Some(PRM_A));
    assert!(c.scopes().contains(&"mcp:tools".to_string()), "{c:?}");
    // GET needs only the route scopes, and names exactly those.
    let resp = env
        .gw
        .client()
        .get(env.gw.url(PATH_A))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(challenge_of(&resp).scopes(), ["mcp:tools"]);
    assert!(env.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_thousand_random_kids_cause_at_most_three_jwks_fetches() {
    // A long minimum interval: the flood must not depend on how fast this machine is.
    let env = env_with(&[r#"refresh_min_interval = "5s""#], |b| b).await;
    wait_ready(&env.gw).await;
    let before = env.idp.jwks_fetches();
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            env.idp
                .token()
                .aud(RES_A)
                .scope("mcp:tools")
                .kid(Some(&format!("random-{i}-{}", i * 7919 % 1000)))
                .sign()
        })
        .collect();
    let statuses: Vec<u16> = within(
        120,
        "1000 requests",
        futures_util::stream::iter(tokens.iter())
            .map(|t| async { post(&env.gw, PATH_A, Some(t), CALL).await.status().as_u16() })
            .buffer_unordered(16)
            .collect(),
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 401), "all refused");
    let fetches = env.idp.jwks_fetches() - before;
    assert!(fetches <= 3, "{fetches} JWKS fetches for 1000 unknown kids");
    assert!(env.upstream.requests().is_empty());
    // Known keys still work after the flood.
    let ok = post(&env.gw, PATH_A, Some(&good_token(&env.idp)), CALL).await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn rotated_in_key_is_accepted_without_restart_and_rotated_out_key_refused() {
    let env = env().await;
    let old = env
        .idp
        .token()
        .aud(RES_A)
        .scope("mcp:tools calendar:read")
        .sign();
    assert_eq!(post(&env.gw, PATH_A, Some(&old), CALL).await.status(), 200);

    let k2 = TestKey::eddsa("rotated-in-2");
    env.idp.add_key(&k2);
    let new = env
        .idp
        .token()
        .key(&k2)
        .aud(RES_A)
        .scope("mcp:tools calendar:read")
        .sign();
    retry_until_ok(&env.gw, PATH_A, &new, CALL).await;

    // Retire the original signing key; the next refetch (triggered by yet another new kid)
    // drops it, and even its cached token stops working.
    env.idp.remove_key("es-1");
    let k3 = TestKey::es256("rotated-in-3");
    env.idp.add_key(&k3);
    let newer = env
        .idp
        .token()
        .key(&k3)
        .aud(RES_A)
        .scope("mcp:tools calendar:read")
        .sign();
    retry_until_ok(&env.gw, PATH_A, &newer, CALL).await;
    let resp = post(&env.gw, PATH_A, Some(&old), CALL).await;
    assert_invalid_token(&resp, "token of a retired key");
    let calls_with_old = env
        .upstream
        .requests()
        .iter()
        .filter(|r| r.header("authorization").is_some())
        .count();
    assert_eq!(calls_with_old, 0, "credentials never reach the upstream");
}

#[tokio::test]
async fn issuer_down_at_start_is_not_ready_and_fails_closed_until_it_comes_up() {
    let env = env_with(&[], |b| b).await;
    // `env_with` started the issuers before the gateway; take this one down and restart.
    drop(env.gw);
    env.idp.set_down(true);
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .route(route_a(&upstream))
        .raw(&env.idp.toml("idp", &[]))
        .start()
        .await;
    assert_eq!(readyz(&gw).await, 503, "keys never loaded: not ready");
    let token = good_token(&env.idp);
    let resp = post(&gw, PATH_A, Some(&token), CALL).await;
    assert_eq!(resp.status(), 503, "no keys yet: fail closed, not 401");
    assert!(resp.headers().contains_key("retry-after"));
    assert!(upstream.requests().is_empty());

    env.idp.set_down(false);
    wait_ready(&gw).await;
    let resp = post(&gw, PATH_A, Some(&token), CALL).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn issuer_down_later_keeps_the_cached_keys_working() {
    let env = env().await;
    assert_eq!(
        post(&env.gw, PATH_A, Some(&good_token(&env.idp)), CALL)
            .await
            .status(),
        200
    );
    env.idp.set_down(true);
    // An unknown kid makes the gateway try the issuer, which now fails.
    let fetches = env.idp.jwks_fetches() + env.idp.metadata_fetches();
    within(15, "a refetch attempt while the issuer is down", async {
        while env.idp.jwks_fetches() + env.idp.metadata_fetches() == fetches {
            let stray = env
                .idp
                .token()
                .key(&TestKey::es256("not-published"))
                .aud(RES_A)
                .sign();
            let resp = post(&env.gw, PATH_A, Some(&stray), CALL).await;
            assert_eq!(resp.status(), 401, "unknown kid while down");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // A token never seen before, signed by a key loaded before the outage.
    let fresh = good_token(&env.idp);
    let resp = post(&env.gw, PATH_A, Some(&fresh), CALL).await;
    assert_eq!(
        resp.status(),
        200,
        "cached keys keep working while the issuer is down"
    );
    assert_eq!(readyz(&env.gw).await, 200);
}

/// A route accepting opaque tokens introspected at `idp` (timeout 500 ms).
async fn introspection_env() -> (TestIssuer, UpstreamServer, TestGateway) {
    let idp = TestIssuer::start(vec![TestKey::es256("es-1")]).await;
    let upstream = UpstreamServer::mcp().await;
    let builder = GatewayBuilder::new().route(
        TestRoute::new("op", "/op/mcp", &upstream.url("/mcp"))
            .line(r#"issuers = ["idp"]"#)
            .line(r#"scopes = ["mcp:tools"]"#),
    );
    let toml = idp.toml_with_introspection("idp", &builder.dir(), "500ms");
    let gw = builder.raw(&toml).start().await;
    wait_ready(&gw).await;
    (idp, upstream, gw)
}

#[tokio::test]
async fn introspected_tokens_active_inactive_and_slow() {
    let (idp, upstream, gw) = introspection_env().await;
    let res = "https://gateway.test/op/mcp";
    idp.introspection_active("opaque-active-token-1", "olivia", res, "mcp:tools");
    let resp = post(&gw, "/op/mcp", Some("opaque-active-token-1"), CALL).await;
    assert_eq!(resp.status(), 200, "active");
    let seen = upstream.only_request();
    assert!(seen.header("authorization").is_none());

    let resp = post(&gw, "/op/mcp", Some("opaque-inactive-token-2"), CALL).await;
    assert_eq!(resp.status(), 401, "inactive");
    assert_eq!(challenge_of(&resp).param("error"), Some("invalid_token"));

    // Active, but for another resource: refused like a JWT with the wrong audience.
    idp.introspection_active("opaque-elsewhere-3", "olivia", RES_B, "mcp:tools");
    let resp = post(&gw, "/op/mcp", Some("opaque-elsewhere-3"), CALL).await;
    assert_eq!(resp.status(), 401, "active for another audience");

    let failures =
        |m: &MetricsText| m.count("mcpgate_introspection_failures_total", &[("issuer", "idp")]);
    let before = failures(&gw.metrics().await);
    idp.introspection_reply(
        "opaque-slow-token-4",
        json!({"active": true, "sub": "olivia", "scope": "mcp:tools", "aud": res}),
        Duration::from_secs(3),
    );
    let resp = post(&gw, "/op/mcp", Some("opaque-slow-token-4"), CALL).await;
    assert_eq!(resp.status(), 503, "introspection timed out: fail closed");
    assert!(resp.headers().contains_key("retry-after"));
    assert!(resp.headers().get("www-authenticate").is_none());
    let after = failures(&gw.metrics().await);
    assert!(after > before, "introspection failures {before} -> {after}");

    assert_eq!(
        upstream.requests().len(),
        1,
        "only the active token was forwarded"
    );
    assert_eq!(
        idp.introspection_bad_client(),
        0,
        "client_secret_basic accepted"
    );
    assert!(idp.introspection_calls() >= 4);
    assert_eq!(INTROSPECTION_CLIENT_ID, "mcpgate");
}

#[tokio::test]
async fn api_keys_work_only_on_their_own_route() {
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .route(
            TestRoute::new("k1", "/k1/mcp", &upstream.url("/mcp"))
                .line(r#"scopes = ["mcp:tools"]"#)
                .api_key("alpha-key-0001-abcdefghijkl", "bot-a", &["mcp:tools"]),
        )
        .route(
            TestRoute::new("k2", "/k2/mcp", &upstream.url("/mcp"))
                .line(r#"scopes = ["mcp:tools"]"#)
                .api_key("beta-key-0002-abcdefghijklm", "bot-b", &["mcp:tools"]),
        )
        .start()
        .await;
    let resp = post(&gw, "/k1/mcp", Some("alpha-key-0001-abcdefghijkl"), CALL).await;
    assert_eq!(resp.status(), 200, "right key");
    assert!(upstream.only_request().header("authorization").is_none());
    for (case, key) in [
        ("wrong key", "alpha-key-0001-abcdefghijkX"),
        ("other route's key", "beta-key-0002-abcdefghijklm"),
    ] {
        let resp = post(&gw, "/k1/mcp", Some(key), CALL).await;
        assert_eq!(resp.status(), 401, "{case}");
        assert_eq!(
            challenge_of(&resp).param("error"),
            Some("invalid_token"),
            "{case}"
        );
    }
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn spoofed_identity_headers_are_replaced_by_the_authenticated_identity() {
    let idp = TestIssuer::start(vec![TestKey::es256("es-1")]).await;
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .route(
            TestRoute::new("id", "/id/mcp", &upstream.url("/mcp"))
                .line(r#"issuers = ["idp"]"#)
                .line(r#"scopes = ["mcp:tools"]"#)
                .line(r#"identity_headers = { subject = "X-MCP-Subject", client_id = "X-MCP-Client-Id", scopes = "X-MCP-Scopes" }"#),
        )
        .raw(&idp.toml("idp", &[]))
        .start()
        .await;
    wait_ready(&gw).await;
    let token = idp
        .token()
        .aud("https://gateway.test/id/mcp")
        .sub("alice")
        .client_id("calendar-app")
        .scope("mcp:tools calendar:read")
        .sign();
    let resp = gw
        .client()
        .post(gw.url("/id/mcp"))
        .header("content-type", "application/json")
        .bearer_auth(&token)
        .header("X-MCP-Subject", "root")
        .header("x-mcp-subject", "admin")
        .header("X-MCP-Client-Id", "trusted-internal")
        .header("X-MCP-Scopes", "admin:everything")
        .body(CALL)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.only_request();
    let all = |name: &str| -> Vec<String> {
        seen.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(all("x-mcp-subject"), ["alice"]);
    assert_eq!(all("x-mcp-client-id"), ["calendar-app"]);
    assert_eq!(all("x-mcp-scopes"), ["mcp:tools calendar:read"]);
    assert!(seen.header("authorization").is_none());
}

#[tokio::test]
async fn foreign_origin_is_refused_before_anything_else() {
    let env = env_with(&[], |b| {
        b.server(&format!(
            "cors = {{ allowed_origins = [{ALLOWED_ORIGIN:?}] }}"
        ))
    })
    .await;
    wait_ready(&env.gw).await;
    let token = good_token(&env.idp);
    for (case, path, with_token) in [
        ("valid token", PATH_A, true),
        ("no token", PATH_A, false),
        (
            "metadata",
            "/.well-known/oauth-protected-resource/team/a/mcp",
            false,
        ),
    ] {
        let mut req = env
            .gw
            .client()
            .post(env.gw.url(path))
            .header("origin", "https://evil.example")
            .header("content-type", "application/json")
            .body(CALL);
        if with_token {
            req = req.bearer_auth(&token);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403, "{case}");
        assert!(resp.headers().get("www-authenticate").is_none(), "{case}");
        assert!(
            resp.headers().get("access-control-allow-origin").is_none(),
            "{case}"
        );
    }
    assert!(env.upstream.requests().is_empty(), "upstream was called");
    // The allowed origin goes through, and may read the response.
    let resp = env
        .gw
        .client()
        .post(env.gw.url(PATH_A))
        .header("origin", ALLOWED_ORIGIN)
        .header("content-type", "application/json")
        .bearer_auth(&token)
        .body(CALL)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        ALLOWED_ORIGIN
    );
}

#[tokio::test]
async fn cors_preflight_and_errors_expose_the_challenge_and_session_headers() {
    let env = env_with(&[], |b| {
        b.server(&format!(
            "cors = {{ allowed_origins = [{ALLOWED_ORIGIN:?}] }}"
        ))
    })
    .await;
    wait_ready(&env.gw).await;
    let expose = |resp: &reqwest::Response| -> Vec<String> {
        resp.headers()
            .get_all("access-control-expose-headers")
            .iter()
            .flat_map(|v| {
                v.to_str()
                    .unwrap()
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for path in [PATH_A, "/.well-known/oauth-protected-resource/team/a/mcp"] {
        let resp = env
            .gw
            .client()
            .request(reqwest::Method::OPTIONS, env.gw.url(path))
            .header("origin", ALLOWED_ORIGIN)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, mcp-session-id",
            )
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            ALLOWED_ORIGIN,
            "{path}"
        );
        let methods = resp.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap();
        assert!(methods.contains("POST"), "{path}: {methods}");
        let allowed = resp.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for h in ["authorization", "content-type", "mcp-session-id"] {
            assert!(allowed.contains(h), "{path}: {allowed}");
        }
        let exposed = expose(&resp);
        for h in ["www-authenticate", "mcp-session-id"] {
            assert!(exposed.contains(&h.to_string()), "{path}: {exposed:?}");
        }
    }
    // The 401 a browser client gets must be readable, challenge included.
    let resp = env
        .gw
        .client()
        .post(env.gw.url(PATH_A))
        .header("origin", ALLOWED_ORIGIN)
        .header("content-type", "application/json")
        .body(CALL)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        ALLOWED_ORIGIN
    );
    assert!(expose(&resp).contains(&"www-authenticate".to_string()));
    assert!(
        env.upstream.requests().is_empty(),
        "preflights never reach the upstream"
    );
}

#[tokio::test]
async fn protected_resource_metadata_of_a_nested_route_field_by_field() {
    let env = env().await;
    let resp = env
        .gw
        .client()
        .get(
            env.gw
                .url("/.well-known/oauth-protected-resource/team/a/mcp"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let raw = resp.text().await.unwrap();
    assert!(
        raw.contains(&format!(r#""resource":"{RES_A}""#)),
        "resource byte for byte: {raw}"
    );
    let doc: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(doc["resource"], RES_A);
    assert_eq!(doc["authorization_servers"], json!([env.idp.issuer()]));
    let scopes: Vec<&str> = doc["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in ["mcp:tools", "calendar:read", "calendar:admin"] {
        assert!(scopes.contains(&s), "{s} in {scopes:?}");
    }
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    assert_eq!(doc["resource_name"], "Team A calendar");
    // The challenge points exactly here.
    let resp = post(&env.gw, PATH_A, None, CALL).await;
    assert_eq!(challenge_of(&resp).param("resource_metadata"), Some(PRM_A));
    // Appending (instead of inserting) the well-known segment is not the RFC 9728 location.
    let resp = env
        .gw
        .client()
        .get(
            env.gw
                .url("/team/a/mcp/.well-known/oauth-protected-resource"),
        )
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), 200);
    // Route b names its own issuer.
    let doc: Value = env
        .gw
        .client()
        .get(env.gw.url("/.well-known/oauth-protected-resource/b/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["resource"], RES_B);
    assert_eq!(doc["authorization_servers"], json!([env.other.issuer()]));
}

#[tokio::test]
async fn root_metadata_is_the_default_routes_document() {
    let env = env().await;
    let get = |path: &'static str| {
        let client = env.gw.client().clone();
        let url = env.gw.url(path);
        async move {
            let resp = client.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            resp.bytes().await.unwrap()
        }
    };
    let root = get("/.well-known/oauth-protected-resource").await;
    let a = get("/.well-known/oauth-protected-resource/team/a/mcp").await;
    let b = get("/.well-known/oauth-protected-resource/b/mcp").await;
    assert_eq!(root, a);
    assert_ne!(root, b);
}

#[tokio::test]
async fn authorization_server_metadata_fallback_serves_the_issuers_own_document() {
    let env = env().await;
    let resp = env
        .gw
        .client()
        .get(env.gw.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert_eq!(body, env.idp.rfc8414_document());
    // It is the issuer's document, fetched from the issuer (RFC 8414 path-inserted form).
    let direct = plain_client(HttpVersion::Auto)
        .get(env.idp.url(&TestIssuer::rfc8414_path()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, direct);
}

#[tokio::test]
async fn metrics_count_auth_outcomes_jwks_fetches_and_token_cache() {
    let env = env().await;
    let m0 = env.gw.metrics().await;
    assert!(
        m0.count(
            "mcpgate_jwks_fetch_total",
            &[("issuer", "idp"), ("result", "success")]
        ) >= 1.0,
        "{}",
        m0.0
    );
    let token = good_token(&env.idp);
    for _ in 0..2 {
        assert_eq!(
            post(&env.gw, PATH_A, Some(&token), CALL).await.status(),
            200
        );
    }
    let expired = env
        .idp
        .token()
        .aud(RES_A)
        .scope("mcp:tools")
        .exp_in(-600)
        .sign();
    assert_eq!(
        post(&env.gw, PATH_A, Some(&expired), CALL).await.status(),
        401
    );
    assert_eq!(post(&env.gw, PATH_A, None, CALL).await.status(), 401);
    let m1 = env.gw.metrics().await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| m1.count(name, labels) - m0.count(name, labels);
    assert_eq!(
        delta("mcpgate_auth_total", &[("route", "a"), ("result", "ok")]),
        2.0
    );
    assert_eq!(
        delta(
            "mcpgate_auth_total",
            &[("route", "a"), ("result", "denied"), ("reason", "expired")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "mcpgate_auth_total",
            &[
                ("route", "a"),
                ("result", "denied"),
                ("reason", "no_credentials")
            ]
        ),
        1.0
    );
    assert!(delta("mcpgate_token_cache_total", &[("result", "miss")]) >= 2.0);
    assert_eq!(
        delta("mcpgate_token_cache_total", &[("result", "hit")]),
        1.0
    );
}

fn mint(config: &std::path::Path, scope: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "--config"])
        .arg(config)
        .args([
            "--route",
            "demo",
            "--scope",
            scope,
            "--ttl",
            "10m",
            "--subject",
            "dev-alice",
        ])
        .output()
        .expect("run mcpgate token");
    assert!(
        out.status.success(),
        "mcpgate token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn dev_issuer_token_from_the_cli_is_accepted_and_no_token_is_ever_logged() {
    let upstream = UpstreamServer::mcp().await;
    let builder = GatewayBuilder::new()
        .route(
            TestRoute::new("demo", "/demo/mcp", &upstream.url("/mcp"))
                .line(r#"issuers = ["dev"]"#)
                .line(r#"scopes = ["mcp:tools"]"#),
        )
        .raw("[[issuers]]\nid = \"dev\"\nkind = \"dev\"");
    let config = builder.write();
    let token = mint(&config, "mcp:tools");
    assert_eq!(token.split('.').count(), 3, "a JWS: {token}");
    let claims = payload_of(&token);
    assert_eq!(claims["aud"], "https://gateway.test/demo/mcp");
    assert_eq!(claims["sub"], "dev-alice");
    let weak = mint(&config, "other:scope");

    let mut gateway = GatewayProcess::start("auth", &config, "trace", &[]).await;
    let client = plain_client(HttpVersion::Auto);
    let url = format!("http://{}/demo/mcp", gateway.public);
    let send = |url: String, auth: Option<String>| {
        let client = client.clone();
        async move {
            let mut req = client
                .post(url)
                .header("content-type", "application/json")
                .body(CALL);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    let mut tampered = payload_of(&token);
    tampered["sub"] = json!("someone-else");
    let tampered = with_payload(&token, &tampered);
    assert_eq!(
        send(url.clone(), Some(format!("Bearer {token}"))).await,
        200
    );
    assert_eq!(
        send(url.clone(), Some(format!("Bearer {token}"))).await,
        200,
        "cached"
    );
    assert_eq!(send(url.clone(), Some(format!("Bearer {weak}"))).await, 403);
    assert_eq!(
        send(url.clone(), Some(format!("Bearer {tampered}"))).await,
        401
    );
    assert_eq!(send(url.clone(), Some(format!("Basic {token}"))).await, 400);
    assert_eq!(send(format!("{url}?access_token={token}"), None).await, 400);
    assert_eq!(upstream.requests().len(), 2);
    assert!(gateway.terminate().await.success(), "clean exit on SIGTERM");
    let (out, err) = (gateway.stdout_text(), gateway.log_text());
    assert!(err.contains("request done"), "logs were captured:\n{err}");
    assert!(
        err.contains("credential rejected"),
        "debug auth logs were captured:\n{err}"
    );
    assert!(
        out.contains("\"decision\""),
        "audit events on stdout:\n{out}"
    );
    for (name, t) in [("token", &token), ("weak", &weak), ("tampered", &tampered)] {
        let signature = t.rsplit('.').next().unwrap();
        for (stream, text) in [("stderr", &err), ("stdout", &out)] {
            assert!(!text.contains(t.as_str()), "{name} token in {stream}");
            assert!(
                !text.contains(signature),
                "{name} token signature in {stream}"
            );
        }
    }
}

/// Opens an event stream as an MCP client does: GET, or POST with a call.
async fn open_stream(
    client: &reqwest::Client,
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> reqwest::Response {
    let mut req = client
        .request(method.clone(), gw.url(path))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream");
    if method == reqwest::Method::POST {
        req = req.header("content-type", "application/json").body(CALL);
    }
    let mut resp = within(15, "stream opened", req.send()).await.expect("send");
    assert_eq!(resp.status(), 200, "{method} {path}");
    let first = within(15, "first event", resp.chunk())
        .await
        .expect("chunk");
    assert!(
        first.is_some_and(|c| c.starts_with(b"id: 1")),
        "{method} {path}"
    );
    resp
}

/// An upstream that answers every request with one event, then holds the stream open for good.
async fn held_open_upstream() -> UpstreamServer {
    let (gate, finished) = (Gate::new(), std::sync::Arc::new(tokio::sync::Notify::new()));
    UpstreamServer::start(move |_| {
        let first = sse_event(1, r#"{"jsonrpc":"2.0","method":"notifications/message"}"#);
        Reply::sse_gated(&[first], &gate, &[], &finished)
    })
    .await
}

/// True if nothing more arrives and the stream stays open for a second.
async fn still_open(resp: &mut reqwest::Response) -> bool {
    tokio::time::timeout(Duration::from_secs(1), resp.chunk())
        .await
        .is_err()
}

#[tokio::test]
async fn a_get_stream_ends_once_its_token_is_no_longer_accepted() {
    let idp = TestIssuer::start(vec![TestKey::es256("es-1")]).await;
    let upstream = held_open_upstream().await;
    let route = |id: &str| {
        TestRoute::new(id, &format!("/{id}/mcp"), &upstream.url("/mcp"))
            .line(r#"issuers = ["idp"]"#)
            .table("[routes.tools]\n\"*\" = []")
    };
    let gw = GatewayBuilder::new()
        .route(route("cut"))
        .route(route("keep").line("end_streams_at_expiry = false"))
        .raw(&idp.toml("idp", &[r#"leeway = "1s""#]))
        .start()
        .await;
    wait_ready(&gw).await;
    let token = |id: &str| {
        idp.token()
            .aud(&format!("https://gateway.test/{id}/mcp"))
            .exp_in(2)
            .sign()
    };
    let (cut, keep) = (token("cut"), token("keep"));

    let (h1, h2) = (gw.client(), &plain_client(HttpVersion::Http2));
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);
    let mut get_h1 = open_stream(h1, &gw, get.clone(), "/cut/mcp", &cut).await;
    let mut get_h2 = open_stream(h2, &gw, get.clone(), "/cut/mcp", &cut).await;
    let mut post = open_stream(h1, &gw, post, "/cut/mcp", &cut).await;
    let mut kept = open_stream(h1, &gw, get, "/keep/mcp", &keep).await;

    // exp is 2 s away, plus 1 s of leeway: the upstream never ends the streams, the gateway does.
    for (stream, version) in [(&mut get_h1, "HTTP/1.1"), (&mut get_h2, "HTTP/2.0")] {
        assert_eq!(format!("{:?}", stream.version()), version);
        within(15, "the GET stream to end at the token's expiry", async {
            while stream.chunk().await.expect("a clean end").is_some() {}
        })
        .await;
    }
    assert!(still_open(&mut kept).await, "end_streams_at_expiry = false");
    assert!(
        still_open(&mut post).await,
        "a POST's stream carries a call's answer"
    );

    let metrics = gw.metrics().await;
    let expired = |route| metrics.count("mcpgate_streams_expired_total", &[("route", route)]);
    assert_eq!((expired("cut"), expired("keep")), (2.0, 0.0));
    // The client opens the stream again, and is asked for a new token.
    let again = gw
        .client()
        .get(gw.url("/cut/mcp"))
        .bearer_auth(&cut)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), 401);
}

/// An opaque token's GET stream lasts as long as its cached introspection answer (2 s here), so a
/// revocation at the authorization server reaches open streams within `cache_ttl`.
#[tokio::test]
async fn an_introspected_token_stream_ends_with_its_cached_answer() {
    let idp = TestIssuer::start(vec![TestKey::es256("es-1")]).await;
    let upstream = held_open_upstream().await;
    let builder = GatewayBuilder::new().route(
        TestRoute::new("op", "/op/mcp", &upstream.url("/mcp"))
            .line(r#"issuers = ["idp"]"#)
            .table("[routes.tools]\n\"*\" = []"),
    );
    let toml = idp.toml_with_introspection_cached("idp", &builder.dir(), "2s", "2s");
    let gw = builder.raw(&toml).start().await;
    wait_ready(&gw).await;
    let token = "opaque-stream-token-1";
    // Active for another 300 s as far as the answer goes.
    idp.introspection_active(token, "olivia", "https://gateway.test/op/mcp", "mcp:tools");
    let mut stream = open_stream(gw.client(), &gw, reqwest::Method::GET, "/op/mcp", token).await;
    idp.introspection_reply(token, json!({"active": false}), Duration::ZERO);

    within(15, "the stream to end with its cached answer", async {
        while stream.chunk().await.expect("a clean end").is_some() {}
    })
    .await;
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics.count("mcpgate_streams_expired_total", &[("route", "op")]),
        1.0
    );
    let again = gw
        .client()
        .get(gw.url("/op/mcp"))
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), 401, "revoked: asked again and refused");
}
