//! Turns the file mirror into the runtime `Config`, collecting every problem with its key path.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::file::{
    ApiKeyFile, AuditFile, FileConfig, IdentityHeadersFile, RouteFile, ServerFile, SessionFile,
    UpstreamHeaderFile,
};
use super::units::{parse_duration, parse_size};
use super::{
    Admin, ApiKeySpec, Audit, AuditSink, Config, ConfigError, IdentityHeaders, Problem, RateLimit,
    Route, Secret, Server, Session, TlsFiles, UpstreamTarget,
};

/// Headers a route may never be configured to inject or use for identity: they carry
/// credentials or framing that the gateway owns.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "mcp-session-id",
];

/// Collects problems so that one run reports all of them.
#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// Runs a parser and records its error under `path`.
    pub(super) fn check<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|reason| self.push(path, reason)).ok()
    }

    pub(super) fn duration(
        &mut self,
        path: &str,
        value: &Option<String>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(text) => self.check(path, parse_duration(text)).unwrap_or(default),
        }
    }

    pub(super) fn size(&mut self, path: &str, value: &Option<String>, default: u64) -> u64 {
        match value {
            None => default,
            Some(text) => self.check(path, parse_size(text)).unwrap_or(default),
        }
    }

    /// Reads a secret from exactly one of an environment variable or a file.
    pub(super) fn secret(
        &mut self,
        path: &str,
        env: &Option<String>,
        file: &Option<String>,
        base: &Path,
    ) -> Option<Secret> {
        match (env, file) {
            (Some(_), Some(_)) => {
                self.push(path, "set either _env or _file, not both");
                None
            }
            (None, None) => {
                self.push(path, "missing: set _env (an environment variable) or _file");
                None
            }
            (Some(var), None) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    self.push(
                        format!("{path}_env"),
                        format!("environment variable {var} is not set"),
                    );
                    None
                }
            },
            (None, Some(f)) => match std::fs::read_to_string(resolve(base, f)) {
                Ok(v) if !v.trim().is_empty() => {
                    Some(Secret::new(v.trim_end_matches(['\r', '\n'])))
                }
                Ok(_) => {
                    self.push(format!("{path}_file"), format!("{f:?} is empty"));
                    None
                }
                Err(e) => {
                    self.push(format!("{path}_file"), format!("cannot read {f:?}: {e}"));
                    None
                }
            },
        }
    }
}

pub(super) fn resolve(base: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub(super) fn validate(file: FileConfig, base: &Path) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let server = server(&file.server, base, &mut problems);
    let admin = admin(&file, &mut problems);
    let issuers = super::issuers::issuers(&file.issuers, &server, base, &mut problems);
    let routes = routes(&file.routes, &server, &file.issuers, base, &mut problems);
    let audit = audit(file.audit.as_ref(), base, &mut problems);
    let session = session(file.session.as_ref(), base, &mut problems);
    if admin.listen == server.listen && server.listen.port() != 0 {
        problems.push(
            "admin.listen",
            "must differ from server.listen: metrics never share the public listener",
        );
    }
    if !problems.0.is_empty() {
        return Err(ConfigError::Invalid(problems.0));
    }
    Ok(Config {
        server,
        admin,
        issuers,
        routes,
        audit,
        session,
        base_dir: base.to_path_buf(),
    })
}

