//! Live reload: on SIGHUP or when the config, certificate or key file changes, validate the new
//! config, build a new gateway state and swap it in atomically. Requests in flight finish on the
//! state they started with; an invalid config is refused, logged, and the old state keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::gateway::{BuildError, Gateway};
use crate::tls::{CertResolver, TlsError};

/// How often the watched files are checked. Polling content hashes (not inotify) also sees a
/// Kubernetes ConfigMap or Secret update, which swaps a symlink rather than writing the file.
const POLL: Duration = Duration::from_secs(2);
/// How long a new state may take to load issuer keys before it is swapped in anyway.
const READY_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0} cannot change while running; restart mcpgate to apply it")]
    NeedsRestart(&'static str),
}

pub struct Reloader {
    path: PathBuf,
    current: Arc<ArcSwap<Gateway>>,
    certs: Option<Arc<CertResolver>>,
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        current: Arc<ArcSwap<Gateway>>,
        certs: Option<Arc<CertResolver>>,
    ) -> Self {
        Reloader {
            path,
            current,
            certs,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reloads now; on any error the running state is left untouched.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.lock.lock().await;
        let old = self.current.load_full();
        let result = self.try_reload(&old).await;
        old.metrics().reload(result.is_ok());
        match &result {
            Ok(()) => info!(path = %self.path.display(), "config reloaded"),
            Err(e) => {
                for line in e.to_string().lines() {
                    error!(path = %self.path.display(), problem = line, "config reload refused; the previous config keeps serving");
                }
            }
        }
        result
    }

    async fn try_reload(&self, old: &Gateway) -> Result<(), ReloadError> {
        let new = Arc::new(config::load(&self.path)?);
        restart_only(&old.config, &new)?;
        // The certificate is checked now but served only once everything else has been built,
        // so a reload refused for any reason changes nothing.
        let cert = match &new.server.tls {
            Some(files) if self.certs.is_some() => Some(CertResolver::prepare(files)?),
            _ => None,
        };
        let gw = Gateway::build(new, old.shared.clone())?;
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        while !gw.ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !gw.ready() {
            warn!("new config swapped in before all issuer keys loaded; /readyz reports it");
        }
        if let (Some(certs), Some(cert)) = (&self.certs, cert) {
            certs.install(cert);
        }
        self.current.store(Arc::new(gw));
        Ok(())
    }

    /// Reloads on SIGHUP and whenever a watched file's content changes, until `shutdown`.
    pub fn spawn_watchers(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut hup =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(s) => s,
                    Err(e) => {
                        error!(error = %e, "cannot install the SIGHUP handler; file watching only");
                        return self.watch_files(shutdown).await;
                    }
                };
            let mut seen = self.fingerprint();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = hup.recv() => {
                        info!("SIGHUP received; reloading");
                        let _ = self.reload().await;
                        seen = self.fingerprint();
                    }
                    _ = tokio::time::sleep(POLL) => {
                        let now = self.fingerprint();
                        if now != seen {
                            info!("config or certificate file changed; reloading");
                            let _ = self.reload().await;
                            seen = now;
                        }
                    }
                }
            }
        });
    }

    async fn watch_files(&self, shutdown: CancellationToken) {
        let mut seen = self.fingerprint();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {
                    let now = self.fingerprint();
                    if now != seen {
                        let _ = self.reload().await;
                        seen = now;
                    }
                }
            }
        }
    }

    /// A hash over the config file and the current TLS files.
    fn fingerprint(&self) -> Vec<u8> {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        hash_file(&mut h, &self.path);
        if let Some(tls) = &self.current.load().config.server.tls {
            hash_file(&mut h, &tls.cert_file);
            hash_file(&mut h, &tls.key_file);
        }
        h.finish().as_ref().to_vec()
    }
}

fn hash_file(h: &mut aws_lc_rs::digest::Context, path: &Path) {
    match std::fs::read(path) {
        Ok(bytes) => h.update(&bytes),
        Err(_) => h.update(b"\0missing"),
    }
}

/// Listener settings are bound to sockets and connection tasks made at start-up.
fn restart_only(old: &Config, new: &Config) -> Result<(), ReloadError> {
    let checks: [(&'static str, bool); 5] = [
        ("server.listen", old.server.listen != new.server.listen),
        ("admin.listen", old.admin.listen != new.admin.listen),
        (
            "server.tls (on/off)",
            old.server.tls.is_some() != new.server.tls.is_some(),
        ),
        (
            "server.max_connections, header_read_timeout, idle_timeout, drain_timeout",
            old.server.max_connections != new.server.max_connections
                || old.server.header_read_timeout != new.server.header_read_timeout
                || old.server.idle_timeout != new.server.idle_timeout
                || old.server.drain_timeout != new.server.drain_timeout,
        ),
        (
            "audit",
            old.audit.sink != new.audit.sink
                || old.audit.log_arguments != new.audit.log_arguments
                || old.audit.redact_keys != new.audit.redact_keys,
        ),
    ];
    match checks.into_iter().find(|(_, changed)| *changed) {
        Some((key, _)) => Err(ReloadError::NeedsRestart(key)),
        None => Ok(()),
    }
}
