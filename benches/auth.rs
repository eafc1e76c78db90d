//! Authentication cost: a cold verification (signature + claims) versus a verified-token cache hit.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcpgate::auth::dev::DevIssuer;
use mcpgate::auth::{Authenticator, IssuerSettings, RouteAuth};

const ISSUER: &str = "http://127.0.0.1:8443";
const AUDIENCE: &str = "http://127.0.0.1:8443/calendar/mcp";
/// The stand-in for an identity provider that signs RS256, the default of Keycloak, Okta, Entra ID.
const RSA_ISSUER: &str = "https://idp.example/realms/bench";
const RSA_KID: &str = "bench-rsa";
/// Distinct RS256 tokens minted before measuring (RSA signing takes ~1 ms, too slow to do per
/// iteration); see `authenticate_rs256` for how they stay cache misses.
const RSA_POOL: usize = 1_000;

fn state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("mcpgate-bench-{}", std::process::id()))
}

fn setup() -> (tokio::runtime::Runtime, DevIssuer, Authenticator, RouteAuth) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dev = DevIssuer::load_or_create(&state_dir(), ISSUER).expect("dev issuer");
    // Static keys: no network, so the numbers are pure verification cost.
    let auth = Authenticator::new(vec![dev.settings("dev")], &prometheus::Registry::new())
        .expect("authenticator");
    let route = RouteAuth {
        route_id: "calendar".into(),
        issuers: vec![0],
        audiences: vec![AUDIENCE.to_owned()],
        api_keys: vec![],
    };
    (rt, dev, auth, route)
}

fn authenticate(c: &mut Criterion) {
    let (rt, dev, auth, route) = setup();
    let scopes = vec!["mcp:tools".to_owned()];
    let mint = || {
        dev.mint("bench", AUDIENCE, &scopes, Duration::from_secs(600))
            .expect("mint")
    };

    // Every iteration gets a never-seen token (fresh jti), so each one misses the cache.
    c.bench_function("authenticate/cold_es256", |b| {
        b.iter_batched(
            mint,
            |token| {
                rt.block_on(auth.authenticate(&route, black_box(&token)))
                    .expect("valid")
            },
            BatchSize::SmallInput,
        )
    });

    let token = mint();
    rt.block_on(auth.authenticate(&route, &token))
        .expect("valid");
    c.bench_function("authenticate/cached", |b| {
        b.iter(|| {
            rt.block_on(auth.authenticate(&route, black_box(&token)))
                .expect("valid")
        })
    });

    let _ = std::fs::remove_dir_all(state_dir());
}

/// A static-key RS256 issuer and a pool of distinct tokens from it.
struct RsaIssuer {
    settings: IssuerSettings,
    tokens: Vec<String>,
}

impl RsaIssuer {
    fn new() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA keygen");
        let key = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).expect("RSA PEM");
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("RSA JWK");
        jwk.common.key_id = Some(RSA_KID.to_owned());
        let mut settings = IssuerSettings::new("rsa", RSA_ISSUER);
        settings.algorithms = vec![Algorithm::RS256];
        settings.static_keys = Some(JwkSet { keys: vec![jwk] });
        let tokens = (0..RSA_POOL).map(|jti| rsa_token(&key, jti)).collect();
        RsaIssuer { settings, tokens }
    }
}

fn rsa_token(key: &EncodingKey, jti: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "iss": RSA_ISSUER,
        "sub": "bench",
        "aud": AUDIENCE,
        "client_id": "bench-client",
        "scope": "mcp:tools",
        "iat": now,
        "exp": now + 3600,
        "jti": format!("bench-{jti}"),
    });
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some(RSA_KID.to_owned());
    jsonwebtoken::encode(&header, &claims, key).expect("RS256 sign")
}

/// The tokens of the pool are cache misses until it wraps; then a new authenticator (made, and
/// its key prepared with one untimed token, outside the timed routine) makes them misses again.
fn authenticate_rs256(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let issuer = RsaIssuer::new();
    let route = RouteAuth {
        route_id: "calendar".into(),
        issuers: vec![0],
        audiences: vec![AUDIENCE.to_owned()],
        api_keys: vec![],
    };
    let (warm, pool) = issuer.tokens.split_first().expect("a token pool");
    let fresh_authenticator = || {
        let auth = Authenticator::new(vec![issuer.settings.clone()], &prometheus::Registry::new())
            .expect("authenticator");
        rt.block_on(auth.authenticate(&route, warm)).expect("valid");
        Arc::new(auth)
    };
    let mut auth = fresh_authenticator();
    let mut unused = pool.iter();
    c.bench_function("authenticate/cold_rs256", |b| {
        b.iter_batched(
            || {
                let token = unused.next().unwrap_or_else(|| {
                    auth = fresh_authenticator();
                    unused = pool.iter();
                    unused.next().expect("a token pool")
                });
                (auth.clone(), token)
            },
            |(auth, token)| {
                rt.block_on(auth.authenticate(&route, black_box(token)))
                    .expect("valid")
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, authenticate, authenticate_rs256);
criterion_main!(benches);