fn socket_addr(problems: &mut Problems, path: &str, text: &str) -> SocketAddr {
    problems
        .check(
            path,
            text.parse::<SocketAddr>()
                .map_err(|_| format!("{text:?} is not an address:port such as \"127.0.0.1:8443\"")),
        )
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn server(s: &ServerFile, base: &Path, problems: &mut Problems) -> Server {
    let listen = socket_addr(problems, "server.listen", &s.listen);
    let public_url = public_url(&s.public_url, problems);
    if s.tls.is_none() && !listen.ip().is_loopback() && !s.allow_plain_http {
        problems.push("server.tls", format!("required on the non-loopback address {listen} (or set server.allow_plain_http = true behind a TLS-terminating load balancer)"));
    }
    let tls = s.tls.as_ref().map(|t| TlsFiles {
        cert_file: resolve(base, &t.cert_file),
        key_file: resolve(base, &t.key_file),
    });
    let mut cors_allowed_origins = s
        .cors
        .as_ref()
        .map(|c| origins(&c.allowed_origins, problems))
        .unwrap_or_default();
    // A page served from the gateway's own origin is never a DNS-rebinding attack.
    if let Ok(own) = HeaderValue::from_str(&public_url)
        && !cors_allowed_origins.contains(&own)
    {
        cors_allowed_origins.push(own);
    }
    let max_connections = s.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        problems.push("server.max_connections", "must be at least 1");
    }
    Server {
        listen,
        public_url,
        tls,
        max_connections,
        header_read_timeout: problems.duration(
            "server.header_read_timeout",
            &s.header_read_timeout,
            Duration::from_secs(10),
        ),
        idle_timeout: problems.duration(
            "server.idle_timeout",
            &s.idle_timeout,
            Duration::from_secs(120),
        ),
        max_body: problems.size("server.max_body", &s.max_body, 1 << 20),
        drain_timeout: problems.duration(
            "server.drain_timeout",
            &s.drain_timeout,
            Duration::from_secs(30),
        ),
        state_dir: resolve(base, s.state_dir.as_deref().unwrap_or(".mcpgate")),
        cors_allowed_origins,
        authorization_server_metadata: s.authorization_server_metadata.unwrap_or(true),
    }
}

fn public_url(text: &str, problems: &mut Problems) -> String {
    let trimmed = text.trim_end_matches('/');
    match url::Url::parse(trimmed) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            trimmed.to_string()
        }
        _ => {
            problems.push(
                "server.public_url",
                format!("{text:?} is not an http(s) URL without query or fragment"),
            );
            trimmed.to_string()
        }
    }
}

fn origins(list: &[String], problems: &mut Problems) -> Vec<HeaderValue> {
    let mut out = Vec::new();
    for (i, o) in list.iter().enumerate() {
        let path = format!("server.cors.allowed_origins[{i}]");
        let ok = url::Url::parse(o).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.path() == "/" && !o.ends_with('/')
        });
        match (ok, HeaderValue::from_str(o)) {
            (Some(_), Ok(v)) => out.push(v),
            _ => problems.push(
                path,
                format!("{o:?} is not an origin such as \"https://app.example.com\""),
            ),
        }
    }
    out
}

fn admin(file: &FileConfig, problems: &mut Problems) -> Admin {
    let text = file
        .admin
        .as_ref()
        .map(|a| a.listen.as_str())
        .unwrap_or("127.0.0.1:9464");
    Admin {
        listen: socket_addr(problems, "admin.listen", text),
    }
}

fn audit(a: Option<&AuditFile>, base: &Path, problems: &mut Problems) -> Audit {
    let Some(a) = a else {
        return Audit {
            sink: AuditSink::Stdout,
            log_arguments: false,
            redact_keys: Vec::new(),
        };
    };
    let sink = match (a.sink.as_deref().unwrap_or("stdout"), &a.file) {
        ("stdout", None) => AuditSink::Stdout,
        ("file", Some(f)) => AuditSink::File(resolve(base, f)),
        ("file", None) => {
            problems.push("audit.file", "required when audit.sink = \"file\"");
            AuditSink::Stdout
        }
        ("stdout", Some(_)) => {
            problems.push("audit.file", "only allowed with audit.sink = \"file\"");
            AuditSink::Stdout
        }
        (other, _) => {
            problems.push(
                "audit.sink",
                format!("{other:?} is not \"stdout\" or \"file\""),
            );
            AuditSink::Stdout
        }
    };
    Audit {
        sink,
        log_arguments: a.log_arguments,
        redact_keys: a.redact_keys.clone(),
    }
}

