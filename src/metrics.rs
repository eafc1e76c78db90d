//! Every Prometheus metric of the gateway, declared in one place; call sites use verbs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use foldhash::HashMap;

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
    streams_expired: IntCounterVec,
    reloads: IntCounterVec,
    tls_failures: IntCounterVec,
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
            streams_expired: counter(
                &registry,
                "mcpgate_streams_expired_total",
                "GET event streams the gateway ended because the credential that opened them expired, by route.",
                &["route"],
            ),
            reloads: counter(
                &registry,
                "mcpgate_config_reloads_total",
                "Config reload attempts by result (success, failure).",
                &["result"],
            ),
            tls_failures: counter(
                &registry,
                "mcpgate_tls_handshake_failures_total",
                "TLS handshakes refused (error) or not finished within header_read_timeout (timeout).",
                &["reason"],
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
    /// `tools`: the route's tool labels (see `Policy::tool_label`) besides `other`.
    pub fn route_handles<'t>(
        &self,
        route: &str,
        tools: impl IntoIterator<Item = &'t str>,
    ) -> RouteHandles {
        let tools = tools
            .into_iter()
            .chain(["other"])
            .map(|t| (Box::from(t), Default::default()))
            .collect();
        RouteHandles {
            duration: self.duration.with_label_values(&[route]),
            auth_ok: self.auth.with_label_values(&[route, "ok", "ok"]),
            streams_expired: self.streams_expired.with_label_values(&[route]),
            post_ok: self.requests.with_label_values(&[route, "POST", "200"]),
            route: Arc::from(route),
            jsonrpc_vec: self.jsonrpc.clone(),
            tool_vec: self.tool_calls.clone(),
            jsonrpc: (0..METHOD_LABELS).map(|_| Default::default()).collect(),
            tools: Arc::new(tools),
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

    /// `reason`: "error" or "timeout". Peers choose how often this happens, so it is counted
    /// rather than logged above debug level.
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_failures.with_label_values(&[reason]).inc();
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
    /// GET event streams ended at their credential's expiry.
    pub streams_expired: IntCounter,
    post_ok: IntCounter,
    route: Arc<str>,
    jsonrpc_vec: IntCounterVec,
    tool_vec: IntCounterVec,
    /// `mcpgate_jsonrpc_total` by method label (see [`method_index`]), then allow / deny;
    /// resolved on first use, so the exposition lists only series that happened.
    jsonrpc: Arc<[[OnceLock<IntCounter>; 2]]>,
    /// `mcpgate_tool_calls_total` by tool label, then allow / deny, resolved on first use.
    tools: Arc<HashMap<Box<str>, [OnceLock<IntCounter>; 2]>>,
}

impl RouteHandles {
    /// Counts a JSON-RPC message's policy decision.
    pub fn jsonrpc(&self, method: Option<&str>, allowed: bool) {
        let i = method_index(method);
        let label = METHOD_LABEL.get(i).copied().unwrap_or("other");
        let slot = &self.jsonrpc[i][usize::from(!allowed)];
        self.resolve(slot, &self.jsonrpc_vec, label, allowed).inc();
    }

    /// Counts a `tools/call` decision; `tool` is a label from `Policy::tool_label`.
    pub fn tool_call(&self, tool: &str, allowed: bool) {
        let Some((label, slots)) = self
            .tools
            .get_key_value(tool)
            .or_else(|| self.tools.get_key_value("other"))
        else {
            return;
        };
        let slot = &slots[usize::from(!allowed)];
        self.resolve(slot, &self.tool_vec, label, allowed).inc();
    }

    fn resolve<'s>(
        &self,
        slot: &'s OnceLock<IntCounter>,
        vec: &IntCounterVec,
        label: &str,
        allowed: bool,
    ) -> &'s IntCounter {
        let decision = if allowed { "allow" } else { "deny" };
        slot.get_or_init(|| vec.with_label_values(&[&*self.route, label, decision]))
    }

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

/// Every JSON-RPC method label: the known methods, then `other`, then `response` (client
/// responses have no method).
const METHOD_LABELS: usize = KNOWN_METHODS.len() + 2;
const METHOD_LABEL: [&str; METHOD_LABELS] = {
    let mut labels = ["other"; METHOD_LABELS];
    let mut i = 0;
    while i < KNOWN_METHODS.len() {
        labels[i] = KNOWN_METHODS[i];
        i += 1;
    }
    labels[METHOD_LABELS - 1] = "response";
    labels
};

fn method_index(method: Option<&str>) -> usize {
    match method {
        None => METHOD_LABELS - 1,
        Some(m) => KNOWN_METHODS
            .iter()
            .position(|k| *k == m)
            .unwrap_or(KNOWN_METHODS.len()),
    }
}

/// The static name of a method MCP defines (so audit events need not copy it).
pub fn known_method(method: &str) -> Option<&'static str> {
    KNOWN_METHODS.iter().find(|k| **k == method).copied()
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
