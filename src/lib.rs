//! mcpgate: an authenticating gateway that makes any Streamable HTTP MCP server an OAuth 2.1
//! protected resource. Modules follow a request's path:
//! config → server/tls → route → (auth) → (policy) → proxy → admin/metrics.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod authorize;
pub mod body;
pub mod cli;
mod clock;
pub mod commands;
pub mod config;
pub mod cors;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod jsonrpc;
pub mod metadata;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod request_id;
pub mod route;
pub mod server;
pub mod session;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod wellknown;