fn session(s: Option<&SessionFile>, base: &Path, problems: &mut Problems) -> Session {
    let Some(s) = s else {
        return Session {
            secret: None,
            max_age: Duration::from_secs(86_400),
        };
    };
    let secret = if s.secret_env.is_some() || s.secret_file.is_some() {
        problems.secret("session.secret", &s.secret_env, &s.secret_file, base)
    } else {
        None
    };
    if let Some(sec) = &secret
        && sec.expose().len() < 32
    {
        problems.push("session.secret", "must be at least 32 bytes");
    }
    Session {
        secret,
        max_age: problems.duration("session.max_age", &s.max_age, Duration::from_secs(86_400)),
    }
}

fn routes(
    list: &[RouteFile],
    server: &Server,
    issuer_files: &[super::file::IssuerFile],
    base: &Path,
    problems: &mut Problems,
) -> Vec<Route> {
    if list.is_empty() {
        problems.push("routes", "at least one [[routes]] entry is required");
    }
    let mut ids = HashSet::new();
    let mut paths = HashSet::new();
    let mut defaults = 0;
    let mut out = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let p = format!("routes[{i}]");
        if !ids.insert(r.id.as_str()) {
            problems.push(
                format!("{p}.id"),
                format!("{:?} is used by an earlier route", r.id),
            );
        }
        if !paths.insert(r.path.as_str()) {
            problems.push(
                format!("{p}.path"),
                format!("{:?} is used by an earlier route", r.path),
            );
        }
        defaults += usize::from(r.default);
        out.push(route(r, &p, server, issuer_files, base, problems));
    }
    if defaults > 1 {
        problems.push("routes", "at most one route may set default = true");
    }
    out
}

fn route(
    r: &RouteFile,
    p: &str,
    server: &Server,
    issuer_files: &[super::file::IssuerFile],
    base: &Path,
    problems: &mut Problems,
) -> Route {
    if r.id.is_empty()
        || !r
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problems.push(
            format!("{p}.id"),
            format!(
                "{:?} must be non-empty and use only letters, digits, '-' and '_'",
                r.id
            ),
        );
    }
    problems.check(&format!("{p}.path"), route_path(&r.path));
    let upstream = problems
        .check(&format!("{p}.upstream"), upstream(&r.upstream))
        .unwrap_or(UpstreamTarget::BuiltinDemo);
    let https = matches!(&upstream, UpstreamTarget::Http(u) if u.scheme() == Some(&http::uri::Scheme::HTTPS));
    if r.ca_file.is_some() && !https {
        problems.push(
            format!("{p}.ca_file"),
            "applies only to an https upstream".to_string(),
        );
    }
    let resource = r
        .resource
        .clone()
        .unwrap_or_else(|| format!("{}{}", server.public_url, r.path));
    if r.resource.is_some() {
        problems.check(&format!("{p}.resource"), resource_url(&resource));
    }
    let mut audiences = vec![resource.clone()];
    audiences.extend(r.audiences.iter().cloned());
    Route {
        id: Arc::from(r.id.as_str()),
        path: r.path.clone(),
        subpaths: r.subpaths,
        default: r.default,
        upstream,
        max_body: problems.size(&format!("{p}.max_body"), &r.max_body, server.max_body),
        connect_timeout: problems.duration(
            &format!("{p}.connect_timeout"),
            &r.connect_timeout,
            Duration::from_secs(5),
        ),
        upstream_timeout: problems.duration(
            &format!("{p}.upstream_timeout"),
            &r.upstream_timeout,
            Duration::from_secs(60),
        ),
        ca_file: r.ca_file.as_ref().map(|f| resolve(base, f)),
        strip_headers: header_names(
            &r.strip_headers,
            &format!("{p}.strip_headers"),
            false,
            problems,
        ),
        issuers: route_issuers(r, p, issuer_files, problems),
        scopes: scopes(&r.scopes, &format!("{p}.scopes"), problems),
        resource,
        audiences,
        allow_anonymous: r.allow_anonymous,
        allow_batches: r.allow_batches,
        filter_lists: r.filter_lists.unwrap_or(true),
        end_streams_at_expiry: r.end_streams_at_expiry.unwrap_or(true),
        resource_name: r.resource_name.clone(),
        resource_documentation: r.resource_documentation.clone(),
        identity_headers: identity_headers(r.identity_headers.as_ref(), p, problems),
        upstream_headers: upstream_headers(&r.upstream_headers, p, base, problems),
        rate_limit: rate_limit(r, p, problems),
        api_keys: api_keys(&r.api_keys, p, problems),
        tools: scope_table(&r.tools, &format!("{p}.tools"), problems),
        methods: scope_table(&r.methods, &format!("{p}.methods"), problems),
        resources: scope_table(&r.resources, &format!("{p}.resources"), problems),
        prompts: scope_table(&r.prompts, &format!("{p}.prompts"), problems),
    }
}

