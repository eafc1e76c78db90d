//! The built `mcpgate` binary as a separate process: for what only a real process shows (its
//! log output, several replicas side by side). Most tests run the gateway in-process instead.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::gateway::{MetricsText, metrics_of};
use super::tls::{HttpVersion, plain_client};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");

/// A running `mcpgate` process that logs JSON to stderr. Dropping it kills the process (by
/// its PID) and reaps it.
pub struct GatewayProcess {
    pub name: &'static str,
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// Starts `mcpgate --config <config>` with `log_filter` and the extra environment, reads
    /// the bound addresses from its start-up log line and waits for `/readyz`.
    pub async fn start(
        name: &'static str,
        config: &Path,
        log_filter: &str,
        env: &[(&str, &str)],
    ) -> GatewayProcess {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json", "--log-filter", log_filter])
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcpgate");
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<(SocketAddr, SocketAddr)>();
        let lines = log.clone();
        // Reads stderr to the end (so the pipe never fills), reporting the addresses once.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addrs) = started_line(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addrs);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut gateway = GatewayProcess {
            name,
            child,
            public: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok((public, admin))) => {
                gateway.public = public;
                gateway.admin = admin;
            }
            _ => panic!(
                "gateway {name} did not report its addresses (exit: {:?}); log:\n{}",
                gateway.child.try_wait(),
                gateway.log_text()
            ),
        }
        gateway.wait_ready().await;
        gateway
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    pub async fn metrics(&self) -> MetricsText {
        metrics_of(self.admin).await
    }

    /// Sends SIGHUP and waits for the "config reloaded" line: everything the process logged
    /// before the signal is in [`Self::log_lines`] once this returns.
    pub async fn reload(&self) {
        let seen = self.log_lines().len();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP {}", self.child.id());
        self.poll_until("reload", || async {
            self.log_lines()[seen..]
                .iter()
                .any(|l| l.contains("\"config reloaded\""))
        })
        .await;
    }

    async fn wait_ready(&self) {
        let client = plain_client(HttpVersion::Auto);
        let url = format!("http://{}/readyz", self.admin);
        self.poll_until("be ready", || async {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|resp| resp.status() == 200)
        })
        .await;
    }

    /// Polls `done` until it holds, failing the test with the log after 30 s.
    async fn poll_until<F: Future<Output = bool>>(&self, what: &str, mut done: impl FnMut() -> F) {
        let polled = tokio::time::timeout(Duration::from_secs(30), async {
            while !done().await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            polled.is_ok(),
            "gateway {} did not {what} within 30 s; log:\n{}",
            self.name,
            self.log_text()
        );
    }
}

/// `listen` and `admin` from the JSON "mcpgate started" log event.
fn started_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["message"] != "mcpgate started" {
        return None;
    }
    let public = v["listen"].as_str()?.parse().ok()?;
    let admin = v["admin"].as_str()?.parse().ok()?;
    Some((public, admin))
}
