//! Building the gateway's runtime state from a validated config: upstream clients, issuers,
//! compiled policies, metadata documents. Runs at start-up and on every reload, never per request.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::audit::Auditor;
use crate::auth::dev::DevIssuer;
use crate::auth::{AuthMetrics, Authenticator, IntrospectionSettings, IssuerSettings, RouteAuth};
use crate::config::{Config, Issuer, IssuerKind, Route, UpstreamTarget};
use crate::gateway::{Gateway, RouteState};
use crate::metadata::{self, AS_METADATA_PATH, PRM_PREFIX};
use crate::metrics::Metrics;
use crate::policy::{self, Policy, PolicySpec};
use crate::proxy::{SetupError, Upstream};
use crate::ratelimit::RateLimiter;
use crate::route::Router;
use crate::session::SessionSealer;
use crate::wellknown::WellKnown;

/// State that outlives a reload: metrics, rate-limit buckets, the audit sink, the demo upstream.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub auth_metrics: AuthMetrics,
    pub limiter: RateLimiter,
    pub auditor: Auditor,
    /// Address of the built-in demo upstream, when one runs.
    pub demo: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("routes[{index}].upstream: {source}")]
    Upstream { index: usize, source: SetupError },
    #[error("routes[{index}]: {source}")]
    Policy {
        index: usize,
        source: policy::PolicyError,
    },
    #[error("issuers[{index}]: the dev issuer key in the state directory cannot be used: {source}")]
    DevIssuer {
        index: usize,
        source: crate::auth::dev::DevIssuerError,
    },
    #[error("issuers: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    #[error("routes[{index}].upstream: \"builtin:demo\" is not running")]
    NoDemo { index: usize },
}

impl Gateway {
    pub fn build(config: Arc<Config>, shared: Arc<Shared>) -> Result<Self, BuildError> {
        let mut wellknown = WellKnown::default();
        let settings = issuer_settings(&config, &mut wellknown)?;
        let auth = Authenticator::with_metrics(settings, shared.auth_metrics.clone())?;
        auth.start();
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, route) in config.routes.iter().enumerate() {
            routes.push(route_state(&config, index, route, &shared)?);
            wellknown.add_static(
                routes[index].metadata.path.clone(),
                routes[index].metadata.document.clone(),
            );
        }
        if let Some(d) = config.default_route() {
            wellknown.add_static(PRM_PREFIX.to_string(), routes[d].metadata.document.clone());
            if let (true, Some(&issuer)) = (
                config.server.authorization_server_metadata,
                config.routes[d].issuers.first(),
            ) {
                wellknown.add_issuer_metadata(AS_METADATA_PATH, issuer);
            }
        }
        let secret = config
            .session
            .secret
            .as_ref()
            .map(|s| s.expose().as_bytes());
        Ok(Gateway {
            router: Router::new(&config.routes),
            routes,
            auth,
            wellknown,
            sessions: SessionSealer::new(secret, config.session.max_age),
            shared,
            config,
        })
    }
}

fn route_state(
    config: &Config,
    index: usize,
    route: &Route,
    shared: &Shared,
) -> Result<RouteState, BuildError> {
    let demo = shared.demo;
    let uri = match (&route.upstream, demo) {
        (UpstreamTarget::Http(uri), _) => uri.clone(),
        (UpstreamTarget::BuiltinDemo, Some(addr)) => format!("http://{addr}/mcp")
            .parse()
            .map_err(|_| BuildError::NoDemo { index })?,
        (UpstreamTarget::BuiltinDemo, None) => return Err(BuildError::NoDemo { index }),
    };
    let upstream = Upstream::new(
        &uri,
        route.connect_timeout,
        route.upstream_timeout,
        route.ca_file.as_deref(),
    )
    .map_err(|source| BuildError::Upstream { index, source })?;
    let policy = compile_policy(route).map_err(|source| BuildError::Policy { index, source })?;
    let issuers = metadata::route_issuers(config, route);
    let metadata = metadata::build(route, &issuers, &policy.scopes_supported());
    let auth = RouteAuth {
        route_id: route.id.clone(),
        issuers: route.issuers.clone(),
        audiences: route.audiences.clone(),
        api_keys: route.api_keys.clone(),
    };
    let metrics = shared
        .metrics
        .route_handles(&route.id, policy.tool_labels());
    Ok(RouteState {
        upstream,
        auth,
        policy: Arc::new(policy),
        metadata,
        metrics,
        strip: crate::proxy::headers::request_strip_set(
            &route.strip_headers,
            route
                .identity_headers
                .names()
                .chain([&crate::request_id::HEADER_NAME])
                .chain(route.upstream_headers.iter().map(|(name, _)| name)),
        ),
    })
}

pub fn compile_policy(route: &Route) -> Result<Policy, policy::PolicyError> {
    policy::compile(&PolicySpec {
        route_scopes: route.scopes.clone(),
        tools: route.tools.clone(),
        methods: route.methods.clone(),
        resources: route.resources.clone(),
        prompts: route.prompts.clone(),
    })
}

/// Runtime issuer settings; the dev issuer also publishes its discovery document and JWKS on
/// the gateway origin (its issuer identifier is `public_url`).
fn issuer_settings(
    config: &Config,
    wellknown: &mut WellKnown,
) -> Result<Vec<IssuerSettings>, BuildError> {
    let mut out = Vec::with_capacity(config.issuers.len());
    for (index, issuer) in config.issuers.iter().enumerate() {
        out.push(match issuer.kind {
            IssuerKind::Oidc => oidc_settings(issuer),
            IssuerKind::Dev => {
                let dev = DevIssuer::load_or_create(&config.server.state_dir, &issuer.issuer)
                    .map_err(|source| BuildError::DevIssuer { index, source })?;
                let discovery = bytes::Bytes::from(dev.discovery_document().to_string());
                wellknown.add_static(
                    "/.well-known/openid-configuration".into(),
                    discovery.clone(),
                );
                wellknown.add_static(AS_METADATA_PATH.into(), discovery);
                let jwks = serde_json::to_vec(&dev.jwks()).unwrap_or_default();
                wellknown.add_static("/.well-known/jwks.json".into(), jwks.into());
                let mut s = dev.settings(&issuer.id);
                s.leeway = issuer.leeway;
                s
            }
        });
    }
    Ok(out)
}

fn oidc_settings(issuer: &Issuer) -> IssuerSettings {
    let mut s = IssuerSettings::new(issuer.id.clone(), issuer.issuer.clone());
    s.algorithms = issuer.algorithms.clone();
    s.jwks_uri = issuer.jwks_uri.clone();
    s.leeway = issuer.leeway;
    s.refresh_min_interval = issuer.refresh_min_interval;
    s.refresh_default = issuer.refresh_default;
    s.refresh_max = issuer.refresh_max;
    s.max_staleness = issuer.max_staleness;
    s.ca_file = issuer.ca_file.clone();
    s.introspection = issuer
        .introspection
        .as_ref()
        .map(|i| IntrospectionSettings {
            endpoint: i.endpoint.clone(),
            client_id: i.client_id.clone(),
            client_secret: i.client_secret.clone(),
            cache_ttl: i.cache_ttl,
            inactive_ttl: i.inactive_ttl,
            timeout: i.timeout,
        });
    s
}
