//! Forwarding: what reaches the upstream, what comes back, and how failures look to a client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use serde_json::Value;
use tokio::sync::Notify;

/// A gateway with one anonymous route `/mcp` in front of `upstream`'s `/mcp`.
async fn gateway_for(upstream: &UpstreamServer) -> TestGateway {
    gateway_to(&upstream.url("/mcp")).await
}

/// A gateway with one anonymous route `/mcp` in front of `upstream_url`.
async fn gateway_to(upstream_url: &str) -> TestGateway {
    GatewayBuilder::new()
        .route(TestRoute::anonymous("r", "/mcp", upstream_url))
        .start()
        .await
}

#[tokio::test]
async fn post_jsonrpc_body_and_status_pass_through_byte_for_byte() {
    // Odd spacing, escapes and non-ASCII: any re-serialisation on the way would show.
    const REQUEST: &str = "{\"jsonrpc\":\"2.0\", \"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"h\\u00e9llo  \u{2713}\"}}}";
    const OK_REPLY: &str = "{ \"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"\u{2713}\"}]} }";
    const ERR_REPLY: &str =
        "{\"jsonrpc\":\"2.0\",\"id\":8,\"error\":{\"code\":-32602,\"message\":\"Unknown tool\"}}";
    let upstream = UpstreamServer::start(|req| {
        if req.json().and_then(|m| m.get("id").cloned()) == Some(Value::from(8)) {
            Reply::bytes(400, "application/json", ERR_REPLY)
        } else {
            Reply::bytes(200, "application/json", OK_REPLY)
        }
    })
    .await;
    let gw = gateway_for(&upstream).await;

    let resp = gw.post_json("/mcp", REQUEST).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.bytes().await.unwrap(), Bytes::from(OK_REPLY));
    let seen = upstream.only_request();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/mcp");
    assert_eq!(seen.body, Bytes::from(REQUEST));

    let resp = gw
        .post_json("/mcp", r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#)
        .await;
    assert_eq!(resp.status(), 400, "upstream status passes through");
    assert_eq!(resp.bytes().await.unwrap(), Bytes::from(ERR_REPLY));
}

