//! The built `mcpgate` binary as a separate process: for what only a real process shows (its
//! log output, several replicas side by side). Most tests run the gateway in-process instead.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
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
    stdout: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
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
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcpgate");
        let (log, stdout) = (Arc::default(), Arc::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<(SocketAddr, SocketAddr)>();
        let mut tx = Some(tx);
        let readers = vec![
            collect(
                child.stderr.take().expect("stderr pipe"),
                &log,
                move |line| {
                    if let Some(addrs) = started_line(line)
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addrs);
                    }
                },
            ),
            collect(child.stdout.take().expect("stdout pipe"), &stdout, |_| {}),
        ];
        let mut gateway = GatewayProcess {
            name,
            child,
            public: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            log,
            stdout,
            readers,
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

    /// What the process wrote to stdout (the audit trail, with the default sink).
    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// SIGTERM, as an orchestrator stops it: waits for the exit (the gateway drains and flushes
    /// its audit trail first) and for the end of both output streams.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        let exited = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(status) = self.child.try_wait().expect("wait for mcpgate") {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let status = exited.unwrap_or_else(|_| panic!("gateway {} ignored SIGTERM", self.name));
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
        status
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub async fn metrics(&self) -> MetricsText {
        metrics_of(self.admin).await
    }

    /// Sends SIGHUP and waits for the "config reloaded" line: everything the process logged
    /// before the signal is in [`Self::log_lines`] once this returns.
    pub async fn reload(&self) {
        let seen = self.log_lines().len();
        self.signal("-HUP");
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

/// Reads `stream` to the end on a thread (so the pipe never fills), keeping every line and
/// showing each to `seen` first.
fn collect(
    stream: impl std::io::Read + Send + 'static,
    lines: &Arc<Mutex<Vec<String>>>,
    mut seen: impl FnMut(&str) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            seen(&line);
            lines.lock().unwrap().push(line);
        }
    })
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
