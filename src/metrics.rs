//! Every Prometheus metric of the gateway, declared in one place; call sites use verbs.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Route label for requests that matched no route; route ids come from the config only,
/// so label cardinality stays bounded whatever paths arrive on the wire.
pub const NO_ROUTE: &str = "none";

pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    open_connections: IntGauge,
    parked_connections: IntGauge,
    auth: IntCounterVec,
    jsonrpc: IntCounterVec,
    tool_calls: IntCounterVec,
    rate_limited: IntCounterVec,
    reloads: IntCounterVec,
    last_reload: prometheus::Gauge,
    sessions: IntGauge,
    audit_dropped: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "mcpgate_request_duration_seconds",
                "Time from request received to response headers sent, per route.",
            )
            .buckets(buckets),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique metric");
        let open_connections = IntGauge::new(
            "mcpgate_open_connections",
            "Client connections currently open on the public listener.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(open_connections.clone()))
            .expect("unique metric");
        let parked_connections = IntGauge::new(
            "mcpgate_parked_connections",
            "Open HTTP/1 connections idle between requests, holding no per-request state.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(parked_connections.clone()))
            .expect("unique metric");
        let build = IntGaugeVec::new(
            Opts::new("mcpgate_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build)).expect("unique metric");
        let last_reload = prometheus::Gauge::new(
            "mcpgate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load or reload.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(last_reload.clone()))
            .expect("unique metric");
        let sessions = IntGauge::new(
            "mcpgate_sessions_active",
            "MCP sessions currently bound to a principal on this replica.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(sessions.clone()))
            .expect("unique metric");
        let audit_dropped = IntCounter::new(
            "mcpgate_audit_dropped_total",
            "Audit events dropped because the audit sink could not keep up.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(audit_dropped.clone()))
            .expect("unique metric");
        Metrics {
            requests: counter(
                &registry,
                "mcpgate_requests_total",
                "HTTP requests on the public listener by route, method and status.",
                &["route", "method", "status"],
            ),
            upstream_errors: counter(
                &registry,
                "mcpgate_upstream_errors_total",
                "Failures talking to an upstream, by route and kind (connect, timeout, reset).",
                &["route", "kind"],
            ),
            auth: counter(
                &registry,
                "mcpgate_auth_total",
                "Authentication outcomes by route, result (ok, denied, error) and reason.",
                &["route", "result", "reason"],
            ),
            jsonrpc: counter(
                &registry,
                "mcpgate_jsonrpc_total",
                "JSON-RPC messages by route, method and policy decision.",
                &["route", "method", "decision"],
            ),
            tool_calls: counter(
                &registry,
                "mcpgate_tool_calls_total",
                "tools/call by route, tool (configured names or other) and decision.",
                &["route", "tool", "decision"],
            ),
            rate_limited: counter(
                &registry,
                "mcpgate_rate_limited_total",
                "Requests refused with 429 by route.",
                &["route"],
            ),
            reloads: counter(
                &registry,
                "mcpgate_config_reloads_total",
                "Config reload attempts by result (success, failure).",
                &["result"],
            ),
            registry,
            duration,
            open_connections,
            parked_connections,
            last_reload,
            sessions,
            audit_dropped,
        }
    }

    /// Handles for one route's most frequent series, resolved once when the gateway is built:
    /// each `with_label_values` hashes its labels, and these are hit on every request.
    pub fn route_handles(&self, route: &str) -> RouteHandles {
        RouteHandles {
            duration: self.duration.with_label_values(&[route]),
            auth_ok: self.auth.with_label_values(&[route, "ok", "ok"]),
            post_ok: self.requests.with_label_values(&[route, "POST", "200"]),
        }
    }

    pub fn request_done(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut buf = itoa_status(status);
        self.requests
            .with_label_values(&[route, method, status_str(&mut buf)])
            .inc();
        self.duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    pub fn upstream_error(&self, route: &str, kind: &str) {
        self.upstream_errors.with_label_values(&[route, kind]).inc();
    }

    pub fn connection_opened(&self) {
        self.open_connections.inc();
    }

    pub fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// Counts a parked connection for as long as the returned guard lives.
    pub fn parked(&self) -> impl Drop + '_ {
        struct Parked<'a>(&'a IntGauge);
        impl Drop for Parked<'_> {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        self.parked_connections.inc();
        Parked(&self.parked_connections)
    }

    pub fn auth(&self, route: &str, result: &str, reason: &str) {
        self.auth.with_label_values(&[route, result, reason]).inc();
    }

    pub fn jsonrpc(&self, route: &str, method: &str, decision: &str) {
        self.jsonrpc
            .with_label_values(&[route, method, decision])
            .inc();
    }

    pub fn tool_call(&self, route: &str, tool: &str, decision: &str) {
        self.tool_calls
            .with_label_values(&[route, tool, decision])
            .inc();
    }

    pub fn rate_limited(&self, route: &str) {
        self.rate_limited.with_label_values(&[route]).inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_reload.set(now.as_secs_f64());
        }
    }

    pub fn sessions(&self) -> &IntGauge {
        &self.sessions
    }

    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Pre-resolved series of one route (see `Metrics::route_handles`).
#[derive(Clone)]
pub struct RouteHandles {
    pub duration: Histogram,
    pub auth_ok: IntCounter,
    post_ok: IntCounter,
}

impl RouteHandles {
    /// Same as `Metrics::request_done` for this route, without hashing labels in the common case.
    pub fn request_done(
        &self,
        metrics: &Metrics,
        route: &str,
        method: &str,
        status: u16,
        elapsed: Duration,
    ) {
        self.duration.observe(elapsed.as_secs_f64());
        if status == 200 && method == "POST" {
            self.post_ok.inc();
        } else {
            let mut buf = itoa_status(status);
            metrics
                .requests
                .with_label_values(&[route, method, status_str(&mut buf)])
                .inc();
        }
    }
}

/// Status codes as label values without allocating per request.
fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

fn status_str(buf: &mut [u8; 3]) -> &str {
    std::str::from_utf8(buf).unwrap_or("000")
}

/// MCP methods that get their own label value; anything else a client sends is `other`, so
/// label cardinality is fixed by this list, not by the wire.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "server/discover",
    "subscriptions/listen",
];

/// The bounded label for a JSON-RPC method; client responses have no method.
pub fn method_label(method: Option<&str>) -> &'static str {
    match method {
        None => "response",
        Some(m) => KNOWN_METHODS
            .iter()
            .find(|k| **k == m)
            .copied()
            .unwrap_or("other"),
    }
}

/// A histogram that others (auth) may want with the same bucket layout.
pub fn latency_histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}
