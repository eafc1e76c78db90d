//! Validation of `[[issuers]]`: trusted token issuers, their algorithms, JWKS and introspection.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::file::{IntrospectionFile, IssuerFile};
use super::validate::{Problems, is_loopback_url, resolve};
use super::{Introspection, Issuer, IssuerKind, Server};

pub(super) fn issuers(
    list: &[IssuerFile],
    server: &Server,
    base: &Path,
    problems: &mut Problems,
) -> Vec<Issuer> {
    let mut ids = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, f) in list.iter().enumerate() {
        let p = format!("issuers[{i}]");
        if !ids.insert(f.id.as_str()) {
            problems.push(
                format!("{p}.id"),
                format!("{:?} is used by an earlier issuer", f.id),
            );
        }
        if f.id.is_empty()
            || !f
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push(
                format!("{p}.id"),
                format!(
                    "{:?} must be non-empty and use only letters, digits, '-' and '_'",
                    f.id
                ),
            );
        }
        out.push(issuer(f, &p, server, base, problems));
    }
    out
}

fn issuer(
    f: &IssuerFile,
    p: &str,
    server: &Server,
    base: &Path,
    problems: &mut Problems,
) -> Issuer {
    let kind = match f.kind.as_deref().unwrap_or("oidc") {
        "oidc" => IssuerKind::Oidc,
        "dev" => IssuerKind::Dev,
        other => {
            problems.push(
                format!("{p}.kind"),
                format!("{other:?} is not \"oidc\" or \"dev\""),
            );
            IssuerKind::Oidc
        }
    };
    let issuer = match kind {
        IssuerKind::Dev => dev_issuer(f, p, server, problems),
        IssuerKind::Oidc => oidc_issuer(f, p, problems),
    };
    let default_algs: &[&str] = if kind == IssuerKind::Dev {
        &["ES256"]
    } else {
        &["RS256", "ES256"]
    };
    Issuer {
        id: f.id.clone(),
        kind,
        issuer,
        algorithms: algorithms(&f.algorithms, default_algs, p, problems),
        jwks_uri: f
            .jwks_uri
            .as_ref()
            .and_then(|u| https_url(u, &format!("{p}.jwks_uri"), problems)),
        leeway: problems.duration(&format!("{p}.leeway"), &f.leeway, Duration::from_secs(30)),
        refresh_min_interval: problems.duration(
            &format!("{p}.refresh_min_interval"),
            &f.refresh_min_interval,
            Duration::from_secs(10),
        ),
        refresh_default: problems.duration(
            &format!("{p}.refresh_default"),
            &f.refresh_default,
            Duration::from_secs(300),
        ),
        refresh_max: problems.duration(
            &format!("{p}.refresh_max"),
            &f.refresh_max,
            Duration::from_secs(86_400),
        ),
        max_staleness: problems.duration(
            &format!("{p}.max_staleness"),
            &f.max_staleness,
            Duration::from_secs(86_400),
        ),
        ca_file: f.ca_file.as_ref().map(|c| resolve(base, c)),
        introspection: f
            .introspection
            .as_ref()
            .and_then(|i| introspection(i, &format!("{p}.introspection"), base, problems)),
    }
}

/// The dev issuer signs with a key kept on local disk and has no login: it must never be
/// reachable from another machine, so it is refused on any non-loopback listener.
fn dev_issuer(f: &IssuerFile, p: &str, server: &Server, problems: &mut Problems) -> String {
    if !server.listen.ip().is_loopback() {
        problems.push(
            format!("{p}.kind"),
            format!(
                "\"dev\" issuers are only allowed when server.listen is a loopback address, not {}",
                server.listen
            ),
        );
    }
    if f.issuer.is_some() || f.jwks_uri.is_some() || f.introspection.is_some() {
        problems.push(p.to_string(), "a \"dev\" issuer takes no issuer, jwks_uri or introspection: it is served by the gateway itself");
    }
    server.public_url.clone()
}

fn oidc_issuer(f: &IssuerFile, p: &str, problems: &mut Problems) -> String {
    match &f.issuer {
        None => {
            problems.push(format!("{p}.issuer"), "required for an \"oidc\" issuer");
            String::new()
        }
        Some(text) => {
            https_url(text, &format!("{p}.issuer"), problems);
            text.clone()
        }
    }
}

/// Issuer, discovery, JWKS and introspection URLs carry trust anchors: https only, except
/// on loopback where tests and local identity providers live.
fn https_url(text: &str, p: &str, problems: &mut Problems) -> Option<url::Url> {
    match url::Url::parse(text) {
        Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_url(&u)) => Some(u),
        Ok(_) => {
            problems.push(
                p,
                format!("{text:?} must be an https URL (http is only allowed on loopback)"),
            );
            None
        }
        Err(_) => {
            problems.push(p, format!("{text:?} is not a URL"));
            None
        }
    }
}

/// Only asymmetric algorithms: an HS* key would have to be shared with every client, and
/// "none" is no signature at all (RFC 8725 §3.1, §3.2).
fn algorithms(
    list: &[String],
    default: &[&str],
    p: &str,
    problems: &mut Problems,
) -> Vec<Algorithm> {
    let names: Vec<&str> = if list.is_empty() {
        default.to_vec()
    } else {
        list.iter().map(String::as_str).collect()
    };
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match Algorithm::from_str(name) {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
                problems.push(format!("{p}.algorithms[{i}]"), format!("{name:?} is symmetric and never accepted"));
            }
            Ok(alg) => out.push(alg),
            Err(_) => problems.push(format!("{p}.algorithms[{i}]"), format!("{name:?} is not a supported JWS algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)")),
        }
    }
    out
}

fn introspection(
    f: &IntrospectionFile,
    p: &str,
    base: &Path,
    problems: &mut Problems,
) -> Option<Introspection> {
    let endpoint = https_url(&f.endpoint, &format!("{p}.endpoint"), problems);
    let client_secret = problems.secret(
        &format!("{p}.client_secret"),
        &f.client_secret_env,
        &f.client_secret_file,
        base,
    );
    if f.client_id.is_empty() {
        problems.push(format!("{p}.client_id"), "must not be empty");
    }
    let cache_ttl = problems.duration(
        &format!("{p}.cache_ttl"),
        &f.cache_ttl,
        Duration::from_secs(300),
    );
    let inactive_ttl = problems.duration(
        &format!("{p}.inactive_ttl"),
        &f.inactive_ttl,
        Duration::from_secs(10),
    );
    let timeout = problems.duration(&format!("{p}.timeout"), &f.timeout, Duration::from_secs(2));
    Some(Introspection {
        endpoint: endpoint?,
        client_id: f.client_id.clone(),
        client_secret: client_secret?,
        cache_ttl,
        inactive_ttl,
        timeout,
    })
}
