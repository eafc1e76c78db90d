//! Live reload (issue #6): a reload under load loses no request, an invalid reload keeps the
//! old config serving, settings bound at start-up are refused, and a rotated certificate is
//! what a new TLS handshake sees while established connections keep working.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mcpgate::app::Running;
use mcpgate::reload::ReloadError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
const RELOADS: &str = "mcpgate_config_reloads_total";
const LAST_SUCCESS: &str = "mcpgate_config_last_reload_success_timestamp_seconds";

/// A gateway started in-process from a config file the test rewrites, with its `Reloader`.
struct Live {
    dir: TempDir,
    path: PathBuf,
    running: Running,
    client: reqwest::Client,
    tls: bool,
}

impl Live {
    /// Writes `text` as `gateway.toml` in `dir` and starts the gateway from it.
    async fn start(dir: TempDir, text: &str, ca: Option<&TestCa>) -> Live {
        let path = dir.path().join("gateway.toml");
        write_atomically(&path, text.as_bytes());
        let running = match mcpgate::app::start(&path).await {
            Ok(r) => r,
            Err(e) => panic!("gateway did not start: {e}\nconfig:\n{text}"),
        };
        let client = match ca {
            Some(ca) => ca.client(HttpVersion::Auto),
            None => plain_client(HttpVersion::Auto),
        };
        Live {
            dir,
            path,
            running,
            client,
            tls: ca.is_some(),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the config file in one step (write + rename), so that the file watcher never
    /// reads half a file.
    fn rewrite(&self, text: &str) {
        write_atomically(&self.path, text.as_bytes());
    }

    async fn reload(&self, what: &str) -> Result<(), ReloadError> {
        within(30, what, self.running.reloader.reload()).await
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.running.public_addr)
    }

    async fn post(&self, path: &str, body: &str, bearer: Option<&str>) -> (u16, String) {
        post_with(&self.client, &self.url(path), body, bearer).await
    }

    async fn metrics(&self) -> MetricsText {
        let resp = plain_client(HttpVersion::Auto)
            .get(format!("http://{}/metrics", self.running.admin_addr))
            .send()
            .await
            .expect("metrics request");
        assert_eq!(resp.status(), 200, "GET /metrics");
        MetricsText(resp.text().await.expect("metrics body"))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.running.shutdown.cancel();
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

async fn post_with(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .timeout(Duration::from_secs(10))
        .body(body.to_string());
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// `[server]` and `[admin]` on ephemeral loopback ports, optionally with TLS files in `dir`,
/// followed by `rest` (routes, issuers…).
fn config(dir: &Path, tls: bool, rest: &str) -> String {
    let mut out = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = {PUBLIC_URL:?}\nstate_dir = {:?}\n",
        dir.join("state").display().to_string()
    );
    if tls {
        out.push_str(&format!(
            "\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.join("cert.pem").display().to_string(),
            dir.join("key.pem").display().to_string()
        ));
    }
    out.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    // Audit events go to a file, not into the test output.
    out.push_str(&format!(
        "\n[audit]\nsink = \"file\"\nfile = {:?}\n\n",
        dir.join("audit.jsonl").display().to_string()
    ));
    out.push_str(rest);
    out
}

fn tool_call(id: u64, name: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": {"n": id}}})
    .to_string()
}

/// An MCP-like upstream whose JSON-RPC answers name it, so a test can tell which one answered.
async fn named_upstream(name: &'static str) -> UpstreamServer {
    UpstreamServer::start(move |req| {
        let msg = req.json().unwrap_or(Value::Null);
        match msg.get("id") {
            Some(id) => Reply::json(&json!({
                "jsonrpc": "2.0",
                "id": id,
                "result": {"upstream": name, "method": msg.get("method"), "echo": msg.get("params")},
            })),
            None => Reply::status(202),
        }
    })
    .await
}

/// Which upstream answered a 200, or a description of what came back instead.
fn answered_by(status: u16, body: &str, id: u64) -> Result<String, String> {
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    if v["id"] != json!(id) || v["result"]["method"] != "tools/call" {
        return Err(format!("not the answer to request {id}: {body}"));
    }
    v["result"]["upstream"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no upstream name: {body}"))
}

fn tool_calls_named(upstream: &UpstreamServer, name: &str) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|r| r.json().is_some_and(|m| m["params"]["name"] == name))
        .count()
}

/// Route tables for the reload-under-load test. `main` carries the load; the other parts are
/// what the reloads change.
struct Routes<'a> {
    main_upstream: &'a str,
    /// Scopes `tools/call secret` needs on `main`.
    secret_scopes: &'a str,
    /// Scopes the `keyed` route requires; its API key holds `a`.
    keyed_scopes: &'a str,
    extra: Option<&'a str>,
    watched: Option<&'a str>,
}

impl Routes<'_> {
    fn render(&self) -> String {
        let mut out = format!(
            "[[routes]]\nid = \"main\"\npath = \"/mcp\"\nupstream = {:?}\nallow_anonymous = true\n\
             [routes.tools]\n\"echo\" = []\n\"secret\" = {}\n\n",
            self.main_upstream, self.secret_scopes
        );
        out.push_str(&format!(
            "[[routes]]\nid = \"keyed\"\npath = \"/keyed/mcp\"\nupstream = {:?}\nscopes = {}\n\
             [routes.tools]\n\"*\" = []\n[[routes.api_keys]]\nhash = {:?}\nsubject = \"bot\"\nscopes = [\"a\"]\n\n",
            self.main_upstream,
            self.keyed_scopes,
            key_hash("key-a")
        ));
        for (id, path, upstream) in [
            ("extra", "/extra/mcp", self.extra),
            ("watched", "/watched/mcp", self.watched),
        ] {
            if let Some(upstream) = upstream {
                out.push_str(&format!(
                    "[[routes]]\nid = {id:?}\npath = {path:?}\nupstream = {upstream:?}\nallow_anonymous = true\n\
                     [routes.tools]\n\"*\" = []\n\n"
                ));
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request_and_applies_every_change() {
    let a = named_upstream("A").await;
    let b = named_upstream("B").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let v1 = Routes {
        main_upstream: &a.url("/mcp"),
        secret_scopes: "[]",
        keyed_scopes: "[\"a\"]",
        extra: None,
        watched: None,
    };
    let gw = Live::start(dir, &config(&d, false, &v1.render()), None).await;
    let before = gw.metrics().await;
    let successes_before = before.count(RELOADS, &[("result", "success")]);
    let last_before = before
        .value(LAST_SUCCESS, &[])
        .expect("last reload timestamp after start");

    // The starting config, as seen by probes.
    assert_eq!(gw.post("/mcp", &tool_call(1, "secret"), None).await.0, 200);
    assert_eq!(gw.post("/extra/mcp", PING, None).await.0, 404);
    assert_eq!(
        gw.post("/keyed/mcp", &tool_call(2, "anything"), Some("key-a"))
            .await
            .0,
        200
    );

    // Continuous load on `main`: 4 tasks, each with its own keep-alive client (two HTTP/1.1,
    // two HTTP/2), so established connections live through every reload. The load runs until
    // the test stops it; 60 s is only a guard against a hang.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let url = gw.url("/mcp");
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let version = if t % 2 == 0 {
            HttpVersion::Http1
        } else {
            HttpVersion::Http2
        };
        let client = plain_client(version);
        let (stop, done, failures, url) =
            (stop.clone(), done.clone(), failures.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let guard = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < guard {
                let id = 1_000_000 * (t + 1) + n;
                n += 1;
                let outcome = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .timeout(Duration::from_secs(10))
                    .body(tool_call(id, "echo"))
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        match resp.text().await {
                            Ok(body) => answered_by(status, &body, id),
                            Err(e) => Err(format!("status {status}, body failed: {e}")),
                        }
                    }
                    Err(e) => Err(format!("request failed: {e}")),
                };
                if let Err(e) = outcome {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("task {t} request {id}: {e}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Lets the load run on the current config for a while (by count, not by time).
    let progress = |what: &'static str| {
        let done = done.clone();
        async move {
            let target = done.load(Ordering::Relaxed) + 400;
            within(60, what, async {
                while done.load(Ordering::Relaxed) < target {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
        }
    };
    progress("load before the first reload").await;

    // Reload 1: a new route appears and `secret` now needs a scope.
    let v2 = Routes {
        extra: Some(&a.url("/mcp")),
        secret_scopes: "[\"admin\"]",
        ..v1
    };
    gw.rewrite(&config(&d, false, &v2.render()));
    gw.reload("reload 1").await.expect("reload 1 is accepted");
    let (status, body) = gw.post("/extra/mcp", PING, None).await;
    assert_eq!(status, 200, "the added route serves after reload 1: {body}");
    let secret_seen = tool_calls_named(&a, "secret");
    let (status, body) = gw.post("/mcp", &tool_call(3, "secret"), None).await;
    assert_eq!(status, 401, "secret needs a scope after reload 1: {body}");
    assert_eq!(
        tool_calls_named(&a, "secret"),
        secret_seen,
        "the refused call never reached the upstream"
    );
    progress("load after reload 1").await;

    // Reload 2: `main` moves to upstream B; the keyed route requires a scope its key lacks.
    let v3 = Routes {
        main_upstream: &b.url("/mcp"),
        keyed_scopes: "[\"b\"]",
        ..v2
    };
    gw.rewrite(&config(&d, false, &v3.render()));
    gw.reload("reload 2").await.expect("reload 2 is accepted");
    let (status, body) = gw.post("/mcp", &tool_call(4, "echo"), None).await;
    assert_eq!(
        answered_by(status, &body, 4).as_deref(),
        Ok("B"),
        "main is served by the new upstream after reload 2"
    );
    let (status, body) = gw
        .post("/keyed/mcp", &tool_call(5, "anything"), Some("key-a"))
        .await;
    assert_eq!(status, 403, "the route's new scopes apply: {body}");
    progress("load after reload 2").await;

    // Reload 3, by the file watcher alone: another route appears.
    let v4 = Routes {
        watched: Some(&b.url("/mcp")),
        ..v3
    };
    gw.rewrite(&config(&d, false, &v4.render()));
    within(15, "the watcher applies the changed file", async {
        loop {
            if gw.post("/watched/mcp", PING, None).await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    progress("load after reload 3").await;

    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        within(30, "load task ends", task).await.unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    let total = done.load(Ordering::Relaxed);
    eprintln!("{total} requests across 3 reloads");
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed across the reloads; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(total >= 1600, "the load ran across every reload ({total})");
    assert!(
        !b.requests().is_empty() && !a.requests().is_empty(),
        "both upstreams carried load"
    );

    let after = gw.metrics().await;
    let successes = after.count(RELOADS, &[("result", "success")]);
    assert!(
        successes >= successes_before + 3.0,
        "three reloads counted as successes: {successes_before} -> {successes}\n{}",
        after.0
    );
    let last = after.value(LAST_SUCCESS, &[]).expect("timestamp");
    assert!(
        last > last_before,
        "last success timestamp moved forward: {last_before} -> {last}"
    );
}

#[tokio::test]
async fn an_invalid_reload_is_refused_with_its_key_path_and_the_old_config_keeps_serving() {
    let upstream = named_upstream("A").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let good = format!(
        "[[routes]]\nid = \"r\"\npath = \"/mcp\"\nupstream = {:?}\nallow_anonymous = true\n\
         [routes.tools]\n\"*\" = []\n",
        upstream.url("/mcp")
    );
    let gw = Live::start(dir, &config(&d, false, &good), None).await;
    let before = gw.metrics().await;
    let failures_before = before.count(RELOADS, &[("result", "failure")]);
    let successes_before = before.count(RELOADS, &[("result", "success")]);
    let last_before = before.value(LAST_SUCCESS, &[]).expect("timestamp");

    // The invalid config also adds a route, which must not appear.
    let bad = format!(
        "[[routes]]\nid = \"r\"\npath = \"/mcp\"\nupstream = \"ftp://x\"\nallow_anonymous = true\n\
         [routes.tools]\n\"*\" = []\n\n\
         [[routes]]\nid = \"new\"\npath = \"/new/mcp\"\nupstream = {:?}\nallow_anonymous = true\n",
        upstream.url("/mcp")
    );
    gw.rewrite(&config(&d, false, &bad));
    let err = gw
        .reload("invalid reload")
        .await
        .expect_err("an invalid config is refused");
    assert!(
        matches!(err, ReloadError::Config(_)),
        "a config error, got {err:?}"
    );
    assert!(
        err.to_string().contains("routes[0].upstream"),
        "the problem is listed with its key path: {err}"
    );

    let (status, body) = gw.post("/mcp", &tool_call(7, "echo"), None).await;
    assert_eq!(
        answered_by(status, &body, 7).as_deref(),
        Ok("A"),
        "the old config keeps serving"
    );
    assert_eq!(
        gw.post("/new/mcp", PING, None).await.0,
        404,
        "nothing of the refused config applies"
    );
    let after = gw.metrics().await;
    assert!(
        after.count(RELOADS, &[("result", "failure")]) > failures_before,
        "the failure is counted: {}",
        after.0
    );
    // The watcher may also try the bad file; it must not count as a success either.
    assert_eq!(
        after.count(RELOADS, &[("result", "success")]),
        successes_before,
        "{}",
        after.0
    );
    assert_eq!(
        after.value(LAST_SUCCESS, &[]),
        Some(last_before),
        "a refused reload is not a successful load"
    );

    // Fixing the file makes the next reload succeed.
    gw.rewrite(&config(&d, false, &good));
    gw.reload("reload of the fixed file")
        .await
        .expect("the fixed config is accepted");
    assert_eq!(gw.post("/mcp", &tool_call(8, "echo"), None).await.0, 200);
}

#[tokio::test]
async fn a_reload_changing_settings_bound_at_start_is_refused() {
    let upstream = named_upstream("A").await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let cert = ca.server_cert(KeyKind::EcdsaP256);
    std::fs::write(d.join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(d.join("key.pem"), &cert.key_pem).unwrap();
    let routes = format!(
        "[[routes]]\nid = \"r\"\npath = \"/mcp\"\nupstream = {:?}\nallow_anonymous = true\n\
         [routes.tools]\n\"*\" = []\n",
        upstream.url("/mcp")
    );
    let good = config(&d, false, &routes);
    let gw = Live::start(dir, &good, None).await;
    let other_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        (
            "server.listen",
            good.replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{other_port}\""),
                1,
            ),
        ),
        (
            "admin.listen",
            good.replace(
                "[admin]\nlisten = \"127.0.0.1:0\"",
                &format!("[admin]\nlisten = \"127.0.0.1:{other_port}\""),
            ),
        ),
        ("server.tls", config(&d, true, &routes)),
    ];
    for (key, text) in cases {
        assert_ne!(text, good, "{key}: the case changes the config");
        gw.rewrite(&text);
        let err = gw
            .reload(key)
            .await
            .expect_err("a restart-only change is refused");
        assert!(
            matches!(err, ReloadError::NeedsRestart(_)),
            "{key}: needs a restart, got {err:?}"
        );
        assert!(err.to_string().contains(key), "{key}: named in {err}");
        let (status, body) = gw.post("/mcp", &tool_call(9, "echo"), None).await;
        assert_eq!(
            answered_by(status, &body, 9).as_deref(),
            Ok("A"),
            "{key}: still served on the original listener"
        );
    }
}

// ---- TLS certificate rotation -------------------------------------------------------------

fn der(cert: &TestCert) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
        .expect("certificate PEM")
        .to_vec()
}

/// Which of the `known` certificates `leaf` is (compared as DER), for readable assertions.
fn which(leaf: &[u8], known: &[(&'static str, &TestCert)]) -> &'static str {
    known
        .iter()
        .find(|(_, cert)| der(cert) == leaf)
        .map_or("an unknown certificate", |(name, _)| name)
}

fn install(dir: &Path, cert: &TestCert) {
    write_atomically(&dir.join("cert.pem"), cert.cert_pem.as_bytes());
    write_atomically(&dir.join("key.pem"), cert.key_pem.as_bytes());
}

async fn handshake(ca: &TestCa, addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = within(5, "TCP connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let connector = TlsConnector::from(ca.rustls_config(&[b"http/1.1"]));
    within(
        5,
        "TLS handshake",
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("TLS handshake succeeds")
}

/// The leaf certificate a NEW handshake is served.
async fn served_leaf(ca: &TestCa, addr: SocketAddr) -> Vec<u8> {
    let tls = handshake(ca, addr).await;
    leaf(&tls)
}

fn leaf(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server sent a certificate")
        .to_vec()
}

/// An HTTP/1.1 connection over one TLS session, kept open across the test.
struct OpenConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    leaf: Vec<u8>,
}

impl OpenConn {
    async fn open(ca: &TestCa, addr: SocketAddr) -> OpenConn {
        let tls = handshake(ca, addr).await;
        let leaf = leaf(&tls);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        OpenConn { sender, leaf }
    }

    async fn ping(&mut self, what: &str) -> u16 {
        let req = http::Request::post("/mcp")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(Full::new(Bytes::from_static(PING.as_bytes())))
            .unwrap();
        let resp = within(10, what, self.sender.send_request(req))
            .await
            .unwrap_or_else(|e| panic!("{what}: the established connection failed: {e}"));
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        status
    }
}

fn tls_routes(upstream: &UpstreamServer) -> String {
    format!(
        "[[routes]]\nid = \"r\"\npath = \"/mcp\"\nupstream = {:?}\nallow_anonymous = true\n",
        upstream.url("/mcp")
    )
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_handshakes_and_old_connections_keep_working() {
    let upstream = UpstreamServer::mcp().await;
    let ca = TestCa::new();
    let (cert_a, cert_b, cert_c) = (
        ca.server_cert(KeyKind::EcdsaP256),
        ca.server_cert(KeyKind::Rsa),
        ca.server_cert(KeyKind::Ed25519),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    install(&d, &cert_a);
    let gw = Live::start(dir, &config(&d, true, &tls_routes(&upstream)), Some(&ca)).await;
    let addr = gw.running.public_addr;
    let known = [("A", &cert_a), ("B", &cert_b), ("C", &cert_c)];
    assert_eq!(which(&served_leaf(&ca, addr).await, &known), "A");

    let mut old = OpenConn::open(&ca, addr).await;
    assert_eq!(which(&old.leaf, &known), "A");
    assert_eq!(old.ping("request before the rotation").await, 200);

    // Rotation 1: explicit reload.
    install(gw.dir(), &cert_b);
    gw.reload("reload with certificate B")
        .await
        .expect("reload with certificate B");
    assert_eq!(
        which(&served_leaf(&ca, addr).await, &known),
        "B",
        "a new handshake sees certificate B"
    );
    let (status, _) = gw.post("/mcp", PING, None).await;
    assert_eq!(status, 200, "a new client works with certificate B");
    assert_eq!(
        old.ping("request on the connection opened before the reload")
            .await,
        200
    );

    // Rotation 2: the watcher sees the files change, without any reload call.
    install(gw.dir(), &cert_c);
    within(15, "the watcher serves certificate C", async {
        while served_leaf(&ca, addr).await != der(&cert_c) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        old.ping("request on the connection opened before both rotations")
            .await,
        200
    );
    assert_eq!(gw.post("/mcp", PING, None).await.0, 200);
}

#[tokio::test]
async fn a_certificate_that_does_not_match_its_key_is_refused_and_nothing_changes() {
    let upstream = UpstreamServer::mcp().await;
    let ca = TestCa::new();
    let (cert_a, cert_b, cert_c) = (
        ca.server_cert(KeyKind::EcdsaP256),
        ca.server_cert(KeyKind::EcdsaP256),
        ca.server_cert(KeyKind::EcdsaP256),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    install(&d, &cert_a);
    let gw = Live::start(dir, &config(&d, true, &tls_routes(&upstream)), Some(&ca)).await;
    let addr = gw.running.public_addr;

    // B's certificate with C's key, and a config that adds a route.
    write_atomically(&d.join("cert.pem"), cert_b.cert_pem.as_bytes());
    write_atomically(&d.join("key.pem"), cert_c.key_pem.as_bytes());
    let more = format!(
        "{}\n[[routes]]\nid = \"new\"\npath = \"/new/mcp\"\nupstream = {:?}\nallow_anonymous = true\n",
        tls_routes(&upstream),
        upstream.url("/mcp")
    );
    gw.rewrite(&config(&d, true, &more));
    let err = gw
        .reload("reload with a mismatched key")
        .await
        .expect_err("a certificate and key that do not match are refused");
    assert!(matches!(err, ReloadError::Tls(_)), "{err:?}");
    assert_eq!(
        which(
            &served_leaf(&ca, addr).await,
            &[("A", &cert_a), ("B", &cert_b), ("C", &cert_c)]
        ),
        "A",
        "certificate A stays in service"
    );
    assert_eq!(
        gw.post("/new/mcp", PING, None).await.0,
        404,
        "the config of the refused reload does not apply"
    );
    assert_eq!(gw.post("/mcp", PING, None).await.0, 200);
}

/// `Reloader::reload` promises "on any error the running state is left untouched", and the
/// README says a refused config leaves the old one serving. A config that validates but fails
/// to build (here: a route `ca_file` that does not exist) is refused; the certificate that was
/// rotated on disk at the same time must then not be served either.
#[tokio::test]
async fn a_reload_refused_after_validation_does_not_swap_the_certificate() {
    let upstream = UpstreamServer::mcp().await;
    let ca = TestCa::new();
    let (cert_a, cert_b) = (
        ca.server_cert(KeyKind::EcdsaP256),
        ca.server_cert(KeyKind::EcdsaP256),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    install(&d, &cert_a);
    let gw = Live::start(dir, &config(&d, true, &tls_routes(&upstream)), Some(&ca)).await;
    let addr = gw.running.public_addr;

    install(&d, &cert_b);
    // Valid on its face (https upstream, a CA file named), refused when the route is built.
    let broken = "[[routes]]\nid = \"r\"\npath = \"/mcp\"\nupstream = \"https://127.0.0.1:9/mcp\"\n\
                  allow_anonymous = true\nca_file = \"no-such-ca.pem\"\n";
    gw.rewrite(&config(&d, true, broken));
    let err = gw
        .reload("reload with a missing ca_file")
        .await
        .expect_err("a route whose ca_file cannot be read is refused");
    assert!(
        err.to_string().contains("routes[0]"),
        "the problem names the route: {err}"
    );
    assert_eq!(
        gw.post("/mcp", PING, None).await.0,
        200,
        "old config serves"
    );
    assert_eq!(
        which(
            &served_leaf(&ca, addr).await,
            &[("A", &cert_a), ("B", &cert_b)]
        ),
        "A",
        "the refused reload left the running state untouched, certificate included"
    );
}
