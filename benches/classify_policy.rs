//! Hot-path costs: classifying typical MCP bodies, authorizing them, filtering a tools/list SSE
//! stream, and building the challenges of refused calls.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mcpgate::jsonrpc::{Limits, RawIdBuf, classify};
use mcpgate::policy::{ListKind, PolicySpec, compile};

const TOOLS_CALL: &[u8] = br#"{"jsonrpc":"2.0","id":"req-42","method":"tools/call","params":{"name":"get_events","arguments":{"calendar":"work","from":"2026-01-01T00:00:00Z","to":"2026-01-31T23:59:59Z","limit":50,"include":["attendees","location"]},"_meta":{"progressToken":"p-1"}}}"#;
const INITIALIZE: &[u8] = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"roots":{"listChanged":true},"sampling":{},"elicitation":{}},"clientInfo":{"name":"example-client","version":"1.0.0"}}}"#;
const TOOLS_LIST: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

fn spec() -> PolicySpec {
    let rule = |k: &str, v: &[&str]| (k.to_string(), v.iter().map(|s| s.to_string()).collect());
    PolicySpec {
        route_scopes: vec!["mcp:tools".into()],
        tools: [
            rule("get_events", &["calendar:read"]),
            rule("delete_*", &["calendar:admin"]),
            rule("list_*", &["calendar:read"]),
            rule("*", &["mcp:tools"]),
        ]
        .into(),
        methods: [rule("tools/list", &[])].into(),
        resources: [rule("file:///public/*", &["files:read"])].into(),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("classify");
    for (name, body) in [
        ("tools_call", TOOLS_CALL),
        ("initialize", INITIALIZE),
        ("tools_list", TOOLS_LIST),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| classify(black_box(body), &limits, false).unwrap())
        });
    }
    g.finish();

    let policy = Arc::new(compile(&spec()).unwrap());
    let token = ["mcp:tools", "calendar:read", "offline_access"];
    c.bench_function("policy/grant_set", |b| {
        b.iter(|| policy.grant_set(black_box(&token)))
    });
    let granted = policy.grant_set(&token);
    let env = classify(TOOLS_CALL, &limits, false).unwrap();
    let msg = env.single().unwrap();
    c.bench_function("policy/authorize_exact", |b| {
        b.iter(|| policy.authorize(black_box(msg), granted).is_ok())
    });
    let glob = classify(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_everything"}}"#,
        &limits,
        false,
    )
    .unwrap();
    let glob = glob.single().unwrap();
    c.bench_function("policy/authorize_glob", |b| {
        b.iter(|| policy.authorize(black_box(glob), granted).is_err())
    });
    c.bench_function("classify+authorize/tools_call", |b| {
        b.iter(|| {
            let env = classify(black_box(TOOLS_CALL), &limits, false).unwrap();
            policy.authorize(env.single().unwrap(), granted).is_ok()
        })
    });

    let mut list = String::from(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":["#);
    for i in 0..50 {
        let name = if i % 2 == 0 { "get" } else { "delete" };
        list.push_str(&format!(
            r#"{}{{"name":"{name}_{i}","description":"tool number {i}","inputSchema":{{"type":"object","properties":{{"x":{{"type":"string"}}}}}}}}"#,
            if i > 0 { "," } else { "" }
        ));
    }
    list.push_str("]}}");
    let stream = format!(": ping\n\nid: 1\nevent: message\ndata: {list}\n\n");
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("filter_tools_list_50", |b| {
        b.iter(|| {
            let mut f = mcpgate::proxy::sse::SseFilter::new(
                RawIdBuf::parse("1").unwrap(),
                ListKind::Tools,
                policy.clone(),
                granted,
                1 << 20,
            );
            let out = f.push(black_box(stream.as_bytes()));
            black_box(out.len() + f.finish().len())
        })
    });
    g.finish();
}

/// The 401 challenges without an error are precomputed per route; the step-up ones name the
/// scopes of the refused call, so they are built per refusal.
fn challenges(c: &mut Criterion) {
    let url = "https://mcp.example.com/.well-known/oauth-protected-resource/calendar/mcp";
    c.bench_function("challenge/insufficient_scope_403", |b| {
        b.iter(|| {
            mcpgate::metadata::insufficient_scope(
                black_box(url),
                black_box("mcp:tools calendar:admin"),
            )
        })
    });
    c.bench_function("challenge/sign_in_required_401", |b| {
        b.iter(|| mcpgate::metadata::sign_in_required(black_box(url), black_box("calendar:read")))
    });
}

criterion_group!(benches, bench, challenges);
criterion_main!(benches);