/// Route paths are compared byte for byte with normalised request paths, so they must
/// themselves be normal: absolute, no empty or dot segments, no trailing slash.
fn route_path(path: &str) -> Result<(), String> {
    let bad = !path.starts_with('/')
        || path.len() < 2
        || path.ends_with('/')
        || path.contains("//")
        || path.contains('%')
        || path.contains(['?', '#'])
        || path.split('/').any(|s| s == "." || s == "..")
        || path.starts_with("/.well-known/");
    if bad {
        return Err(format!(
            "{path:?} must be an absolute path like \"/calendar/mcp\" without '.', '..', '//', '%', a trailing '/' or a /.well-known/ prefix"
        ));
    }
    Ok(())
}

/// RFC 8707 §2: an absolute URI without a fragment; RFC 9728 §3.1 needs a path to insert the
/// well-known segment in front of.
fn resource_url(text: &str) -> Result<(), String> {
    match url::Url::parse(text) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.fragment().is_none()
                && u.query().is_none()
                && u.host().is_some() =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{text:?} is not an http(s) URL without query or fragment"
        )),
    }
}

fn upstream(text: &str) -> Result<UpstreamTarget, String> {
    if text == "builtin:demo" {
        return Ok(UpstreamTarget::BuiltinDemo);
    }
    let err = || format!("{text:?} is not an http(s) URL");
    let url = url::Url::parse(text).map_err(|_| err())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(err());
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!(
            "{text:?} must not carry a query, fragment or credentials"
        ));
    }
    url.as_str()
        .parse::<http::Uri>()
        .map(UpstreamTarget::Http)
        .map_err(|_| err())
}

pub(super) fn header_names(
    list: &[String],
    p: &str,
    reserved_ok: bool,
    problems: &mut Problems,
) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for (i, name) in list.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if reserved_ok || !RESERVED_HEADERS.contains(&h.as_str()) => out.push(h),
            Ok(_) => problems.push(
                format!("{p}[{i}]"),
                format!("{name:?} is reserved by the gateway"),
            ),
            Err(_) => problems.push(
                format!("{p}[{i}]"),
                format!("{name:?} is not a valid header name"),
            ),
        }
    }
    out
}

fn header_name(name: &Option<String>, p: &str, problems: &mut Problems) -> Option<HeaderName> {
    let name = name.as_ref()?;
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) if !RESERVED_HEADERS.contains(&h.as_str()) => Some(h),
        Ok(_) => {
            problems.push(p, format!("{name:?} is reserved by the gateway"));
            None
        }
        Err(_) => {
            problems.push(p, format!("{name:?} is not a valid header name"));
            None
        }
    }
}

fn identity_headers(
    f: Option<&IdentityHeadersFile>,
    p: &str,
    problems: &mut Problems,
) -> IdentityHeaders {
    let Some(f) = f else {
        return IdentityHeaders::default();
    };
    let p = format!("{p}.identity_headers");
    IdentityHeaders {
        subject: header_name(&f.subject, &format!("{p}.subject"), problems),
        client_id: header_name(&f.client_id, &format!("{p}.client_id"), problems),
        scopes: header_name(&f.scopes, &format!("{p}.scopes"), problems),
        issuer: header_name(&f.issuer, &format!("{p}.issuer"), problems),
    }
}

