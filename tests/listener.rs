//! The public listener: TLS and ALPN, connection timeouts and limits, graceful shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::Version;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// Handshakes with `alpn` offered and returns the protocol the server chose.
async fn negotiated_alpn(ca: &TestCa, gw: &TestGateway, alpn: &[&[u8]]) -> Option<Vec<u8>> {
    let tcp = TcpStream::connect(gw.public_addr).await.unwrap();
    let connector = TlsConnector::from(ca.rustls_config(alpn));
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within(5, "TLS handshake", connector.connect(name, tcp))
        .await
        .expect("TLS handshake succeeds");
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

async fn tls_serves_both_protocols(kind: KeyKind) {
    let ca = TestCa::new();
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .tls(ca.server_cert(kind))
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start_tls(&ca)
        .await;

    assert_eq!(
        negotiated_alpn(&ca, &gw, &[b"h2", b"http/1.1"])
            .await
            .as_deref(),
        Some(&b"h2"[..]),
        "{kind:?}: h2 preferred"
    );
    assert_eq!(
        negotiated_alpn(&ca, &gw, &[b"http/1.1"]).await.as_deref(),
        Some(&b"http/1.1"[..]),
        "{kind:?}"
    );
    assert_eq!(negotiated_alpn(&ca, &gw, &[]).await, None, "{kind:?}");

    for (client_version, expected) in [
        (HttpVersion::Http1, Version::HTTP_11),
        (HttpVersion::Http2, Version::HTTP_2),
        (HttpVersion::Auto, Version::HTTP_2),
    ] {
        let resp = ca
            .client(client_version)
            .post(gw.url("/mcp"))
            .header("content-type", "application/json")
            .body(PING)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{kind:?} {client_version:?}: {e}"));
        assert_eq!(resp.version(), expected, "{kind:?} {client_version:?}");
        assert_eq!(resp.status(), 200, "{kind:?} {client_version:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["id"], 1);
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    let authority = gw.public_addr.to_string();
    for r in &seen {
        assert_eq!(r.header("x-forwarded-proto"), Some("https"));
        // HTTP/2 has no Host header: the gateway forwards :authority instead.
        assert_eq!(r.header("x-forwarded-host"), Some(authority.as_str()));
    }
}

#[tokio::test]
async fn tls_with_rsa_key_negotiates_h2_and_http1() {
    tls_serves_both_protocols(KeyKind::Rsa).await;
}

#[tokio::test]
async fn tls_with_ecdsa_p256_key_negotiates_h2_and_http1() {
    tls_serves_both_protocols(KeyKind::EcdsaP256).await;
}

#[tokio::test]
async fn tls_with_ed25519_key_negotiates_h2_and_http1() {
    tls_serves_both_protocols(KeyKind::Ed25519).await;
}

#[tokio::test]
async fn tls_handshake_that_never_starts_is_closed_after_header_read_timeout() {
    let ca = TestCa::new();
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .tls(ca.server_cert(KeyKind::EcdsaP256))
        .server(r#"header_read_timeout = "1s""#)
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start_tls(&ca)
        .await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    assert_eq!(
        conn.closed_within(Duration::from_secs(5)).await,
        Closed::Yes
    );
    assert_eq!(tls_failures(&gw.metrics().await), (0.0, 1.0));
}

/// `mcpgate_tls_handshake_failures_total` as (error, timeout).
fn tls_failures(metrics: &MetricsText) -> (f64, f64) {
    let count = |reason| {
        metrics.count(
            "mcpgate_tls_handshake_failures_total",
            &[("reason", reason)],
        )
    };
    (count("error"), count("timeout"))
}

/// A gateway with a 1 s header-read timeout in front of an MCP upstream.
async fn one_second_header_timeout() -> (UpstreamServer, TestGateway) {
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .server(r#"header_read_timeout = "1s""#)
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start()
        .await;
    (upstream, gw)
}

#[tokio::test]
async fn slow_request_headers_are_closed_after_header_read_timeout() {
    let (upstream, gw) = one_second_header_timeout().await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    conn.send(b"POST /mcp HTT").await;
    // The default (10 s) would outlast this wait: only the configured 1 s closes it in time.
    assert_eq!(
        conn.closed_within(Duration::from_secs(5)).await,
        Closed::Yes
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_request_head_that_trickles_in_is_closed_after_header_read_timeout() {
    let (upstream, gw) = one_second_header_timeout().await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    conn.send(b"POST /mcp HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        .await;
    // A byte every 100 ms for up to 5 s: never quiet, so only the header timeout can end it.
    let mut closed = Closed::No;
    for _ in 0..50 {
        conn.send(b"a").await;
        closed = conn.closed_within(Duration::from_millis(100)).await;
        if closed == Closed::Yes {
            break;
        }
    }
    assert_eq!(closed, Closed::Yes);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout_but_busy_streams_are_not() {
    let upstream = UpstreamServer::start(|req| {
        if req.method == "GET" {
            let events: Vec<String> = (1..=6).map(|i| sse_event(i, "{}")).collect();
            Reply::sse(&events, Duration::from_millis(400))
        } else {
            Reply::echo(req)
        }
    })
    .await;
    let gw = GatewayBuilder::new()
        // The header timer also runs while a kept connection waits for its next request
        // (until it parks); keep it out of the way so that only idle_timeout can close one.
        .server(r#"header_read_timeout = "30s""#)
        .server(r#"idle_timeout = "1s""#)
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start()
        .await;

    let mut keep_alive = RawConn::connect(gw.public_addr).await;
    keep_alive
        .send_text(&http1_post(
            "/mcp",
            &["Content-Type: application/json"],
            PING,
        ))
        .await;
    assert_eq!(keep_alive.response().await.status, 200);
    let mut silent = RawConn::connect(gw.public_addr).await;

    // A stream that moves a byte every 400 ms outlives the 1 s idle timeout.
    let mut streaming = RawConn::connect(gw.public_addr).await;
    streaming
        .send_text(&http1_get("/mcp", &["Accept: text/event-stream"]))
        .await;
    let stream = streaming.response().await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&stream.body)
            .matches("id: ")
            .count(),
        6
    );

    assert_eq!(
        keep_alive.closed_within(Duration::from_secs(5)).await,
        Closed::Yes
    );
    assert_eq!(
        silent.closed_within(Duration::from_secs(5)).await,
        Closed::Yes
    );
}

#[tokio::test]
async fn max_connections_holds_extra_clients_until_a_slot_frees() {
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .server("max_connections = 2")
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start()
        .await;
    let request = http1_post("/mcp", &["Content-Type: application/json"], PING);

    let mut first = RawConn::connect(gw.public_addr).await;
    first.send_text(&request).await;
    assert_eq!(first.response().await.status, 200);
    let mut second = RawConn::connect(gw.public_addr).await;
    second.send_text(&request).await;
    assert_eq!(second.response().await.status, 200);

    // The kernel completes the TCP handshake, but the gateway does not serve it.
    let mut third = RawConn::connect(gw.public_addr).await;
    third.send_text(&request).await;
    assert!(
        third
            .read_response_within(Duration::from_secs(1))
            .await
            .is_none(),
        "a third connection was served while two were open"
    );
    assert_eq!(upstream.requests().len(), 2);

    drop(first);
    let resp = third.response().await;
    assert_eq!(resp.status, 200, "served once a slot freed");
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test]
async fn graceful_shutdown_lets_open_sse_stream_finish_and_refuses_new_connections() {
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
    let mut gw = GatewayBuilder::new()
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start()
        .await;
    let addr = gw.public_addr;

    let mut resp = gw
        .post_json("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#)
        .await;
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    within(5, "first event", async {
        while received.len() < first.len() {
            received.extend_from_slice(&resp.chunk().await.unwrap().expect("open"));
        }
    })
    .await;

    gw.shutdown.cancel();
    within(5, "listener closed for new connections", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    gate.open();
    within(5, "rest of the stream during the drain", async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            received.extend_from_slice(&chunk);
        }
    })
    .await;
    assert_eq!(
        String::from_utf8_lossy(&received),
        format!("{first}{}{}", rest[0], rest[1])
    );
    gw.wait_stopped().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn drain_timeout_closes_streams_that_outlive_it() {
    let gate = Gate::new();
    let finished = Arc::new(Notify::new());
    let first = sse_event(1, "{}");
    let upstream = {
        let (gate, finished, first) = (gate.clone(), finished.clone(), first.clone());
        UpstreamServer::start(move |_| {
            Reply::sse_gated(
                std::slice::from_ref(&first),
                &gate,
                &[sse_event(2, "{}")],
                &finished,
            )
        })
        .await
    };
    let mut gw = GatewayBuilder::new()
        .server(r#"drain_timeout = "1s""#)
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start()
        .await;
    let mut resp = gw
        .post_json("/mcp", r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#)
        .await;
    let mut received = Vec::new();
    within(5, "first event", async {
        while received.len() < first.len() {
            received.extend_from_slice(&resp.chunk().await.unwrap().expect("open"));
        }
    })
    .await;
    gw.shutdown.cancel();
    gw.wait_stopped().await;
    // The upstream never finishes: after the drain timeout the gateway must cut the stream.
    let end = within(5, "stream cut after the drain timeout", resp.chunk()).await;
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}

#[tokio::test]
async fn sse_streams_event_by_event_over_h2() {
    let ca = TestCa::new();
    let gate = Gate::new();
    let finished = Arc::new(Notify::new());
    let first = sse_event(1, r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#);
    let rest = [sse_event(2, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)];
    let upstream = {
        let (gate, finished, first, rest) =
            (gate.clone(), finished.clone(), first.clone(), rest.clone());
        UpstreamServer::start(move |_| {
            Reply::sse_gated(std::slice::from_ref(&first), &gate, &rest, &finished)
        })
        .await
    };
    let gw = GatewayBuilder::new()
        .tls(ca.server_cert(KeyKind::EcdsaP256))
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start_tls(&ca)
        .await;
    let mut resp = ca
        .client(HttpVersion::Http2)
        .post(gw.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    within(
        5,
        "first event over h2 while the upstream holds the stream",
        async {
            while received.len() < first.len() {
                received.extend_from_slice(&resp.chunk().await.unwrap().expect("open"));
            }
        },
    )
    .await;
    gate.open();
    within(5, "rest of the stream", async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            received.extend_from_slice(&chunk);
        }
    })
    .await;
    assert_eq!(
        String::from_utf8_lossy(&received),
        format!("{first}{}", rest[0])
    );
}

/// Between requests an HTTP/1 connection is parked without hyper's state; these check that
/// the next request on it, however it arrives, is served exactly once and in order.
/// Connections park after 250 ms quiet, so the pauses below (`PAUSE`) park them.
async fn keep_alive_gateway() -> (UpstreamServer, TestGateway) {
    let upstream = UpstreamServer::start(Reply::echo).await;
    let gw = GatewayBuilder::new()
        .route(
            TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")).line(r#"max_body = "1KiB""#),
        )
        .start()
        .await;
    (upstream, gw)
}

/// Longer than the 250 ms after which a quiet connection parks, with room for a slow machine.
const PAUSE: Duration = Duration::from_millis(600);

fn ping(id: u32) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#)
}

#[tokio::test]
async fn keep_alive_connection_serves_requests_after_idle_pauses() {
    let (_upstream, gw) = keep_alive_gateway().await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    for id in 1..=4 {
        let req = http1_post("/mcp", &["Content-Type: application/json"], &ping(id));
        conn.send_text(&req).await;
        let resp = conn.response().await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["id"], id);
        tokio::time::sleep(PAUSE).await;
    }
    let mut text = http1_get("/mcp", &["Accept: text/event-stream"]);
    text = text.replace("GET /mcp", "GET /nowhere");
    conn.send_text(&text).await;
    assert_eq!(conn.response().await.status, 404);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_even_when_split() {
    let (_upstream, gw) = keep_alive_gateway().await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    let wire = |id| {
        to_wire(&http1_post(
            "/mcp",
            &["Content-Type: application/json"],
            &ping(id),
        ))
    };
    // Three requests in one write, then a fourth cut in the middle of its headers and one
    // cut in the middle of its body, each completed only after the earlier answers.
    let mut burst = wire(1) + &wire(2) + &wire(3);
    let fourth = wire(4);
    let (head, tail) = fourth.split_at(20);
    burst.push_str(head);
    conn.send(burst.as_bytes()).await;
    for id in 1..=3 {
        assert_eq!(conn.response().await.json()["id"], id);
    }
    tokio::time::sleep(PAUSE).await;
    conn.send(tail.as_bytes()).await;
    assert_eq!(conn.response().await.json()["id"], 4);
    let fifth = wire(5);
    let (head, tail) = fifth.split_at(fifth.len() - 5);
    conn.send(head.as_bytes()).await;
    tokio::time::sleep(PAUSE).await;
    conn.send(tail.as_bytes()).await;
    assert_eq!(conn.response().await.json()["id"], 5);
}

#[tokio::test]
async fn unread_body_after_an_early_refusal_is_never_parsed_as_a_request() {
    let (upstream, gw) = keep_alive_gateway().await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    // 413 from the declared length, before the body is read; the "body" then looks like a
    // request of its own.
    let smuggled = to_wire(&http1_post(
        "/mcp",
        &["Content-Type: application/json"],
        &ping(9),
    ));
    let padded = format!("{smuggled}{}", " ".repeat(2000 - smuggled.len()));
    conn.send(b"POST /mcp HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n")
        .await;
    assert_eq!(conn.response().await.status, 413);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Writing may fail once the server has closed: either way nothing reaches the upstream.
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.send(padded.as_bytes())).await;
    assert_eq!(
        conn.closed_within(Duration::from_secs(2)).await,
        Closed::Yes
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn connection_close_and_http10_still_close_after_the_response() {
    let (_upstream, gw) = keep_alive_gateway().await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    conn.send_text(&http1_post(
        "/mcp",
        &["Content-Type: application/json", "Connection: close"],
        &ping(1),
    ))
    .await;
    assert_eq!(conn.response().await.status, 200);
    assert_eq!(
        conn.closed_within(Duration::from_secs(2)).await,
        Closed::Yes
    );
    let mut conn = RawConn::connect(gw.public_addr).await;
    conn.send_text(
        &http1_post("/mcp", &["Content-Type: application/json"], &ping(2))
            .replace("HTTP/1.1", "HTTP/1.0"),
    )
    .await;
    assert_eq!(conn.response().await.status, 200);
    assert_eq!(
        conn.closed_within(Duration::from_secs(2)).await,
        Closed::Yes
    );
}

#[tokio::test]
async fn header_read_timeout_applies_to_later_requests_on_a_kept_connection() {
    let upstream = UpstreamServer::start(Reply::echo).await;
    let gw = GatewayBuilder::new()
        .server(r#"header_read_timeout = "1s""#)
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start()
        .await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    conn.send_text(&http1_post(
        "/mcp",
        &["Content-Type: application/json"],
        &ping(1),
    ))
    .await;
    assert_eq!(conn.response().await.status, 200);
    // Idle longer than the header timeout: only idle_timeout (default 120 s) governs that.
    assert_eq!(
        conn.closed_within(Duration::from_millis(1500)).await,
        Closed::No
    );
    conn.send(b"POST /mcp HTT").await;
    assert_eq!(
        conn.closed_within(Duration::from_secs(5)).await,
        Closed::Yes
    );
}

#[tokio::test]
async fn a_quiet_http1_connection_is_parked_and_serves_the_next_request() {
    let (upstream, gw) = keep_alive_gateway().await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    for id in 1..=2 {
        let req = http1_post("/mcp", &["Content-Type: application/json"], &ping(id));
        conn.send_text(&req).await;
        assert_eq!(conn.response().await.json()["id"], id);
        wait_until_parked(&gw, "the connection parks once quiet").await;
    }
    assert_eq!(upstream.requests().len(), 2);
    let m = gw.metrics().await;
    assert_eq!(m.count("mcpgate_open_connections", &[]), 1.0, "{}", m.0);
}

/// The connection turns quiet while a response streams, so parking is allowed before the
/// response ends; the end of the response must then park it at once, not at the idle timeout.
#[tokio::test]
async fn a_connection_quiet_during_a_long_response_parks_when_it_ends() {
    let events = [sse_event(1, "first"), sse_event(2, "second")];
    let upstream = UpstreamServer::start(move |_| Reply::sse(&events, PAUSE)).await;
    let gw = GatewayBuilder::new()
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start()
        .await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    let accept = "Accept: application/json, text/event-stream";
    let req = http1_post(
        "/mcp",
        &["Content-Type: application/json", accept],
        &ping(1),
    );
    conn.send_text(&req).await;
    let resp = conn.response().await;
    assert_eq!(resp.status, 200);
    assert!(String::from_utf8_lossy(&resp.body).contains("second"));
    wait_until_parked(&gw, "the connection parks once the response has ended").await;
}

/// Fails with `why` unless exactly one connection is parked within 5 s.
async fn wait_until_parked(gw: &TestGateway, why: &str) {
    let parked = async {
        while gw.metrics().await.count("mcpgate_parked_connections", &[]) != 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), parked)
        .await
        .expect(why);
}

/// A TLS gateway, with its CA, in front of an upstream that echoes each request's params.
async fn tls_echo_gateway() -> (TestCa, UpstreamServer, TestGateway) {
    let ca = TestCa::new();
    let upstream = UpstreamServer::start(Reply::echo).await;
    let gw = GatewayBuilder::new()
        .tls(ca.server_cert(KeyKind::EcdsaP256))
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start_tls(&ca)
        .await;
    (ca, upstream, gw)
}

/// Over TLS 1.3 and 1.2: requests pipelined in one record, a parked connection (which holds no
/// TLS buffer) woken by the next request, a TLS 1.3 key update, then the client's close_notify
/// ending it.
#[tokio::test]
async fn tls_http1_connection_pipelines_parks_and_closes() {
    let (ca, upstream, gw) = tls_echo_gateway().await;
    let wire = |id| {
        to_wire(&http1_post(
            "/mcp",
            &["Content-Type: application/json"],
            &ping(id),
        ))
    };
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = ca.rustls_config_for(&[version], &[b"http/1.1"]);
        let mut conn = RawConn::connect_tls(gw.public_addr, config).await;
        conn.send((wire(1) + &wire(2) + &wire(3)).as_bytes()).await;
        for id in 1..=3 {
            assert_eq!(conn.response().await.json()["id"], id, "{version:?}");
        }
        wait_until_parked(&gw, "the TLS connection parks once quiet").await;
        conn.send(wire(4).as_bytes()).await;
        assert_eq!(conn.response().await.json()["id"], 4, "{version:?}");
        if version == &rustls::version::TLS13 {
            // The gateway must follow the client's new keys and answer with its own.
            conn.tls_key_update();
            conn.send(wire(5).as_bytes()).await;
            assert_eq!(conn.response().await.json()["id"], 5, "key update");
        }
        conn.shutdown().await;
        assert_eq!(
            conn.closed_within(Duration::from_secs(5)).await,
            Closed::Yes,
            "{version:?}"
        );
    }
    assert_eq!(upstream.requests().len(), 9);
}

/// Bodies of many TLS records each way, over HTTP/1.1 and HTTP/2: records are reassembled and
/// split, and a full socket is waited on, without a byte lost or reordered.
#[tokio::test]
async fn tls_carries_bodies_of_many_records_both_ways() {
    let (ca, _upstream, gw) = tls_echo_gateway().await;
    // A period (26) that no record size divides, so a record out of place shows.
    let pad: String = (0..600 * 1024u32)
        .map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap()))
        .collect();
    let body =
        serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "ping", "params": {"pad": pad}});
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let resp = ca
            .client(version)
            .post(gw.url("/mcp"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        assert_eq!(resp.status(), 200, "{version:?}");
        let echoed: Value = resp.json().await.unwrap();
        assert!(
            echoed["result"]["echo"]["pad"] == pad.as_str(),
            "{version:?}"
        );
    }
}

/// A TLS ClientHello record offering one TLS 1.3 suite and nothing else, with these names in
/// its SNI extension (RFC 6066 §3), each sent as a `host_name` entry.
fn client_hello(names: &[&[u8]]) -> Vec<u8> {
    let u16be = |n: usize| u16::try_from(n).unwrap().to_be_bytes();
    let mut list = Vec::new();
    for name in names {
        list.push(0); // host_name
        list.extend(u16be(name.len()));
        list.extend(*name);
    }
    let mut sni = vec![0, 0]; // server_name extension
    sni.extend(u16be(list.len() + 2));
    sni.extend(u16be(list.len()));
    sni.extend(list);
    let mut hello = vec![3, 3];
    hello.extend([7; 32]); // random
    hello.push(0); // no session id
    hello.extend([0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    hello.extend([1, 0]); // null compression
    hello.extend(u16be(sni.len()));
    hello.extend(sni);
    let mut message = vec![1]; // client_hello
    message.extend(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    message.extend(hello);
    let mut record = vec![0x16, 3, 1];
    record.extend(u16be(message.len()));
    record.extend(message);
    record
}

/// Writes `bytes`, half-closes, and waits until the gateway closes the connection.
async fn send_and_wait_closed(addr: std::net::SocketAddr, bytes: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut sink = Vec::new();
    within(
        10,
        "gateway closes the refused handshake",
        tcp.read_to_end(&mut sink),
    )
    .await
    .ok();
}

/// Anyone can open TLS connections, as many as they like, so what they send must not reach
/// the log at its usual level: each hostile handshake below used to add a WARN line (rustls's
/// own logging). The gateway's debug line per refused handshake is all there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tls_handshakes_write_nothing_to_the_log_at_info() {
    let ca = TestCa::new();
    let upstream = UpstreamServer::mcp().await;
    let builder = GatewayBuilder::new()
        .tls(ca.server_cert(KeyKind::EcdsaP256))
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")));
    let config = builder.write();
    let gw = GatewayProcess::start("tls", &config, "info,mcpgate::server=debug", &[]).await;
    let seen = gw.log_lines().len();

    let mut finished = vec![0x16, 3, 3, 0, 36, 20, 0, 0, 32]; // a Finished before any hello
    finished.extend([0; 32]);
    let hostile: [Vec<u8>; 5] = [
        client_hello(&[b"127.0.0.1"]),         // an IP address as SNI
        client_hello(&[b"not a hostname!"]),   // an invalid name
        client_hello(&[b"a.test", b"b.test"]), // two host names
        vec![0x15, 3, 3, 0, 2, 1, 90],         // a warning alert (user_canceled)
        finished,
    ];
    for bytes in &hostile {
        send_and_wait_closed(gw.public, bytes).await;
    }
    gw.reload().await;

    let lines = gw.log_lines()[seen..].to_vec();
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON log line"))
        .collect();
    let refused = events
        .iter()
        .filter(|e| e["message"] == "TLS handshake failed")
        .count();
    assert_eq!(
        refused,
        hostile.len(),
        "one debug line each:\n{}",
        lines.join("\n")
    );
    // Besides those, only the reload that marks the end of the log we read.
    let others: Vec<&String> = lines
        .iter()
        .zip(&events)
        .filter(|(_, e)| {
            ![
                "TLS handshake failed",
                "SIGHUP received; reloading",
                "config reloaded",
            ]
            .contains(&e["message"].as_str().unwrap_or_default())
        })
        .map(|(l, _)| l)
        .collect();
    assert!(others.is_empty(), "logged besides: {others:#?}");

    assert_eq!(tls_failures(&gw.metrics().await), (5.0, 0.0));
}
