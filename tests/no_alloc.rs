//! Pins that per-request policy queries do not allocate, with a counting global allocator (its own test binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mcpgate::jsonrpc::{Limits, classify};
use mcpgate::policy::{ListKind, PolicySpec, compile};

thread_local! {
    // Per thread, so tests running in parallel do not disturb each other's counts.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn spec() -> PolicySpec {
    let rule = |k: &str, v: &[&str]| (k.to_string(), v.iter().map(|s| s.to_string()).collect());
    PolicySpec {
        route_scopes: vec!["mcp:tools".into()],
        tools: [
            rule("get_events", &["calendar:read"]),
            rule("delete_*", &["calendar:admin"]),
            rule("list_*", &["calendar:read"]),
        ]
        .into(),
        methods: [rule("tools/list", &[])].into(),
        resources: [rule("file:///public/*", &["files:read"])].into(),
        ..Default::default()
    }
}

#[test]
fn authorize_visible_and_grant_set_do_not_allocate() {
    let policy = compile(&spec()).unwrap();
    let bodies: [&[u8]; 3] = [
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_event"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_events"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    ];
    let envs: Vec<_> = bodies
        .iter()
        .map(|b| classify(b, &Limits::default(), false).unwrap())
        .collect();
    let token = ["mcp:tools", "calendar:read", "unknown"];
    let queries = || {
        let granted = policy.grant_set(&token);
        let granted = granted.union(policy.grant_set_str("mcp:tools calendar:read"));
        for env in &envs {
            match policy.authorize(env.single().unwrap(), granted) {
                Ok(d) => assert!(!d.rule().is_empty()),
                Err(d) => assert!(d.required().count() > 0 && d.missing().count() > 0),
            }
        }
        assert!(policy.visible(ListKind::Tools, "list_x", granted));
        assert!(!policy.visible(ListKind::Resources, "file:///etc", granted));
        assert_eq!(policy.tool_label("nope"), "other");
    };
    // globset's regex engine creates its per-thread match cache on first use.
    queries();
    assert_eq!(allocations_during(|| (0..100).for_each(|_| queries())), 0);
}

#[test]
fn classify_allocates_only_its_two_scratch_vectors() {
    let body = br#"{"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":"get_events","arguments":{"a":[1,2,{"b":null}],"c":"d"}}}"#;
    let n = allocations_during(|| {
        let env = classify(body, &Limits::default(), false).unwrap();
        assert_eq!(env.single().unwrap().target(), Some("get_events"));
    });
    assert!(n <= 2, "{n} allocations");
}
