//! Tool-level authorisation through the running gateway (issue #4): the scope policy per tool,
//! body inspection without parser differentials, list filtering (JSON and SSE), session
//! binding, anonymous access, rate limits, audit lines and metrics.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::issuer::{TestIssuer, TestKey, challenge_of, payload_of, with_payload};
use common::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

const ORIGIN: &str = "https://gateway.test";
const UPSTREAM_SESSION: &str = "up-session-1";

/// `[routes.tools]` with an exact rule, a glob, a longer glob, an exact name inside a glob and
/// (when `catch_all`) `"*"`.
fn tools_table(catch_all: bool) -> String {
    let mut t = String::from(
        "[routes.tools]\n\"get_events\" = [\"calendar:read\"]\n\"delete_*\" = [\"calendar:admin\"]\n\"delete_all_*\" = [\"calendar:owner\"]\n\"delete_draft\" = []\n",
    );
    if catch_all {
        t.push_str("\"*\" = [\"calendar:misc\"]\n");
    }
    t
}

fn route(id: &str, upstream: &UpstreamServer, catch_all: bool) -> TestRoute {
    TestRoute::new(id, &format!("/{id}/mcp"), &upstream.url("/mcp"))
        .line(r#"issuers = ["idp"]"#)
        .line(r#"scopes = ["mcp:tools"]"#)
        .table(&tools_table(catch_all))
}

/// Answers `tools/list` with five tools, `initialize` with a session id, anything else like
/// an MCP server.
fn upstream_behaviour(req: &Recorded) -> Reply {
    let msg = req.json().unwrap_or(Value::Null);
    match msg.get("method").and_then(Value::as_str) {
        Some("tools/list") => {
            Reply::bytes(200, "application/json", tools_list(&msg["id"]).to_string())
        }
        Some("initialize") => Reply::echo(req).header("mcp-session-id", UPSTREAM_SESSION),
        _ => upstream::mcp_behaviour(req),
    }
}

fn tools_list(id: &Value) -> Value {
    let tool = |name: &str| json!({"name": name, "description": format!("the {name} tool"), "inputSchema": {"type": "object"}});
    json!({
        "jsonrpc": "2.0", "id": id,
        "result": {
            "tools": [tool("get_events"), tool("delete_event"), tool("delete_all_events"), tool("delete_draft"), tool("frobnicate")],
            "nextCursor": "page-2",
        },
    })
}

struct Env {
    idp: TestIssuer,
    upstream: UpstreamServer,
    gw: TestGateway,
    audit_file: PathBuf,
}

/// Routes: `cal` (catch-all), `strict` (no catch-all), `batch` (batches on), `anon`
/// (anonymous with a public and a protected tool), `limited` (rate limit); audit to a file.
async fn env() -> Env {
    let idp = TestIssuer::start(vec![TestKey::es256("es-1")]).await;
    let upstream = UpstreamServer::start(upstream_behaviour).await;
    let builder = GatewayBuilder::new();
    let audit_file = builder.dir().join("audit.jsonl");
    let gw = builder
        .route(route("cal", &upstream, true))
        .route(route("strict", &upstream, false))
        .route(route("batch", &upstream, true).line("allow_batches = true"))
        .route(
            TestRoute::new("anon", "/anon/mcp", &upstream.url("/mcp"))
                .line(r#"issuers = ["idp"]"#)
                .line("allow_anonymous = true")
                .table("[routes.tools]\n\"get_weather\" = []\n\"set_alarm\" = [\"alarm:write\"]"),
        )
        .route(route("limited", &upstream, true).line("rate_limit = { per_second = 2, burst = 3 }"))
        .raw(&idp.toml("idp", &[]))
        .raw(&format!(
            "[audit]\nsink = \"file\"\nfile = {:?}",
            audit_file.display().to_string()
        ))
        .start()
        .await;
    wait_ready(&gw).await;
    Env {
        idp,
        upstream,
        gw,
        audit_file,
    }
}

async fn wait_ready(gw: &TestGateway) {
    let client = plain_client(HttpVersion::Auto);
    within(30, "gateway ready", async {
        while client
            .get(gw.admin_url("/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A token for route `id` with `scope`.
fn token(idp: &TestIssuer, id: &str, scope: &str) -> String {
    idp.token()
        .aud(&format!("{ORIGIN}/{id}/mcp"))
        .scope(scope)
        .sign()
}

fn call_body(id: u32, tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}).to_string()
}

/// POSTs `body` to route `id` as an MCP client, with optional bearer token and extra headers.
async fn post(
    gw: &TestGateway,
    id: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> reqwest::Response {
    let mut req = gw
        .client()
        .post(gw.url(&format!("/{id}/mcp")))
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        req = req.header("content-type", "application/json");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    within(15, "gateway answer", req.send())
        .await
        .expect("request to gateway")
}

#[tokio::test]
async fn policy_matrix_allows_denies_and_names_the_scopes_needed() {
    let env = env().await;
    // (route, token scopes, tool, scopes named in the 403 challenge; empty = allowed)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("cal", "mcp:tools calendar:read", "get_events", &[]),
        (
            "cal",
            "mcp:tools",
            "get_events",
            &["calendar:read", "mcp:tools"],
        ),
        ("cal", "mcp:tools calendar:admin", "delete_event", &[]),
        (
            "cal",
            "mcp:tools calendar:read",
            "delete_event",
            &["calendar:admin", "mcp:tools"],
        ),
        // An exact name beats the glob that also matches it.
        ("cal", "mcp:tools", "delete_draft", &[]),
        // The longer glob beats the shorter one: admin is not enough, owner is.
        (
            "cal",
            "mcp:tools calendar:admin",
            "delete_all_events",
            &["calendar:owner", "mcp:tools"],
        ),
        ("cal", "mcp:tools calendar:owner", "delete_all_events", &[]),
        // The catch-all is present: an unlisted tool needs its scopes.
        (
            "cal",
            "mcp:tools",
            "frobnicate",
            &["calendar:misc", "mcp:tools"],
        ),
        ("cal", "mcp:tools calendar:misc", "frobnicate", &[]),
        ("strict", "mcp:tools calendar:read", "get_events", &[]),
        // The route scope is needed for every call.
        (
            "cal",
            "calendar:read",
            "get_events",
            &["calendar:read", "mcp:tools"],
        ),
    ];
    let mut forwarded = 0;
    for (i, (route, scopes, tool, needed)) in cases.iter().enumerate() {
        let case = format!("#{i} {route} {tool} with [{scopes}]");
        let t = token(&env.idp, route, scopes);
        let resp = post(
            &env.gw,
            route,
            Some(&t),
            &[],
            &call_body(40 + i as u32, tool),
        )
        .await;
        if needed.is_empty() {
            assert_eq!(resp.status(), 200, "{case}");
            forwarded += 1;
            let last = env.upstream.requests().pop().expect("forwarded");
            assert_eq!(last.json().unwrap()["params"]["name"], *tool, "{case}");
        } else {
            assert_eq!(resp.status(), 403, "{case}");
            let c = challenge_of(&resp);
            assert_eq!(c.param("error"), Some("insufficient_scope"), "{case}");
            assert_eq!(
                c.param("resource_metadata"),
                Some(format!("{ORIGIN}/.well-known/oauth-protected-resource/{route}/mcp").as_str()),
                "{case}"
            );
            assert_eq!(c.scopes(), *needed, "{case}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(
                body["id"],
                40 + i as u32,
                "{case}: the JSON-RPC id is echoed"
            );
        }
        assert_eq!(
            env.upstream.requests().len(),
            forwarded,
            "{case}: upstream calls"
        );
    }
    // No catch-all: an unlisted tool is refused whatever the token holds.
    let all = "mcp:tools calendar:read calendar:admin calendar:owner calendar:misc";
    let resp = post(
        &env.gw,
        "strict",
        Some(&token(&env.idp, "strict", all)),
        &[],
        &call_body(99, "frobnicate"),
    )
    .await;
    assert_eq!(resp.status(), 403, "unlisted tool without a catch-all");
    assert!(
        resp.headers().get("www-authenticate").is_none(),
        "no scope would help"
    );
    assert_eq!(env.upstream.requests().len(), forwarded);
}

#[tokio::test]
async fn escaped_tool_name_is_matched_after_unescaping() {
    let env = env().await;
    let body = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"\u0064elete_event","arguments":{}}}"#;
    let weak = token(&env.idp, "cal", "mcp:tools calendar:read calendar:misc");
    let resp = post(&env.gw, "cal", Some(&weak), &[], body).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        challenge_of(&resp).scopes(),
        ["calendar:admin", "mcp:tools"]
    );
    assert!(env.upstream.requests().is_empty());
    let admin = token(&env.idp, "cal", "mcp:tools calendar:admin");
    let resp = post(&env.gw, "cal", Some(&admin), &[], body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        env.upstream.only_request().body,
        body.as_bytes(),
        "forwarded unchanged"
    );
}

#[tokio::test]
async fn bodies_the_gateway_could_read_differently_from_the_upstream_are_refused() {
    let env = env().await;
    let t = token(&env.idp, "cal", "mcp:tools calendar:read calendar:misc");
    let mut deep = String::from(
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_events","arguments":"#,
    );
    deep.push_str(&"{\"a\":".repeat(100));
    deep.push('1');
    deep.push_str(&"}".repeat(100));
    deep.push_str("}}");
    let batch = format!(
        "[{},{}]",
        call_body(1, "get_events"),
        call_body(2, "get_events")
    );
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u16);
    let cases: Vec<Case> = vec![
        (
            "duplicate name keys",
            vec![],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_events","name":"delete_event"}}"#.into(),
            400,
        ),
        ("array while batches are off", vec![], batch, 400),
        ("nesting beyond the limit", vec![], deep, 400),
        (
            "text/plain",
            vec![("content-type", "text/plain")],
            call_body(1, "get_events"),
            415,
        ),
        (
            "gzip",
            vec![("content-encoding", "gzip")],
            call_body(1, "get_events"),
            415,
        ),
    ];
    for (case, headers, body, status) in cases {
        let resp = post(&env.gw, "cal", Some(&t), &headers, &body).await;
        assert_eq!(resp.status(), status, "{case}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["error"]["code"].is_i64(),
            "{case}: JSON-RPC error {err}"
        );
        assert!(
            env.upstream.requests().is_empty(),
            "{case}: upstream called"
        );
    }

    // Mcp-Name must equal params.name (MCP 2026-07-28), with the JSON-RPC code for it.
    let resp = post(
        &env.gw,
        "cal",
        Some(&t),
        &[("mcp-method", "tools/call"), ("mcp-name", "get_events")],
        &call_body(8, "delete_event"),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], -32020, "{err}");
    assert!(env.upstream.requests().is_empty());
    let resp = post(
        &env.gw,
        "cal",
        Some(&t),
        &[("mcp-method", "tools/call"), ("mcp-name", "get_events")],
        &call_body(9, "get_events"),
    )
    .await;
    assert_eq!(resp.status(), 200, "matching headers pass");
    assert_eq!(env.upstream.requests().len(), 1);
}

/// JSON-RPC 2.0 §5: the error answers the request's id whenever it could be read. A
/// header mismatch is found after the body parsed, so the id is known.
#[tokio::test]
async fn header_mismatch_error_carries_the_request_id() {
    let env = env().await;
    let t = token(&env.idp, "cal", "mcp:tools calendar:read calendar:admin");
    let resp = post(
        &env.gw,
        "cal",
        Some(&t),
        &[("mcp-name", "get_events")],
        &call_body(8, "delete_event"),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], -32020, "{err}");
    assert_eq!(err["id"], 8, "{err}");
}

