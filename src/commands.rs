//! The one-shot commands: `check`, `token` and `hash-key`.

use std::io::Read;
use std::path::Path;

use crate::auth::dev::DevIssuer;
use crate::config::{self, IssuerKind};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("no route with id {0:?}")]
    NoRoute(String),
    #[error("route {0:?} trusts no issuer of kind \"dev\": mint tokens at its identity provider")]
    NoDevIssuer(String),
    #[error("--ttl: {0}")]
    Ttl(String),
    #[error("dev issuer: {0}")]
    Dev(#[from] crate::auth::dev::DevIssuerError),
    #[error("cannot read the key from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("the key on stdin is empty")]
    EmptyKey,
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Config(_)
            | CommandError::NoRoute(_)
            | CommandError::NoDevIssuer(_)
            | CommandError::Ttl(_) => 2,
            CommandError::Dev(_) | CommandError::Stdin(_) | CommandError::EmptyKey => 1,
        }
    }
}

/// Mints a token from the route's dev issuer, with the route's resource as audience.
pub fn token(
    path: &Path,
    route_id: &str,
    scope: &str,
    ttl: &str,
    subject: &str,
) -> Result<String, CommandError> {
    let cfg = config::load(path)?;
    let route = cfg
        .routes
        .iter()
        .find(|r| &*r.id == route_id)
        .ok_or_else(|| CommandError::NoRoute(route_id.into()))?;
    let issuer = route
        .issuers
        .iter()
        .map(|&i| &cfg.issuers[i])
        .find(|i| i.kind == IssuerKind::Dev)
        .ok_or_else(|| CommandError::NoDevIssuer(route_id.into()))?;
    let ttl = config::parse_duration(ttl).map_err(CommandError::Ttl)?;
    let dev = DevIssuer::load_or_create(&cfg.server.state_dir, &issuer.issuer)?;
    let scopes: Vec<String> = scope.split_whitespace().map(str::to_string).collect();
    Ok(dev.mint(subject, &route.resource, &scopes, ttl)?)
}

/// Hashes a key read from stdin (a trailing newline is not part of the key).
pub fn hash_key() -> Result<String, CommandError> {
    let mut key = String::new();
    std::io::stdin()
        .read_to_string(&mut key)
        .map_err(CommandError::Stdin)?;
    let key = key.trim_end_matches(['\r', '\n']);
    if key.is_empty() {
        return Err(CommandError::EmptyKey);
    }
    Ok(crate::auth::hash_api_key(key))
}
