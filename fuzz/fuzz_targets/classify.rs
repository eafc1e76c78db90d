//! Fuzzes the request classifier: no panic on any input, and whatever it accepts agrees with serde_json.
//!
//! cargo-fuzz layout (fuzz/Cargo.toml): `[package.metadata] cargo-fuzz = true`, dependencies
//! `libfuzzer-sys = "0.4"`, `serde = "1"`, `serde_json = "1"`, `mcpgate = { path = ".." }`, and
//! `[[bin]] name = "classify" path = "fuzz_targets/classify.rs" test = false doc = false`.
//! Seeds: fuzz/corpus/classify/ (`cargo fuzz run classify fuzz/corpus/classify`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgate::jsonrpc::{Envelope, Limits, check_headers, classify};
use mcpgate::policy::{PolicySpec, compile};

fuzz_target!(|data: &[u8]| {
    for allow_batches in [false, true] {
        let Ok(env) = classify(data, &Limits::default(), allow_batches) else {
            continue;
        };
        // Differential: anything we accept is JSON to serde_json (its recursion limit, 128, is above
        // our default depth of 64), and the values we extracted are the ones it sees. `Value`
        // refuses lone surrogates in any string, which classify tolerates in values it ignores
        // (as IgnoredAny does), so the value comparison runs only when `Value` parses.
        serde_json::from_slice::<serde::de::IgnoredAny>(data)
            .expect("classify accepted a body serde_json rejects");
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
            continue;
        };
        let messages: Vec<&serde_json::Value> = match (&env, &value) {
            (Envelope::Single(_), v) => vec![v],
            (Envelope::Batch(_), serde_json::Value::Array(items)) => items.iter().collect(),
            _ => panic!("batch envelope for a non-array body"),
        };
        assert_eq!(messages.len(), env.len());
        for (msg, v) in env.messages().zip(messages) {
            assert_eq!(msg.method(), v.get("method").and_then(|m| m.as_str()));
            if let Some(name) = msg.name.as_deref() {
                assert_eq!(Some(name), v["params"]["name"].as_str());
            }
            if let Some(uri) = msg.uri.as_deref() {
                assert_eq!(Some(uri), v["params"]["uri"].as_str());
            }
            if let Some(id) = msg.id() {
                let parsed: serde_json::Value = serde_json::from_str(id.as_json()).unwrap();
                assert_eq!(Some(&parsed), v.get("id"));
            }
        }
        let _ = check_headers(&env, Some("tools/call"), Some("=?base64?Z2V0?="));
        let policy = compile(&PolicySpec {
            route_scopes: vec!["mcp".into()],
            tools: [("get_*".to_string(), vec!["read".to_string()])].into(),
            ..Default::default()
        })
        .unwrap();
        let _ = policy.authorize_all(&env, policy.grant_set(&["mcp"]));
    }
});