#[tokio::test]
async fn a_batch_with_one_denied_call_is_denied_whole() {
    let env = env().await;
    let t = token(&env.idp, "batch", "mcp:tools calendar:read");
    let mixed = format!(
        "[{},{}]",
        call_body(1, "get_events"),
        call_body(2, "delete_event")
    );
    let resp = post(&env.gw, "batch", Some(&t), &[], &mixed).await;
    assert_eq!(resp.status(), 403);
    assert!(
        challenge_of(&resp)
            .scopes()
            .contains(&"calendar:admin".to_string())
    );
    assert!(
        env.upstream.requests().is_empty(),
        "no part of the batch was forwarded"
    );
    let allowed = format!(
        "[{},{}]",
        call_body(3, "get_events"),
        call_body(4, "delete_draft")
    );
    let resp = post(&env.gw, "batch", Some(&t), &[], &allowed).await;
    assert_ne!(resp.status(), 403, "an all-allowed batch passes");
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(env.upstream.only_request().body, allowed.as_bytes());
}

#[tokio::test]
async fn tools_list_json_shows_only_usable_tools() {
    let env = env().await;
    let t = token(&env.idp, "cal", "mcp:tools calendar:read");
    let resp = post(
        &env.gw,
        "cal",
        Some(&t),
        &[],
        r#"{"jsonrpc":"2.0","id":11,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get_events", "delete_draft"]);
    assert_eq!(body["id"], 11);
    assert_eq!(body["result"]["nextCursor"], "page-2", "other members kept");
    assert_eq!(
        body["result"]["tools"][0]["description"],
        "the get_events tool"
    );
    // With more scopes, more tools.
    let t = token(
        &env.idp,
        "cal",
        "mcp:tools calendar:read calendar:admin calendar:owner calendar:misc",
    );
    let body: Value = post(
        &env.gw,
        "cal",
        Some(&t),
        &[],
        r#"{"jsonrpc":"2.0","id":12,"method":"tools/list"}"#,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["result"]["tools"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn tools_list_in_sse_is_filtered_event_by_event_while_streaming() {
    let idp = TestIssuer::start(vec![TestKey::es256("es-1")]).await;
    let gate = Gate::new();
    let finished = Arc::new(Notify::new());
    let first = sse_event(
        1,
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#,
    );
    let list_event = sse_event(2, &tools_list(&json!(21)).to_string());
    let trailing = sse_event(
        3,
        r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"bye"}}"#,
    );
    let upstream = {
        let (gate, finished, first, rest) = (
            gate.clone(),
            finished.clone(),
            first.clone(),
            [list_event.clone(), trailing.clone()],
        );
        UpstreamServer::start(move |_| {
            Reply::sse_gated(std::slice::from_ref(&first), &gate, &rest, &finished)
        })
        .await
    };
    let gw = GatewayBuilder::new()
        .route(route("cal", &upstream, true))
        .raw(&idp.toml("idp", &[]))
        .start()
        .await;
    wait_ready(&gw).await;
    let upstream_done = finished.notified();
    tokio::pin!(upstream_done);

    let t = token(&idp, "cal", "mcp:tools calendar:read");
    let mut resp = post(
        &gw,
        "cal",
        Some(&t),
        &[],
        r#"{"jsonrpc":"2.0","id":21,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut received = Vec::new();
    within(10, "first SSE event through the gateway", async {
        while received.len() < first.len() {
            let chunk = resp.chunk().await.unwrap().expect("stream still open");
            received.extend_from_slice(&chunk);
        }
    })
    .await;
    assert_eq!(
        String::from_utf8_lossy(&received),
        first,
        "first event byte for byte"
    );
    assert!(
        futures_util::FutureExt::now_or_never(upstream_done.as_mut()).is_none(),
        "the upstream still holds the stream open"
    );
    gate.open();
    within(10, "rest of the SSE stream", async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            received.extend_from_slice(&chunk);
        }
    })
    .await;
    let text = String::from_utf8(received).unwrap();
    assert!(text.starts_with(&first));
    assert!(
        text.ends_with(&trailing),
        "trailing event byte for byte:\n{text}"
    );
    let middle = &text[first.len()..text.len() - trailing.len()];
    assert_ne!(middle, list_event, "the list event was filtered");
    let data: String = middle
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect::<Vec<_>>()
        .join("\n");
    let msg: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {middle:?}"));
    assert_eq!(msg["id"], 21);
    let names: Vec<&str> = msg["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get_events", "delete_draft"]);
    assert!(
        middle.starts_with("id: 2\n"),
        "event fields kept: {middle:?}"
    );
}

