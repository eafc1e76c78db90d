//! Wiring: load the config, start the demo upstream, the public and admin listeners, and
//! stop on SIGTERM/SIGINT with a drain.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::audit::Auditor;
use crate::auth::AuthMetrics;
use crate::config::{self, Config, UpstreamTarget};
use crate::gateway::{self, Gateway, Shared};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::reload::Reloader;
use crate::server::{self, Limits};
use crate::tls::{self, CertResolver};

/// Start-up failures, each mapped to one stderr line and an exit code by `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Build(#[from] gateway::BuildError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the built-in demo upstream: {0}")]
    Demo(std::io::Error),
    #[error("{0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot register metrics: {0}")]
    Metrics(prometheus::Error),
}

impl StartError {
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) => 2,
            StartError::Tls(_)
            | StartError::Build(_)
            | StartError::Bind { .. }
            | StartError::Demo(_)
            | StartError::Audit(_)
            | StartError::Metrics(_) => 1,
        }
    }
}

/// How long shutdown waits for the audit writer to take its last events.
const AUDIT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running gateway: its bound addresses and the handle that stops it.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub done: tokio::task::JoinHandle<()>,
    /// Reloads the config file it was started from (SIGHUP and file changes do the same).
    pub reloader: Arc<Reloader>,
}

/// Loads `path`, binds both listeners and serves in the background.
pub async fn start(path: &Path) -> Result<Running, StartError> {
    let config = Arc::new(config::load(path)?);
    let shared = Arc::new(shared(&config).await?);
    let metrics = shared.metrics.clone();
    let gw = Gateway::build(config.clone(), shared.clone())?;
    metrics.reload(true);
    let current = Arc::new(ArcSwap::from_pointee(gw));
    let certs = match &config.server.tls {
        Some(files) => Some(Arc::new(CertResolver::load(files)?)),
        None => None,
    };
    let acceptor = certs.clone().map(tls::server_config);
    let public = bind(config.server.listen).await?;
    let admin = bind(config.admin.listen).await?;
    let public_addr = public.local_addr().map_err(|source| StartError::Bind {
        addr: config.server.listen,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        addr: config.admin.listen,
        source,
    })?;
    let shutdown = CancellationToken::new();
    let limits = Limits {
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
        idle_timeout: config.server.idle_timeout,
        drain_timeout: config.server.drain_timeout,
    };
    let admin_limits = Limits {
        max_connections: 64,
        ..limits
    };
    let handler_state = current.clone();
    let public_task = server::serve(
        public,
        acceptor,
        limits,
        Some(metrics),
        shutdown.clone(),
        // Boxed: hyper keeps the service future inline in each connection's state, so a
        // pointer here keeps idle connections small and avoids moving a large future.
        move |req, conn| Box::pin(gateway::handle(handler_state.load_full(), req, conn)),
    );
    let admin_state = current.clone();
    let admin_task = server::serve(
        admin,
        None,
        admin_limits,
        None,
        shutdown.clone(),
        move |req, _| crate::admin::handle(admin_state.clone(), req),
    );
    info!(listen = %public_addr, admin = %admin_addr, routes = config.routes.len(), tls = config.server.tls.is_some(), "mcpgate started");
    let reloader = Arc::new(Reloader::new(path.to_path_buf(), current.clone(), certs));
    reloader.clone().spawn_watchers(shutdown.clone());
    let done = tokio::spawn(async move {
        tokio::join!(public_task, admin_task);
        // The audit trail of the drained requests is written before the process may exit, but
        // a sink that no longer accepts writes (a stalled stdout pipe) cannot hold the exit.
        let close = tokio::task::spawn_blocking(move || shared.auditor.close());
        if tokio::time::timeout(AUDIT_CLOSE_TIMEOUT, close)
            .await
            .is_err()
        {
            error!("audit sink did not take the last events in time; exiting without them");
        }
    });
    Ok(Running {
        public_addr,
        admin_addr,
        shutdown,
        done,
        reloader,
    })
}

/// State kept across reloads: metrics registry, rate limits, audit sink, demo upstream.
async fn shared(config: &Config) -> Result<Shared, StartError> {
    let metrics = Arc::new(Metrics::new());
    let auth_metrics = AuthMetrics::register(&metrics.registry).map_err(StartError::Metrics)?;
    let demo = if config
        .routes
        .iter()
        .any(|r| matches!(r.upstream, UpstreamTarget::BuiltinDemo))
    {
        Some(crate::demo::spawn().await.map_err(StartError::Demo)?)
    } else {
        None
    };
    let auditor = Auditor::start(&config.audit, metrics.clone())?;
    Ok(Shared {
        metrics,
        auth_metrics,
        limiter: RateLimiter::new(),
        auditor,
        demo,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Runs until SIGTERM or SIGINT, then drains.
pub async fn run(path: &Path) -> Result<(), StartError> {
    let running = start(path).await?;
    wait_for_signal().await;
    info!("shutdown signal received");
    running.shutdown.cancel();
    if let Err(e) = running.done.await {
        error!(error = %e, "server task failed");
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `mcpgate check`: the effective routes, one block each.
pub fn describe(config: &Config) -> String {
    let mut out = format!(
        "listen {} ({}), public_url {}, admin {}\n",
        config.server.listen,
        if config.server.tls.is_some() {
            "TLS"
        } else {
            "plain HTTP"
        },
        config.server.public_url,
        config.admin.listen
    );
    for r in &config.routes {
        let upstream = match &r.upstream {
            UpstreamTarget::Http(u) => u.to_string(),
            UpstreamTarget::BuiltinDemo => "builtin:demo".into(),
        };
        let issuers: Vec<&str> = r
            .issuers
            .iter()
            .map(|&i| config.issuers[i].id.as_str())
            .collect();
        out.push_str(&format!(
            "route {}: {}{} -> {}\n  resource {}\n  issuers [{}], scopes [{}], api keys {}, anonymous {}, max body {} bytes, upstream timeout {:?}\n",
            r.id,
            r.path,
            if r.subpaths { " (and subpaths)" } else { "" },
            upstream,
            r.resource,
            issuers.join(", "),
            r.scopes.join(" "),
            r.api_keys.len(),
            r.allow_anonymous,
            r.max_body,
            r.upstream_timeout,
        ));
    }
    out
}
