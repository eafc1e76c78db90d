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
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
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
}
