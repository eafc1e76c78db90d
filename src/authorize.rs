//! Authorisation: the route's scopes for every request, and the scope rules of each JSON-RPC
//! message of a POST. `authorize` returns a `Grant` — the evidence `forward` needs — or the
//! error that refuses the request before anything reaches the upstream.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, header};

use crate::auth::{Principal, PrincipalKind};
use crate::config::Route;
use crate::error::GatewayError;
use crate::jsonrpc::{self, ClassifyError, Envelope, Kind, RawIdBuf};
use crate::metrics::{RouteHandles, known_method};
use crate::policy::{Denied, DenyReason, ListKind, Policy, ScopeSet};

/// What the policy decided about one message, kept for the audit log and metrics.
/// Text shared with the policy (rule labels, scope names) or static (MCP method names), so
/// that a verdict and its audit event copy only the target's name.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub method: Option<Cow<'static, str>>,
    pub target: Option<String>,
    pub allowed: bool,
    pub reason: &'static str,
    pub rule: Arc<str>,
    pub required: Vec<Arc<str>>,
}

/// Evidence that a request passed authorisation.
pub struct Grant {
    pub granted: ScopeSet,
    /// Set when the request is a list call whose result must be filtered to what the caller may use.
    pub list: Option<(RawIdBuf, ListKind)>,
}

/// POST bodies must be uncompressed JSON: anything the gateway cannot inspect is refused, never
/// forwarded uninspected.
pub fn check_post_headers(headers: &HeaderMap) -> Result<(), GatewayError> {
    let encoded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(GatewayError::CompressedBody);
    }
    let is_json = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let mime = v.as_bytes().split(|&b| b == b';').next().unwrap_or(b"");
        mime.trim_ascii().eq_ignore_ascii_case(b"application/json")
    });
    if is_json {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType)
    }
}

/// Classifies a POST body (then `check` it): two steps, so that a refusal by `check` can still
/// answer with the request's JSON-RPC id (JSON-RPC 2.0 §5).
pub fn classify<'b>(body: &'b [u8], route: &Route) -> Result<Envelope<'b>, GatewayError> {
    Ok(jsonrpc::classify(
        body,
        &jsonrpc::Limits::default(),
        route.allow_batches,
    )?)
}

/// Checks the MCP 2026-07-28 `Mcp-Method` / `Mcp-Name` headers against the body, so the gateway
/// and the upstream can never disagree about what is called.
pub fn check(env: &Envelope<'_>, headers: &HeaderMap, route: &Route) -> Result<(), GatewayError> {
    // Constant names: a `&str` name would be parsed and hashed anew on every lookup.
    const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
    const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
    let header_text =
        |name: &HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    jsonrpc::check_headers(env, header_text(&MCP_METHOD), header_text(&MCP_NAME))?;
    // The SSE filter follows one response id; a list call inside a batch could not be filtered.
    if env.is_batch()
        && route.filter_lists
        && env
            .messages()
            .any(|m| m.method().and_then(ListKind::from_method).is_some())
    {
        return Err(ClassifyError::BatchNotAllowed.into());
    }
    Ok(())
}

/// Decides a request. `env` is `None` for GET and DELETE, which need only the route scopes.
pub fn authorize(
    policy: &Policy,
    route: &Route,
    principal: &Principal,
    env: Option<&Envelope<'_>>,
    metrics: &RouteHandles,
    verdicts: &mut Vec<Verdict>,
) -> Result<Grant, GatewayError> {
    let granted = policy.grant_set(&principal.scopes);
    let Some(env) = env else {
        return check_route_scopes(policy, principal, granted).map(|()| Grant {
            granted,
            list: None,
        });
    };
    let mut refusal = None;
    for msg in env.messages() {
        let decision = policy.authorize(msg, granted);
        let verdict = verdict(msg, &decision, policy);
        record(metrics, policy, &verdict, msg.name.as_deref());
        verdicts.push(verdict);
        if let (Err(denied), None) = (decision, &refusal) {
            refusal = Some(denied_error(&denied, principal));
        }
    }
    if let Some(err) = refusal {
        return Err(err);
    }
    Ok(Grant {
        granted,
        list: list_target(env, route, policy),
    })
}

fn check_route_scopes(
    policy: &Policy,
    principal: &Principal,
    granted: ScopeSet,
) -> Result<(), GatewayError> {
    if granted.contains_all(policy.route_scopes()) {
        return Ok(());
    }
    let scopes = policy
        .names(policy.route_scopes())
        .collect::<Vec<_>>()
        .join(" ");
    if principal.kind == PrincipalKind::Anonymous {
        return Err(GatewayError::SignInRequired { scopes });
    }
    Err(GatewayError::InsufficientScope {
        scopes,
        reason: DenyReason::MissingScope.as_str(),
        rule: "route".into(),
    })
}

/// An anonymous caller is asked to sign in with the scopes; a signed-in one to step up; a call
/// no scope can unlock is simply forbidden.
fn denied_error(denied: &Denied<'_>, principal: &Principal) -> GatewayError {
    let scopes = denied.required().collect::<Vec<_>>().join(" ");
    match (denied.reason(), principal.kind) {
        (DenyReason::NoRule, _) => GatewayError::Forbidden {
            reason: denied.reason().as_str(),
            rule: denied.rule().to_string(),
        },
        (DenyReason::MissingScope, PrincipalKind::Anonymous) => {
            GatewayError::SignInRequired { scopes }
        }
        (DenyReason::MissingScope, _) => GatewayError::InsufficientScope {
            scopes,
            reason: denied.reason().as_str(),
            rule: denied.rule().to_string(),
        },
    }
}

fn verdict(
    msg: &jsonrpc::Message<'_>,
    decision: &Result<crate::policy::Decision<'_>, Denied<'_>>,
    policy: &Policy,
) -> Verdict {
    let (allowed, reason, rule, needed) = match decision {
        Ok(d) => (true, "allowed", d.rule(), d.needed()),
        Err(d) => (false, d.reason().as_str(), d.rule(), d.needed()),
    };
    Verdict {
        method: msg
            .method()
            .map(|m| known_method(m).map_or_else(|| Cow::Owned(m.to_owned()), Cow::Borrowed)),
        target: msg.target().map(str::to_string),
        allowed,
        reason,
        rule: rule.clone(),
        required: policy.shared_names(needed).collect(),
    }
}

fn record(metrics: &RouteHandles, policy: &Policy, v: &Verdict, tool: Option<&str>) {
    metrics.jsonrpc(v.method.as_deref(), v.allowed);
    if v.method.as_deref() == Some("tools/call")
        && let Some(name) = tool
    {
        metrics.tool_call(policy.tool_label(name), v.allowed);
    }
}

/// The list request whose response must be filtered, if any.
fn list_target(env: &Envelope<'_>, route: &Route, policy: &Policy) -> Option<(RawIdBuf, ListKind)> {
    if !route.filter_lists {
        return None;
    }
    let msg = env.single()?;
    let kind = ListKind::from_method(msg.method()?)?;
    let Kind::Request { id } = msg.kind else {
        return None;
    };
    policy.needs_filtering(kind).then(|| (id.to_buf(), kind))
}
