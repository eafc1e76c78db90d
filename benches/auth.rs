//! Authentication cost: a cold verification (signature + claims) versus a verified-token cache hit.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mcpgate::auth::dev::DevIssuer;
use mcpgate::auth::{Authenticator, RouteAuth};

const ISSUER: &str = "http://127.0.0.1:8443";
const AUDIENCE: &str = "http://127.0.0.1:8443/calendar/mcp";

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

criterion_group!(benches, authenticate);
criterion_main!(benches);
