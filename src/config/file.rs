//! The serde mirror of `gateway.toml`: exactly what the file may say, nothing validated yet.
//!
//! Units and URLs stay strings here so that `validate` can report every bad value with its key
//! path in one run instead of stopping at the first one serde meets.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerFile,
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub issuers: Vec<IssuerFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    pub audit: Option<AuditFile>,
    pub session: Option<SessionFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: String,
    pub public_url: String,
    #[serde(default)]
    pub allow_plain_http: bool,
    pub tls: Option<TlsFile>,
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_body: Option<String>,
    pub drain_timeout: Option<String>,
    pub state_dir: Option<String>,
    pub cors: Option<CorsFile>,
    /// Serve the default route's issuer metadata at /.well-known/oauth-authorization-server
    /// for clients that still follow MCP 2025-03-26.
    pub authorization_server_metadata: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    pub sink: Option<String>,
    pub file: Option<String>,
    #[serde(default)]
    pub log_arguments: bool,
    #[serde(default)]
    pub redact_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerFile {
    pub id: String,
    pub kind: Option<String>,
    pub issuer: Option<String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    pub jwks_uri: Option<String>,
    pub leeway: Option<String>,
    pub refresh_min_interval: Option<String>,
    pub refresh_default: Option<String>,
    pub refresh_max: Option<String>,
    pub max_staleness: Option<String>,
    pub ca_file: Option<String>,
    pub introspection: Option<IntrospectionFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionFile {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<String>,
    pub cache_ttl: Option<String>,
    pub inactive_ttl: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub id: String,
    pub path: String,
    pub upstream: String,
    #[serde(default)]
    pub subpaths: bool,
    #[serde(default)]
    pub default: bool,
    pub max_body: Option<String>,
    pub connect_timeout: Option<String>,
    pub upstream_timeout: Option<String>,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub strip_headers: Vec<String>,
    #[serde(default)]
    pub issuers: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub resource: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub allow_anonymous: bool,
    #[serde(default)]
    pub allow_batches: bool,
    pub filter_lists: Option<bool>,
    pub end_streams_at_expiry: Option<bool>,
    pub resource_name: Option<String>,
    pub resource_documentation: Option<String>,
    pub identity_headers: Option<IdentityHeadersFile>,
    #[serde(default)]
    pub upstream_headers: Vec<UpstreamHeaderFile>,
    pub rate_limit: Option<RateLimitFile>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyFile>,
    #[serde(default)]
    pub tools: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub methods: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub resources: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub prompts: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeadersFile {
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Option<String>,
    pub issuer: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHeaderFile {
    pub name: String,
    pub value_env: Option<String>,
    pub value_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub per_second: f64,
    pub burst: u32,
    #[serde(default)]
    pub per_tool: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyFile {
    pub hash: String,
    pub subject: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}
