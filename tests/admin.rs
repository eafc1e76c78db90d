//! The admin listener: health, readiness and Prometheus metrics, and nothing of it public.

mod common;

use std::time::Duration;

use common::*;

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

#[tokio::test]
async fn healthz_and_readyz_answer_200_on_the_admin_listener() {
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start()
        .await;
    let client = plain_client(HttpVersion::Auto);
    for path in ["/healthz", "/readyz"] {
        let resp = client.get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = client.get(gw.admin_url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn admin_endpoints_are_absent_on_the_public_listener() {
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start()
        .await;
    for path in ["/metrics", "/healthz", "/readyz"] {
        let resp = gw.client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path} on the public listener");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("mcpgate_"), "{path} leaked metrics: {body}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_status() {
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .route(TestRoute::anonymous(
            "calendar",
            "/mcp",
            &upstream.url("/mcp"),
        ))
        .start()
        .await;
    let before = gw.metrics().await;
    let ok = [("route", "calendar"), ("method", "POST"), ("status", "200")];
    assert_eq!(before.count("mcpgate_requests_total", &ok), 0.0);

    for _ in 0..3 {
        assert_eq!(gw.post_json("/mcp", PING).await.status(), 200);
    }
    assert_eq!(gw.post_json("/elsewhere", PING).await.status(), 404);

    let after = gw.metrics().await;
    assert_eq!(
        after.count("mcpgate_requests_total", &ok),
        3.0,
        "{}",
        after.0
    );
    assert_eq!(
        after.count(
            "mcpgate_requests_total",
            &[("route", "none"), ("status", "404")]
        ),
        1.0,
        "unrouted requests share one bounded label: {}",
        after.0
    );
    assert_eq!(
        after.count(
            "mcpgate_request_duration_seconds_count",
            &[("route", "calendar")]
        ),
        3.0
    );
    assert_eq!(
        after.value(
            "mcpgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{}",
        after.0
    );
}

#[tokio::test]
async fn metrics_count_upstream_connect_errors() {
    let gw = GatewayBuilder::new()
        .route(TestRoute::anonymous("down", "/mcp", &upstream_down("/mcp")))
        .start()
        .await;
    let labels = [("route", "down"), ("kind", "connect")];
    assert_eq!(
        gw.metrics()
            .await
            .count("mcpgate_upstream_errors_total", &labels),
        0.0
    );
    assert_eq!(gw.post_json("/mcp", PING).await.status(), 502);
    assert_eq!(gw.post_json("/mcp", PING).await.status(), 502);
    let m = gw.metrics().await;
    assert_eq!(
        m.count("mcpgate_upstream_errors_total", &labels),
        2.0,
        "{}",
        m.0
    );
    assert_eq!(
        m.count(
            "mcpgate_requests_total",
            &[("route", "down"), ("status", "502")]
        ),
        2.0
    );
}

#[tokio::test]
async fn metrics_track_open_connections() {
    let upstream = UpstreamServer::mcp().await;
    let gw = GatewayBuilder::new()
        .route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")))
        .start()
        .await;
    let open = |m: MetricsText| m.value("mcpgate_open_connections", &[]);
    assert_eq!(open(gw.metrics().await), Some(0.0));

    let request = http1_post("/mcp", &["Content-Type: application/json"], PING);
    let mut a = RawConn::connect(gw.public_addr).await;
    a.send_text(&request).await;
    assert_eq!(a.response().await.status, 200);
    let mut b = RawConn::connect(gw.public_addr).await;
    b.send_text(&request).await;
    assert_eq!(b.response().await.status, 200);
    assert_eq!(open(gw.metrics().await), Some(2.0));

    drop(a);
    drop(b);
    within(5, "open connections back to 0", async {
        while open(gw.metrics().await) != Some(0.0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
