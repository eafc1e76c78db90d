//! The validated runtime configuration: typed once at start-up, never re-parsed on the hot path.
//!
//! `file` mirrors what `gateway.toml` may say, `validate` turns it into the types below and
//! collects every problem with its key path, `units` parses durations and sizes.

mod file;
mod issuers;
mod units;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub use units::{parse_duration, parse_size};

/// The whole gateway configuration after validation.
#[derive(Debug)]
pub struct Config {
    pub server: Server,
    pub admin: Admin,
    pub issuers: Vec<Issuer>,
    pub routes: Vec<Route>,
    pub audit: Audit,
    pub session: Session,
    /// Directory of the config file; relative paths in the file are resolved against it.
    pub base_dir: PathBuf,
}

#[derive(Debug)]
pub struct Server {
    pub listen: SocketAddr,
    /// Base URL clients use, without a trailing slash.
    pub public_url: String,
    pub tls: Option<TlsFiles>,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_body: u64,
    pub drain_timeout: Duration,
    pub state_dir: PathBuf,
    /// Origins allowed for browser clients, compared byte for byte with the `Origin` header.
    pub cors_allowed_origins: Vec<HeaderValue>,
    pub authorization_server_metadata: bool,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug)]
pub struct Admin {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Stdout,
    File(PathBuf),
}

#[derive(Debug)]
pub struct Audit {
    pub sink: AuditSink,
    pub log_arguments: bool,
    pub redact_keys: Vec<String>,
}

#[derive(Debug)]
pub struct Session {
    /// Key for the MAC that binds gateway-issued session ids to a principal; shared by replicas.
    pub secret: Option<Secret>,
    /// Sealed session ids older than this are refused (404, so the client re-initialises).
    pub max_age: Duration,
}

pub use crate::auth::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerKind {
    /// A real authorization server, discovered over HTTPS.
    Oidc,
    /// The embedded development issuer: loopback only, keys in `state_dir`.
    Dev,
}

#[derive(Debug)]
pub struct Issuer {
    pub id: String,
    pub kind: IssuerKind,
    pub issuer: String,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub jwks_uri: Option<url::Url>,
    pub leeway: Duration,
    pub refresh_min_interval: Duration,
    pub refresh_default: Duration,
    pub refresh_max: Duration,
    pub max_staleness: Duration,
    pub ca_file: Option<PathBuf>,
    pub introspection: Option<Introspection>,
}

#[derive(Debug)]
pub struct Introspection {
    pub endpoint: url::Url,
    pub client_id: String,
    pub client_secret: Secret,
    pub cache_ttl: Duration,
    pub inactive_ttl: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    Http(http::Uri),
    /// The in-process demo MCP server, bound to a loopback port at start-up.
    BuiltinDemo,
}

#[derive(Debug)]
pub struct Route {
    pub id: Arc<str>,
    pub path: String,
    pub subpaths: bool,
    pub default: bool,
    pub upstream: UpstreamTarget,
    pub max_body: u64,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub strip_headers: Vec<HeaderName>,
    /// Indexes into `Config::issuers` of the issuers this route trusts.
    pub issuers: Vec<usize>,
    pub scopes: Vec<String>,
    /// The RFC 8707 resource identifier: the URL clients use, byte for byte.
    pub resource: String,
    pub audiences: Vec<String>,
    pub allow_anonymous: bool,
    pub allow_batches: bool,
    pub filter_lists: bool,
    /// A GET's event stream ends once the credential that opened it is no longer accepted.
    pub end_streams_at_expiry: bool,
    pub resource_name: Option<String>,
    pub resource_documentation: Option<String>,
    pub identity_headers: IdentityHeaders,
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    pub rate_limit: Option<RateLimit>,
    pub api_keys: Vec<ApiKeySpec>,
    pub tools: BTreeMap<String, Vec<String>>,
    pub methods: BTreeMap<String, Vec<String>>,
    pub resources: BTreeMap<String, Vec<String>>,
    pub prompts: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct IdentityHeaders {
    pub subject: Option<HeaderName>,
    pub client_id: Option<HeaderName>,
    pub scopes: Option<HeaderName>,
    pub issuer: Option<HeaderName>,
}

impl IdentityHeaders {
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> + Clone {
        [&self.subject, &self.client_id, &self.scopes, &self.issuer]
            .into_iter()
            .flatten()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
    /// One bucket per tool (for tools/call) instead of one per route.
    pub per_tool: bool,
}

pub use crate::auth::ApiKey as ApiKeySpec;

/// One problem in the config, with the key path it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Syntax { path: String, reason: String },
    #[error("{} problem(s) in the config:\n{}", .0.len(), render(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem, one per line, each starting with its key path.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(list) => list.iter().map(Problem::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    from_str(&text, &base_dir)
}

/// Parses and validates config text; relative paths resolve against `base_dir`.
pub fn from_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        path: e
            .span()
            .map_or_else(|| "(file)".into(), |span| position(text, span.start)),
        reason: one_line(&e.to_string()),
    })?;
    let file: file::FileConfig =
        serde_path_to_error::deserialize(deserializer).map_err(|e| ConfigError::Syntax {
            path: e.path().to_string(),
            reason: one_line(&e.inner().to_string()),
        })?;
    validate::validate(file, base_dir)
}

/// "line N, column M" (1-based) of a byte offset, for syntax errors that have no key path yet.
fn position(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}")
}

/// toml's messages quote the offending source line; keep only the reason.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| !l.contains('|') && !l.trim_start().starts_with('^'))
        .or(lines.first())
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

impl Config {
    /// The route that owns the root metadata document: the one marked default, or the only one.
    pub fn default_route(&self) -> Option<usize> {
        if let Some(i) = self.routes.iter().position(|r| r.default) {
            return Some(i);
        }
        (self.routes.len() == 1).then_some(0)
    }
}