#[tokio::test]
async fn sse_first_event_arrives_before_upstream_finishes() {
    let gate = Gate::new();
    let finished = Arc::new(Notify::new());
    let first = sse_event(1, r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#);
    let rest = [
        sse_event(2, r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#),
        sse_event(3, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
    ];
    let upstream = {
        let (gate, finished, first, rest) =
            (gate.clone(), finished.clone(), first.clone(), rest.clone());
        UpstreamServer::start(move |_| {
            Reply::sse_gated(std::slice::from_ref(&first), &gate, &rest, &finished)
        })
        .await
    };
    let gw = gateway_for(&upstream).await;
    let upstream_done = finished.notified();
    tokio::pin!(upstream_done);

    let mut resp = gw
        .post_json("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");

    // The upstream holds the stream open behind the gate, so the first event can only reach
    // the client now if the gateway streams instead of buffering.
    let mut received = Vec::new();
    within(5, "first SSE event through the gateway", async {
        while received.len() < first.len() {
            let chunk = resp.chunk().await.unwrap().expect("stream still open");
            received.extend_from_slice(&chunk);
        }
    })
    .await;
    assert_eq!(String::from_utf8_lossy(&received), first);
    assert!(
        futures_util::FutureExt::now_or_never(upstream_done.as_mut()).is_none(),
        "the upstream must still hold the stream open"
    );

    gate.open();
    within(5, "rest of the SSE stream", async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            received.extend_from_slice(&chunk);
        }
    })
    .await;
    assert_eq!(
        String::from_utf8_lossy(&received),
        format!("{first}{}{}", rest[0], rest[1])
    );
}

#[tokio::test]
async fn get_stream_and_delete_pass_mcp_session_id_both_ways() {
    let upstream = UpstreamServer::start(|req| {
        let reply = common::upstream::mcp_behaviour(req);
        match req.json() {
            Some(m) if m["method"] == "initialize" => {
                reply.header("mcp-session-id", "up-session-1")
            }
            _ => reply,
        }
    })
    .await;
    let gw = gateway_for(&upstream).await;

    // The upstream's session id reaches the client (sealed by the gateway to the caller).
    let session = gw.open_session("/mcp").await;

    let resp = gw
        .client()
        .get(gw.url("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = within(5, "GET stream body", resp.text()).await.unwrap();
    assert!(body.contains("notifications/ping"), "stream body: {body:?}");

    let resp = gw
        .client()
        .delete(gw.url("/mcp"))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    let methods: Vec<&str> = seen.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["POST", "GET", "DELETE"]);
    for r in &seen[1..] {
        assert_eq!(
            r.header("mcp-session-id"),
            Some("up-session-1"),
            "{}",
            r.method
        );
    }
    assert_eq!(seen[1].header("accept"), Some("text/event-stream"));
}

#[tokio::test]
async fn caller_credentials_and_listed_headers_never_reach_upstream() {
    const KEY: &str = "test-key-0123456789abcdef";
    let upstream = UpstreamServer::mcp().await;
    let builder = GatewayBuilder::new();
    let key_file = builder.dir().join("upstream-key");
    std::fs::write(&key_file, "gateway-held-key").unwrap();
    let gw = builder
        .route(
            TestRoute::new("r", "/mcp", &upstream.url("/upstream/mcp"))
                .line(r#"strip_headers = ["X-Internal"]"#)
                .line(r#"identity_headers = { subject = "X-Mcp-Subject" }"#)
                .line(&format!(
                    r#"upstream_headers = [{{ name = "X-Api-Key", value_file = "{}" }}]"#,
                    key_file.display()
                ))
                .api_key(KEY, "ci-bot", &[]),
        )
        .start()
        .await;

    let resp = gw
        .client()
        .post(gw.url("/mcp"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("cookie", "session=secret")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-internal", "do-not-forward")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "gopher")
        .header("forwarded", "for=6.6.6.6")
        .header("x-mcp-subject", "admin")
        .header("x-api-key", "client-chosen")
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let seen = upstream.only_request();
    for gone in [
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-internal",
        "forwarded",
    ] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    let gw_authority = gw.public_addr.to_string();
    assert_eq!(seen.header("x-forwarded-host"), Some(gw_authority.as_str()));
    let up_authority = upstream.addr.to_string();
    assert_eq!(seen.header("host"), Some(up_authority.as_str()));
    assert_eq!(seen.uri, "/upstream/mcp");
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    // Headers the gateway writes replace the client's, and appear once.
    for (name, value) in [
        ("x-mcp-subject", "ci-bot"),
        ("x-api-key", "gateway-held-key"),
    ] {
        let values: Vec<_> = seen.headers.get_all(name).iter().collect();
        assert_eq!(values, [value], "{name}");
    }
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_removed() {
    let upstream = UpstreamServer::mcp().await;
    let gw = gateway_for(&upstream).await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let request = http1_post(
        "/mcp",
        &[
            "Connection: x-foo, keep-alive",
            "X-Foo: connection-scoped",
            "Keep-Alive: timeout=5",
            "TE: trailers",
            "Upgrade: websocket",
            "Proxy-Connection: keep-alive",
            "Content-Type: application/json",
            "X-Kept: end-to-end",
        ],
        body,
    );
    let resp = raw::request(gw.public_addr, &request).await;
    assert_eq!(
        resp.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&resp.body)
    );

    let seen = upstream.only_request();
    for gone in [
        "x-foo",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "transfer-encoding",
    ] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream");
    }
    // hyper's client may add its own `connection` header; the client's must not survive.
    let connection = seen.header("connection").unwrap_or("");
    assert!(!connection.contains("x-foo"), "connection: {connection:?}");
    assert_eq!(seen.header("x-kept"), Some("end-to-end"));
    assert_eq!(seen.body, Bytes::from(body));
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    let upstream = UpstreamServer::start(|req| {
        Reply::echo(req)
            .header("connection", "x-up")
            .header("x-up", "connection-scoped")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("proxy-authenticate", "Basic realm=\"upstream\"")
            .header("upgrade", "h2c")
            .header("x-kept", "end-to-end")
    })
    .await;
    let gw = gateway_for(&upstream).await;
    let resp = raw::request(
        gw.public_addr,
        &http1_post(
            "/mcp",
            &["Content-Type: application/json"],
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
        ),
    )
    .await;
    assert_eq!(resp.status, 200);
    for gone in [
        "x-up",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "upgrade",
    ] {
        assert_eq!(resp.header(gone), None, "{gone} reached the client");
    }
    let connection = resp.header("connection").unwrap_or("");
    assert!(!connection.contains("x-up"), "connection: {connection:?}");
    assert_eq!(resp.header("x-kept"), Some("end-to-end"));
    assert_eq!(resp.json()["id"], 3);
}

#[tokio::test]
async fn mcp_protocol_headers_and_query_are_forwarded() {
    let upstream = UpstreamServer::start(|req| {
        let reply = common::upstream::mcp_behaviour(req);
        match req.json() {
            Some(m) if m["method"] == "initialize" => reply.header("mcp-session-id", "sess-42"),
            _ => reply,
        }
    })
    .await;
    let gw = GatewayBuilder::new()
        .route(TestRoute::anonymous("r", "/gw/mcp", &upstream.url("/mcp")))
        .start()
        .await;
    let session = gw.open_session("/gw/mcp").await;
    let resp = gw
        .client()
        .post(gw.url("/gw/mcp?tenant=a%20b"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .header("last-event-id", "evt-9")
        .body(r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], "a");

    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.uri, "/mcp?tenant=a%20b");
    assert_eq!(seen.header("mcp-session-id"), Some("sess-42"));
    assert_eq!(seen.header("mcp-protocol-version"), Some("2025-06-18"));
    assert_eq!(seen.header("last-event-id"), Some("evt-9"));
    assert_eq!(
        seen.header("accept"),
        Some("application/json, text/event-stream")
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn body_over_limit_is_refused_with_413() {
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .server(r#"max_body = "4KiB""#)
        .route(
            TestRoute::anonymous("small", "/small", &upstream.url("/mcp"))
                .line(r#"max_body = "1KiB""#),
        )
        .route(TestRoute::anonymous("big", "/big", &upstream.url("/mcp")))
        .start()
        .await;
    let padded = |len: usize| {
        let pad = "x".repeat(len - 60);
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"p":"{pad}"}}}}"#);
        assert!(body.len() >= len - 10 && body.len() <= len + 10);
        body
    };

    // Declared length over the server-wide limit.
    let resp = gw.post_json("/big", &padded(5000)).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], -32600);

    // The route's own, smaller limit wins over the server default.
    let resp = gw.post_json("/small", &padded(2000)).await;
    assert_eq!(resp.status(), 413);
    let resp = gw.post_json("/big", &padded(2000)).await;
    assert_eq!(resp.status(), 200, "2 KB is within the server-wide 4 KiB");
    assert_eq!(upstream.requests().len(), 1);

    // No Content-Length: a chunked body is cut off once it passes the limit.
    let body = padded(2000);
    let (a, b) = body.split_at(1000);
    let chunked = format!(
        "POST /small HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let resp = raw::request(gw.public_addr, &chunked).await;
    assert_eq!(resp.status, 413);
    assert_eq!(
        upstream.requests().len(),
        1,
        "refused bodies never reach the upstream"
    );
}

#[tokio::test]
async fn upstream_down_gives_502_with_jsonrpc_error_and_request_id() {
    let gw = GatewayBuilder::new()
        .route(
            TestRoute::anonymous("r", "/mcp", &upstream_down("/mcp"))
                .line(r#"connect_timeout = "2s""#),
        )
        .start()
        .await;
    let resp = gw
        .post_json(
            "/mcp",
            r#"{"jsonrpc":"2.0","id":"call-17","method":"tools/list"}"#,
        )
        .await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], "call-17", "the caller's id comes back");
    assert!(body["error"]["code"].is_i64(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(body["error"]["data"]["request_id"], request_id.as_str());
    assert!(!request_id.is_empty());
}

#[tokio::test]
async fn slow_upstream_gives_504() {
    let upstream =
        UpstreamServer::start(|req| Reply::echo(req).delayed(Duration::from_secs(5))).await;
    let gw = GatewayBuilder::new()
        .route(
            TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp"))
                .line(r#"upstream_timeout = "500ms""#),
        )
        .start()
        .await;
    let resp = within(
        4,
        "gateway answer to a slow upstream",
        gw.post_json("/mcp", r#"{"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#),
    )
    .await;
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 99);
    assert!(body["error"]["data"]["request_id"].is_string());
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn traversal_and_ambiguous_paths_are_refused_with_400() {
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .route(TestRoute::anonymous("r", "/a/mcp", &upstream.url("/mcp")).line("subpaths = true"))
        .start()
        .await;
    for path in [
        "/a/mcp/../../admin",
        "/a/../b",
        "/a/mcp/%2e%2e/x",
        "/x%2Fy",
        "/a/mcp/x%2Fy",
        "/a/mcp/x%5cy",
        "//mcp",
        "/a//mcp",
        "/a/mcp/./x",
    ] {
        let resp = raw::request(
            gw.public_addr,
            &http1_post(
                path,
                &["Content-Type: application/json"],
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            ),
        )
        .await;
        assert_eq!(resp.status, 400, "{path}");
        assert_eq!(resp.json()["error"]["code"], -32600, "{path}");
    }
    assert!(upstream.requests().is_empty(), "{:#?}", upstream.requests());

    // The same route still works for a clean sub-path.
    let resp = raw::request(
        gw.public_addr,
        &http1_post(
            "/a/mcp/x",
            &["Content-Type: application/json"],
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(upstream.only_request().uri, "/mcp/x");
}

#[tokio::test]
async fn unknown_path_is_404_json() {
    let upstream = UpstreamServer::mcp().await;
    let gw = gateway_for(&upstream).await;
    for path in ["/nope", "/mcp/sub", "/mc", "/"] {
        let resp = gw
            .post_json(path, r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#)
            .await;
        assert_eq!(resp.status(), 404, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].is_object(), "{path}: {body}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn sane_request_id_is_echoed_and_insane_one_replaced() {
    let upstream = UpstreamServer::mcp().await;
    let gw = gateway_for(&upstream).await;
    let send = |id: String| {
        gw.client()
            .post(gw.url("/mcp"))
            .header("x-request-id", id)
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
    };

    let resp = send("trace-abc.123:XYZ_9".into()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "trace-abc.123:XYZ_9");

    for insane in [
        "a\" level=error x=\"".to_string(),
        "x".repeat(65),
        "has space".to_string(),
    ] {
        let resp = send(insane.clone()).await.unwrap();
        let got = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(got, insane);
        assert!(!got.is_empty() && got.len() <= 64, "{got:?}");
        assert!(
            got.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)),
            "{got:?}"
        );
    }

    // Without one, the gateway mints a fresh id per request.
    let a = gw
        .post_json("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .await;
    let b = gw
        .post_json("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .await;
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
}

#[tokio::test]
async fn body_of_exactly_the_limit_is_accepted() {
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .route(
            TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")).line(r#"max_body = "1KiB""#),
        )
        .start()
        .await;
    let body_of = |len: usize| {
        let head = r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"p":""#;
        let tail = r#""}}"#;
        let body = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
        assert_eq!(body.len(), len);
        body
    };
    assert_eq!(gw.post_json("/mcp", &body_of(1024)).await.status(), 200);
    assert_eq!(gw.post_json("/mcp", &body_of(1025)).await.status(), 413);
    // The same boundary holds when no length is declared up front.
    for (len, status) in [(1024, 200), (1025, 413)] {
        let body = body_of(len);
        let chunked = format!(
            "POST /mcp HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        assert_eq!(
            raw::request(gw.public_addr, &chunked).await.status,
            status,
            "{len} bytes chunked"
        );
    }
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn upstream_that_closes_without_answering_gives_502() {
    // Accepts, reads the request, then closes the connection without a response.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await;
            });
        }
    });
    let gw = gateway_to(&format!("http://{addr}/mcp")).await;
    let resp = gw
        .post_json("/mcp", r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#)
        .await;
    assert_eq!(resp.status(), 502);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 4);
    assert_eq!(body["error"]["data"]["request_id"], request_id.as_str());
    let m = gw.metrics().await;
    assert_eq!(
        m.count(
            "mcpgate_upstream_errors_total",
            &[("route", "r"), ("kind", "reset")]
        ),
        1.0,
        "{}",
        m.0
    );
}

#[tokio::test]
async fn upstream_receives_the_request_id_the_client_sees() {
    let upstream = UpstreamServer::mcp().await;
    let gw = gateway_for(&upstream).await;
    for sent in [Some("trace-1"), Some("bad id \" injected"), None] {
        let mut req = gw
            .client()
            .post(gw.url("/mcp"))
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let resp = req.send().await.unwrap();
        let seen_by_client = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let requests = upstream.requests();
        let at_upstream = requests.last().unwrap();
        assert_eq!(
            at_upstream.header("x-request-id"),
            Some(seen_by_client.as_str()),
            "client sent {sent:?}: logs on both sides must correlate"
        );
    }
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_across_requests_and_streams() {
    let upstream = UpstreamServer::mcp().await;
    let gw = gateway_for(&upstream).await;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let notification = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    for (body, status) in [(ping, 200), (notification, 202), (ping, 200)] {
        let resp = gw.post_json("/mcp", body).await;
        assert_eq!(resp.status(), status);
        resp.bytes().await.unwrap();
    }
    let stream = gw
        .client()
        .get(gw.url("/mcp"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(String::from_utf8_lossy(&stream.bytes().await.unwrap()).contains("notifications/ping"));
    assert_eq!(gw.post_json("/mcp", ping).await.status(), 200);
    let connections: Vec<usize> = upstream.requests().iter().map(|r| r.connection).collect();
    assert_eq!(
        connections, [0; 5],
        "one upstream connection carried every exchange"
    );
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_costs_no_request() {
    // Answers one request per connection with a keep-alive response, then closes it shortly
    // after, as an upstream's own idle timeout does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = sock.read(&mut buf).await;
                let body = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(format!("{head}{body}").as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    let gw = gateway_to(&format!("http://{addr}/mcp")).await;
    for _ in 0..3 {
        let resp = gw
            .post_json("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .await;
        assert_eq!(resp.status(), 200, "a closed pooled connection is replaced");
        resp.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn every_upstream_body_framing_reaches_the_client_intact() {
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
    let responses = [
        // An interim 100, then a body delimited by the connection's close.
        format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{body}"
        ),
        // Chunked, with a chunk extension and a trailer the gateway drops.
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
             5;x=1\r\n{}\r\n{:x}\r\n{}\r\n0\r\nx-trailer: 1\r\n\r\n",
            &body[..5],
            body.len() - 5,
            &body[5..]
        ),
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    ];
    let upstream =
        WireUpstream::start(responses.iter().map(|r| r.clone().into_bytes()).collect()).await;
    let gw = gateway_to(&upstream.url("/mcp")).await;
    for (i, _) in responses.iter().enumerate() {
        let resp = gw
            .post_json("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .await;
        assert_eq!(resp.status(), 200, "response {i}");
        assert!(resp.headers().get("x-trailer").is_none());
        assert_eq!(resp.text().await.unwrap(), body, "response {i}");
    }
    // The request head the gateway wrote: its own host and framing, no caller credential.
    let wire = &upstream.requests()[0];
    let head = wire.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with(&format!(
            "post /mcp http/1.1\r\nhost: {}\r\n",
            upstream.addr
        )),
        "{head}"
    );
    assert!(head.contains("\r\ncontent-length: 40"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
}

#[tokio::test]
async fn malformed_upstream_responses_give_502_and_nothing_of_them() {
    let responses = [
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd".to_string(),
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nxyz".to_string(),
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n".to_string(),
        "SSH-2.0-OpenSSH_9.6\r\n\r\n".to_string(),
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        ),
    ];
    let count = responses.len();
    let upstream =
        WireUpstream::start(responses.into_iter().map(String::into_bytes).collect()).await;
    let gw = gateway_to(&upstream.url("/mcp")).await;
    for i in 0..count {
        let resp = gw
            .post_json("/mcp", r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#)
            .await;
        assert_eq!(resp.status(), 502, "response {i}");
        assert!(resp.headers().get("x-big").is_none());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["id"], 9, "response {i}");
    }
}