fn upstream_headers(
    list: &[UpstreamHeaderFile],
    p: &str,
    base: &Path,
    problems: &mut Problems,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let hp = format!("{p}.upstream_headers[{i}]");
        let name = header_name(&Some(h.name.clone()), &format!("{hp}.name"), problems);
        let secret = problems.secret(&format!("{hp}.value"), &h.value_env, &h.value_file, base);
        if let (Some(name), Some(secret)) = (name, secret) {
            match HeaderValue::from_str(secret.expose()) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    out.push((name, v));
                }
                Err(_) => problems.push(
                    format!("{hp}.value"),
                    "the value is not a valid header value",
                ),
            }
        }
    }
    out
}

fn rate_limit(r: &RouteFile, p: &str, problems: &mut Problems) -> Option<RateLimit> {
    let rl = r.rate_limit.as_ref()?;
    if !(rl.per_second.is_finite() && rl.per_second > 0.0) {
        problems.push(
            format!("{p}.rate_limit.per_second"),
            "must be a positive number",
        );
    }
    if rl.burst == 0 {
        problems.push(format!("{p}.rate_limit.burst"), "must be at least 1");
    }
    Some(RateLimit {
        per_second: rl.per_second,
        burst: rl.burst,
        per_tool: rl.per_tool,
    })
}

fn api_keys(list: &[ApiKeyFile], p: &str, problems: &mut Problems) -> Vec<ApiKeySpec> {
    let mut out = Vec::new();
    for (i, k) in list.iter().enumerate() {
        let kp = format!("{p}.api_keys[{i}]");
        match crate::auth::parse_api_key_hash(&k.hash) {
            Some(hash) => out.push(ApiKeySpec {
                hash,
                subject: k.subject.clone(),
                scopes: k.scopes.clone(),
            }),
            None => problems.push(
                format!("{kp}.hash"),
                "must be \"sha256:\" followed by 64 hex digits (see `mcpgate hash-key`)",
            ),
        }
        if k.subject.is_empty() {
            problems.push(format!("{kp}.subject"), "must not be empty");
        }
    }
    out
}

/// Scope tokens per RFC 6749 §3.3: printable ASCII without space, quote or backslash. The
/// quote and backslash matter doubly here: scopes are echoed inside WWW-Authenticate.
fn scopes(list: &[String], p: &str, problems: &mut Problems) -> Vec<String> {
    for (i, s) in list.iter().enumerate() {
        if !crate::policy::is_scope_token(s) {
            problems.push(
                format!("{p}[{i}]"),
                format!("{s:?} is not a valid scope token"),
            );
        }
    }
    list.to_vec()
}

fn scope_table(
    table: &BTreeMap<String, Vec<String>>,
    p: &str,
    problems: &mut Problems,
) -> BTreeMap<String, Vec<String>> {
    for (name, list) in table {
        scopes(list, &format!("{p}.{name:?}"), problems);
    }
    table.clone()
}

fn route_issuers(
    r: &RouteFile,
    p: &str,
    issuer_files: &[super::file::IssuerFile],
    problems: &mut Problems,
) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, id) in r.issuers.iter().enumerate() {
        match issuer_files.iter().position(|f| &f.id == id) {
            Some(idx) => out.push(idx),
            None => problems.push(
                format!("{p}.issuers[{i}]"),
                format!("{id:?} is not the id of any [[issuers]] entry"),
            ),
        }
    }
    let has_credentials = !out.is_empty() || !r.api_keys.is_empty();
    if !has_credentials && !r.allow_anonymous {
        problems.push(format!("{p}.issuers"), "the route trusts no issuer and has no api_keys: name an issuer, add api_keys, or set allow_anonymous = true");
    }
    out
}

/// Loopback hosts may use plain http for issuers and JWKS (local development and tests).
pub(super) fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}
