//! mcpgate: an authenticating gateway that makes any Streamable HTTP MCP server an OAuth 2.1
//! protected resource. Modules follow a request's path:
//! config → server/tls → route → (auth) → (policy) → proxy → admin/metrics.

pub mod admin;
pub mod app;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod proxy;
pub mod request_id;
pub mod route;
pub mod server;
pub mod telemetry;
pub mod tls;
