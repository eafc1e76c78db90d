//! Several replicas (issue #6): two real `mcpgate` processes sharing a session secret accept
//! each other's sealed `Mcp-Session-Id` for the same principal, refuse it for another principal,
//! and a replica with another secret refuses it too.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const SECRET_VAR: &str = "MCPGATE_TEST_REPLICA_SESSION_SECRET";
const SHARED_SECRET: &str = "replicas-share-this-session-secret-0123456789";
const OTHER_SECRET: &str = "a-different-session-secret-for-replica-c-98765";
const UPSTREAM_SESSION: &str = "upstream-session-7f3a";
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"replica-test","version":"1"}}}"#;
const PING: &str = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;

/// One replica: a gateway process with the session secret in its environment.
struct Replica(GatewayProcess);

impl Replica {
    async fn start(name: &'static str, config: &Path, secret: &str) -> Replica {
        Replica(GatewayProcess::start(name, config, "info", &[(SECRET_VAR, secret)]).await)
    }

    fn log_text(&self) -> String {
        self.0.log_text()
    }

    /// POSTs a JSON-RPC body to `/mcp` with a bearer token and optionally a session id.
    async fn post(&self, body: &str, token: &str, session: Option<&str>) -> reqwest::Response {
        let mut req = plain_client(HttpVersion::Auto)
            .post(format!("http://{}/mcp", self.0.public))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .body(body.to_string());
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("POST to replica {}: {e}", self.0.name))
    }
}

/// A config for one replica in `dir`: ephemeral loopback ports, the shared state directory
/// (so every replica has the same dev issuer key), the same public URL (so the same resource),
/// the same upstream, and the session secret from `SECRET_VAR`.
fn write_config(dir: &Path, state: &Path, upstream: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = {PUBLIC_URL:?}\nstate_dir = {:?}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [session]\nsecret_env = {SECRET_VAR:?}\n\n\
         [[issuers]]\nid = \"dev\"\nkind = \"dev\"\n\n\
         [[routes]]\nid = \"r\"\npath = \"/mcp\"\nupstream = {upstream:?}\nissuers = [\"dev\"]\n",
        state.display().to_string()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `mcpgate token --config <config> --route r --subject <subject>`, run as a process.
fn mint(config: &Path, subject: &str) -> String {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args([
            "token",
            "--route",
            "r",
            "--subject",
            subject,
            "--ttl",
            "10m",
        ])
        .env(SECRET_VAR, SHARED_SECRET)
        .stdin(Stdio::null())
        .output()
        .expect("run mcpgate token");
    assert!(
        out.status.success(),
        "mcpgate token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_secret_accept_each_others_sessions_for_the_same_principal_only() {
    let upstream = UpstreamServer::start(|req| {
        let reply = common::upstream::mcp_behaviour(req);
        let is_initialize = req.json().is_some_and(|m| m["method"] == "initialize");
        if is_initialize {
            reply.header("mcp-session-id", UPSTREAM_SESSION)
        } else {
            reply
        }
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let up = upstream.url("/mcp");
    let config_a = write_config(&root.path().join("a"), &state, &up);
    let config_b = write_config(&root.path().join("b"), &state, &up);
    let config_c = write_config(&root.path().join("c"), &state, &up);

    // One after the other: the first start creates the shared dev issuer key.
    let a = Replica::start("A", &config_a, SHARED_SECRET).await;
    let b = Replica::start("B", &config_b, SHARED_SECRET).await;
    let alice = mint(&config_a, "alice");
    let other = mint(&config_a, "other");

    // Initialise on A: the client gets a sealed id, not the upstream's.
    let resp = a.post(INITIALIZE, &alice, None).await;
    assert_eq!(
        resp.status(),
        200,
        "initialize on A; log:\n{}",
        a.log_text()
    );
    let sealed = resp
        .headers()
        .get("mcp-session-id")
        .expect("A returns a session id")
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        !sealed.contains(UPSTREAM_SESSION) && sealed != UPSTREAM_SESSION,
        "the upstream id is sealed, not passed through: {sealed}"
    );

    // The same principal continues the session on B; the upstream sees its own id.
    let seen = upstream.requests().len();
    let resp = b.post(PING, &alice, Some(&sealed)).await;
    assert_eq!(
        resp.status(),
        200,
        "B accepts A's session for the same subject; log:\n{}",
        b.log_text()
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 2, "{body}");
    let all = upstream.wait_for_requests(seen + 1).await;
    let last = all.last().unwrap();
    assert_eq!(last.json().unwrap()["method"], "ping");
    assert_eq!(
        last.header("mcp-session-id"),
        Some(UPSTREAM_SESSION),
        "the upstream sees the original upstream session id"
    );

    // Another subject presenting the id on B: 404, and the upstream never sees it.
    let seen = upstream.requests().len();
    let resp = b.post(PING, &other, Some(&sealed)).await;
    assert_eq!(resp.status(), 404, "another principal gets 404 on B");
    assert_eq!(
        upstream.requests().len(),
        seen,
        "refused before the upstream"
    );
    // Control: that token itself is good on B.
    assert_eq!(b.post(PING, &other, None).await.status(), 200);

    // A replica with another secret refuses the session even for its owner.
    let c = Replica::start("C", &config_c, OTHER_SECRET).await;
    let seen = upstream.requests().len();
    let resp = c.post(PING, &alice, Some(&sealed)).await;
    assert_eq!(
        resp.status(),
        404,
        "a replica with another secret gets 404; log:\n{}",
        c.log_text()
    );
    assert_eq!(
        upstream.requests().len(),
        seen,
        "refused before the upstream"
    );
    // Control: the owner's token itself is good on C.
    assert_eq!(c.post(PING, &alice, None).await.status(), 200);

    // And A, where it was made, still accepts it.
    assert_eq!(a.post(PING, &alice, Some(&sealed)).await.status(), 200);
}
