//! Command line: run the gateway, check a config, mint a dev token, hash an API key.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "mcpgate",
    version,
    about = "Authenticating gateway for MCP servers"
)]
pub struct Cli {
    /// Path of the gateway configuration file.
    #[arg(long, short, global = true, default_value = "gateway.toml")]
    pub config: PathBuf,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Log filter in RUST_LOG syntax, e.g. "info,mcpgate=debug".
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info", value_parser = crate::telemetry::check_filter)]
    pub log_filter: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the config and print the effective routes.
    Check,
    /// Print an access token from the embedded development issuer (loopback only).
    Token {
        /// Route id: the token's audience is this route's resource.
        #[arg(long)]
        route: String,
        /// Space-separated scopes to grant.
        #[arg(long, default_value = "")]
        scope: String,
        /// Lifetime, e.g. "10m".
        #[arg(long, default_value = "10m")]
        ttl: String,
        /// Subject (`sub`) of the token.
        #[arg(long, default_value = "dev-user")]
        subject: String,
    },
    /// Read an API key on stdin and print the hash to put in `[[routes.api_keys]]`.
    HashKey,
}