#[tokio::test]
async fn sessions_are_bound_to_the_subject_not_the_token() {
    let env = env().await;
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let alice = token(&env.idp, "cal", "mcp:tools calendar:read");
    let resp = post(&env.gw, "cal", Some(&alice), &[], init).await;
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(session, UPSTREAM_SESSION, "the client sees a sealed id");

    let bob = env
        .idp
        .token()
        .aud(&format!("{ORIGIN}/cal/mcp"))
        .sub("bob")
        .scope("mcp:tools calendar:read")
        .sign();
    let call = call_body(2, "get_events");
    let resp = post(
        &env.gw,
        "cal",
        Some(&bob),
        &[("mcp-session-id", &session)],
        &call,
    )
    .await;
    assert_eq!(resp.status(), 404, "another subject's session is not found");
    assert_eq!(
        env.upstream.requests().len(),
        1,
        "only initialize reached the upstream"
    );

    // Alice refreshed her token: a new token, the same subject.
    let refreshed = token(&env.idp, "cal", "mcp:tools calendar:read");
    assert_ne!(refreshed, alice);
    assert_eq!(payload_of(&refreshed)["sub"], payload_of(&alice)["sub"]);
    let resp = post(
        &env.gw,
        "cal",
        Some(&refreshed),
        &[("mcp-session-id", &session)],
        &call,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = env.upstream.requests().pop().unwrap();
    assert_eq!(seen.header("mcp-session-id"), Some(UPSTREAM_SESSION));
}

#[tokio::test]
async fn anonymous_route_serves_public_tools_and_challenges_for_the_rest() {
    let env = env().await;
    let resp = post(&env.gw, "anon", None, &[], &call_body(1, "get_weather")).await;
    assert_eq!(resp.status(), 200, "public tool without a token");
    assert_eq!(env.upstream.requests().len(), 1);

    let resp = post(&env.gw, "anon", None, &[], &call_body(2, "set_alarm")).await;
    assert_eq!(resp.status(), 401, "protected tool without a token");
    let c = challenge_of(&resp);
    assert_eq!(c.param("error"), None, "no credentials: no error code");
    assert_eq!(c.scopes(), ["alarm:write"]);
    assert_eq!(
        c.param("resource_metadata"),
        Some(format!("{ORIGIN}/.well-known/oauth-protected-resource/anon/mcp").as_str())
    );

    // A bad token is never treated as no token.
    let good = token(&env.idp, "anon", "alarm:write");
    let mut claims = payload_of(&good);
    claims["sub"] = json!("mallory");
    for bad in [
        with_payload(&good, &claims),
        env.idp
            .token()
            .aud(&format!("{ORIGIN}/anon/mcp"))
            .exp_in(-3600)
            .sign(),
    ] {
        let resp = post(
            &env.gw,
            "anon",
            Some(&bad),
            &[],
            &call_body(3, "get_weather"),
        )
        .await;
        assert_eq!(resp.status(), 401);
        assert_eq!(challenge_of(&resp).param("error"), Some("invalid_token"));
    }
    assert_eq!(env.upstream.requests().len(), 1);

    let resp = post(
        &env.gw,
        "anon",
        Some(&good),
        &[],
        &call_body(4, "set_alarm"),
    )
    .await;
    assert_eq!(resp.status(), 200, "signed in with the scope");
    assert_eq!(env.upstream.requests().len(), 2);
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_gets_429_then_recovers() {
    let env = env().await;
    let t = token(&env.idp, "limited", "mcp:tools calendar:read");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..20 {
        let resp = post(
            &env.gw,
            "limited",
            Some(&t),
            &[],
            &call_body(i, "get_events"),
        )
        .await;
        if resp.status() == 429 {
            let v = resp.headers()["retry-after"].to_str().unwrap().to_string();
            retry_after = Some(v.parse::<u64>().expect("Retry-After in seconds"));
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(
        statuses[..3],
        [200, 200, 200],
        "the burst passes: {statuses:?}"
    );
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited > 0, "{statuses:?}");
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok + limited, statuses.len(), "{statuses:?}");
    assert_eq!(
        env.upstream.requests().len(),
        ok,
        "refused calls never reach the upstream"
    );
    let wait = retry_after.unwrap();
    assert!(wait >= 1);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    within(10, "rate limit recovers", async {
        while post(
            &env.gw,
            "limited",
            Some(&t),
            &[],
            &call_body(99, "get_events"),
        )
        .await
        .status()
            != 200
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let m = env.gw.metrics().await;
    assert_eq!(
        m.count("mcpgate_rate_limited_total", &[("route", "limited")]),
        limited as f64
    );
}

#[tokio::test]
async fn audit_lines_are_json_with_decision_and_reason_and_never_a_token() {
    let env = env().await;
    let allowed = token(&env.idp, "cal", "mcp:tools calendar:read");
    let denied = token(&env.idp, "cal", "mcp:tools");
    let mut claims = payload_of(&allowed);
    claims["scope"] = json!("mcp:tools calendar:admin");
    let forged = with_payload(&allowed, &claims);
    let body = call_body(1, "get_events");
    assert_eq!(
        post(&env.gw, "cal", Some(&allowed), &[], &body)
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&env.gw, "cal", Some(&denied), &[], &body)
            .await
            .status(),
        403
    );
    assert_eq!(
        post(&env.gw, "cal", Some(&forged), &[], &body)
            .await
            .status(),
        401
    );
    assert_eq!(post(&env.gw, "cal", None, &[], &body).await.status(), 401);
    let lines = within(10, "four audit lines", async {
        loop {
            let text = std::fs::read_to_string(&env.audit_file).unwrap_or_default();
            if text.lines().count() >= 4 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let events: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for e in &events {
        assert!(e["decision"].is_string() && e["reason"].is_string(), "{e}");
    }
    let find = |decision: &str, reason: &str| {
        events
            .iter()
            .find(|e| e["decision"] == decision && e["reason"] == reason)
            .unwrap_or_else(|| panic!("no {decision}/{reason} event in {events:#?}"))
    };
    let allow = find("allow", "allowed");
    assert_eq!(allow["subject"], "alice");
    assert_eq!(allow["target"], "get_events");
    assert!(allow["token_fp"].is_string());
    let deny = find("deny", "missing_scope");
    assert_eq!(
        deny["required_scopes"],
        json!(["mcp:tools", "calendar:read"])
    );
    find("deny", "bad_signature");
    find("deny", "no_credentials");
    for (name, t) in [
        ("allowed", &allowed),
        ("denied", &denied),
        ("forged", &forged),
    ] {
        assert!(!lines.contains(t.as_str()), "{name} token in the audit log");
        assert!(
            !lines.contains(t.rsplit('.').next().unwrap()),
            "{name} signature in the audit log"
        );
    }
}

#[tokio::test]
async fn metrics_count_jsonrpc_decisions_and_tool_calls_by_configured_name() {
    let env = env().await;
    let t = token(&env.idp, "cal", "mcp:tools calendar:read");
    let before = env.gw.metrics().await;
    for (tool, status) in [
        ("get_events", 200),
        ("get_events", 200),
        ("delete_event", 403),
        ("frobnicate", 403),
        ("delete_draft", 200),
    ] {
        let resp = post(&env.gw, "cal", Some(&t), &[], &call_body(1, tool)).await;
        assert_eq!(resp.status(), status, "{tool}");
    }
    let list = post(
        &env.gw,
        "cal",
        Some(&t),
        &[],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(list.status(), 200);
    let after = env.gw.metrics().await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.count(name, labels) - before.count(name, labels)
    };
    let rpc = |method: &'static str, decision: &'static str| {
        delta(
            "mcpgate_jsonrpc_total",
            &[("route", "cal"), ("method", method), ("decision", decision)],
        )
    };
    assert_eq!(rpc("tools/call", "allow"), 3.0);
    assert_eq!(rpc("tools/call", "deny"), 2.0);
    assert_eq!(rpc("tools/list", "allow"), 1.0);
    let tool = |tool: &'static str, decision: &'static str| {
        delta(
            "mcpgate_tool_calls_total",
            &[("route", "cal"), ("tool", tool), ("decision", decision)],
        )
    };
    assert_eq!(tool("get_events", "allow"), 2.0);
    assert_eq!(tool("delete_draft", "allow"), 1.0);
    // Glob matches and unlisted names are "other": labels never come from the wire.
    assert_eq!(tool("other", "deny"), 2.0);
    assert!(!after.0.contains("tool=\"frobnicate\""));
    assert!(!after.0.contains("tool=\"delete_event\""));
}
