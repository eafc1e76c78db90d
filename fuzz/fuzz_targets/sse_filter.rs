//! Fuzzes the SSE list filter: no panic on any stream, and its output never depends on how the stream is chunked.
//!
//! cargo-fuzz layout: as fuzz_targets/classify.rs, `[[bin]] name = "sse_filter"`.
//! Seeds: fuzz/corpus/sse_filter/ (plain text/event-stream bodies; the first byte also picks the
//! chunk size, so every seed is a realistic stream as it is).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mcpgate::jsonrpc::RawIdBuf;
use mcpgate::policy::{ListKind, Policy, PolicySpec, compile};
use mcpgate::proxy::sse::{SseFilter, filter_list_json};

fn policy() -> Arc<Policy> {
    static POLICY: OnceLock<Arc<Policy>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            let spec = PolicySpec {
                route_scopes: vec!["mcp".into()],
                tools: [
                    ("get_*".to_string(), vec!["read".to_string()]),
                    ("delete_*".to_string(), vec!["admin".to_string()]),
                ]
                .into(),
                ..Default::default()
            };
            Arc::new(compile(&spec).unwrap())
        })
        .clone()
}

fn run(stream: &[u8], chunk: usize, max_event: usize) -> Vec<u8> {
    let policy = policy();
    let granted = policy.grant_set(&["mcp", "read"]);
    let id = RawIdBuf::parse("1").unwrap();
    let mut filter = SseFilter::new(id, ListKind::Tools, policy, granted, max_event);
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        out.extend_from_slice(&filter.push(piece));
    }
    out.extend_from_slice(&filter.finish());
    out
}

fuzz_target!(|data: &[u8]| {
    let chunk = 1 + usize::from(data.first().copied().unwrap_or(0) % 16);
    let max_event = 64 + usize::from(data.last().copied().unwrap_or(0)) * 16;
    let whole = run(data, data.len(), max_event);
    assert_eq!(run(data, chunk, max_event), whole, "output depends on chunking");
    let policy = policy();
    let _ = filter_list_json(data, ListKind::Tools, &policy, policy.grant_set(&["mcp"]));
});
