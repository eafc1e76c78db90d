//! Builds a `gateway.toml` in a temporary directory and runs the gateway in-process on
//! ephemeral loopback ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::tls::{HttpVersion, TestCa, TestCert, plain_client};

/// The public URL written into every test config; route resources derive from it.
pub const PUBLIC_URL: &str = "https://gateway.test";

/// One `[[routes]]` entry.
#[derive(Clone)]
pub struct TestRoute {
    id: String,
    path: String,
    upstream: String,
    /// `key = value` lines inside the route table.
    lines: Vec<String>,
    /// Sub-tables (`[[routes.api_keys]]`, `[routes.tools]`…) written after the lines.
    tables: Vec<String>,
}

impl TestRoute {
    /// A route with no credentials configured: add `anonymous()`, `api_key()` or issuers.
    pub fn new(id: &str, path: &str, upstream: &str) -> Self {
        TestRoute {
            id: id.into(),
            path: path.into(),
            upstream: upstream.into(),
            lines: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// A route anyone may call (`allow_anonymous = true`), for plain proxy tests.
    pub fn anonymous(id: &str, path: &str, upstream: &str) -> Self {
        Self::new(id, path, upstream).line("allow_anonymous = true")
    }

    /// A raw `key = value` line in the route table, e.g. `max_body = "1KiB"`.
    pub fn line(mut self, line: &str) -> Self {
        self.lines.push(line.into());
        self
    }

    /// A raw sub-table written after the route's lines, e.g. `[routes.tools]\n"*" = []`.
    pub fn table(mut self, table: &str) -> Self {
        self.tables.push(table.into());
        self
    }

    /// An API key accepted on this route (stored as its SHA-256 hash, as in production).
    pub fn api_key(self, key: &str, subject: &str, scopes: &[&str]) -> Self {
        let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
        self.table(&format!(
            "[[routes.api_keys]]\nhash = \"{}\"\nsubject = {subject:?}\nscopes = [{}]",
            key_hash(key),
            scopes.join(", ")
        ))
    }

    fn render(&self, out: &mut String) {
        out.push_str("\n[[routes]]\n");
        out.push_str(&format!(
            "id = {:?}\npath = {:?}\nupstream = {:?}\n",
            self.id, self.path, self.upstream
        ));
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        for table in &self.tables {
            out.push('\n');
            out.push_str(table);
            out.push('\n');
        }
    }
}

/// `"sha256:" + hex(SHA-256(key))`, the form `[[routes.api_keys]] hash` takes.
pub fn key_hash(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let digest = digest.as_ref();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Assembles a gateway config; `start()` runs it.
pub struct GatewayBuilder {
    dir: TempDir,
    tls: Option<TestCert>,
    server_lines: Vec<String>,
    routes: Vec<TestRoute>,
    extra: Vec<String>,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayBuilder {
    pub fn new() -> Self {
        GatewayBuilder {
            dir: tempfile::tempdir().expect("tempdir"),
            tls: None,
            server_lines: Vec::new(),
            routes: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Serve TLS with this certificate; its files are written into the config directory.
    pub fn tls(mut self, cert: TestCert) -> Self {
        self.tls = Some(cert);
        self
    }

    /// A raw line in `[server]`, e.g. `header_read_timeout = "1s"`.
    pub fn server(mut self, line: &str) -> Self {
        self.server_lines.push(line.into());
        self
    }

    pub fn route(mut self, route: TestRoute) -> Self {
        self.routes.push(route);
        self
    }

    /// Raw top-level TOML appended after the routes: `[[issuers]]`, `[session]`, `[audit]`…
    pub fn raw(mut self, toml: &str) -> Self {
        self.extra.push(toml.into());
        self
    }

    /// The directory the config (and its certificate files and state) is written to.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The config text, with TLS file paths pointing into the config directory.
    pub fn toml(&self) -> String {
        let dir = self.dir.path();
        let mut out = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
        out.push_str(&format!("public_url = {PUBLIC_URL:?}\n"));
        out.push_str(&format!(
            "state_dir = {:?}\n",
            dir.join("state").display().to_string()
        ));
        for line in &self.server_lines {
            out.push_str(line);
            out.push('\n');
        }
        if self.tls.is_some() {
            out.push_str(&format!(
                "\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
                dir.join("cert.pem").display().to_string(),
                dir.join("key.pem").display().to_string()
            ));
        }
        out.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
        for route in &self.routes {
            route.render(&mut out);
        }
        for extra in &self.extra {
            out.push('\n');
            out.push_str(extra);
            out.push('\n');
        }
        out
    }

    /// Writes `gateway.toml` (and the TLS files) and returns its path.
    pub fn write(&self) -> PathBuf {
        let dir = self.dir.path();
        if let Some(cert) = &self.tls {
            std::fs::write(dir.join("cert.pem"), &cert.cert_pem).expect("write cert");
            std::fs::write(dir.join("key.pem"), &cert.key_pem).expect("write key");
        }
        let path = dir.join("gateway.toml");
        std::fs::write(&path, self.toml()).expect("write config");
        path
    }

    /// Starts the gateway in-process; panics with the start-up error if it does not start.
    pub async fn start(self) -> TestGateway {
        self.start_with_client_ca(None).await
    }

    /// As `start`, with clients trusting `ca` (for TLS gateways).
    pub async fn start_tls(self, ca: &TestCa) -> TestGateway {
        self.start_with_client_ca(Some(ca)).await
    }

    async fn start_with_client_ca(self, ca: Option<&TestCa>) -> TestGateway {
        let path = self.write();
        let running = match mcpgate::app::start(&path).await {
            Ok(r) => r,
            Err(e) => panic!("gateway did not start: {e}\nconfig:\n{}", self.toml()),
        };
        let tls = self.tls.is_some();
        let client = match ca {
            Some(ca) => ca.client(HttpVersion::Auto),
            None => plain_client(HttpVersion::Auto),
        };
        TestGateway {
            public_addr: running.public_addr,
            admin_addr: running.admin_addr,
            shutdown: running.shutdown,
            done: Some(running.done),
            tls,
            client,
            config_path: path,
            _dir: self.dir,
        }
    }
}

/// The Prometheus text of the admin listener at `admin`.
pub async fn metrics_of(admin: SocketAddr) -> MetricsText {
    let resp = plain_client(HttpVersion::Auto)
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("metrics request");
    assert_eq!(resp.status(), 200, "GET /metrics");
    MetricsText(resp.text().await.expect("metrics body"))
}

/// A running gateway. Dropping it cancels it; `shutdown()` also waits for the drain.
pub struct TestGateway {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shutdown: CancellationToken,
    done: Option<tokio::task::JoinHandle<()>>,
    tls: bool,
    client: reqwest::Client,
    pub config_path: PathBuf,
    _dir: TempDir,
}

impl TestGateway {
    /// `http(s)://127.0.0.1:<port><path>` on the public listener.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.public_addr)
    }

    /// `http://127.0.0.1:<port><path>` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// A client for this gateway (trusts the test CA when TLS is on; no proxy).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// POSTs a JSON-RPC body to `path` with the headers MCP clients send.
    pub async fn post_json(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string())
            .send()
            .await
            .expect("request to gateway")
    }

    /// Sends `initialize` to `path` and returns the `Mcp-Session-Id` the client was given
    /// (the upstream must answer with one).
    pub async fn open_session(&self, path: &str) -> String {
        let resp = self
            .post_json(
                path,
                r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#,
            )
            .await;
        assert_eq!(resp.status(), 200, "initialize through {path}");
        resp.headers()
            .get("mcp-session-id")
            .expect("initialize answered with an Mcp-Session-Id")
            .to_str()
            .expect("ASCII session id")
            .to_string()
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> MetricsText {
        metrics_of(self.admin_addr).await
    }

    /// Cancels the gateway and waits (up to 10 s) until it has drained and stopped.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        self.wait_stopped().await;
    }

    /// Waits (up to 10 s) for the gateway's tasks to end after `shutdown` was cancelled.
    pub async fn wait_stopped(&mut self) {
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(10), done)
                .await
                .expect("gateway stopped within 10 s")
                .expect("gateway task did not panic");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Prometheus text exposition, with a lookup by name and labels.
#[derive(Debug)]
pub struct MetricsText(pub String);

impl MetricsText {
    /// The value of the sample `name` whose labels include all of `labels`; when several
    /// match, their sum.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for line in self.0.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (series_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                continue;
            }
            let all_match = labels.iter().all(|(k, v)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
            if all_match {
                let v: f64 = value.parse().expect("metric value");
                found = Some(found.unwrap_or(0.0) + v);
            }
        }
        found
    }

    /// Like `value`, but 0 when the series does not exist yet.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}
