//! The shared integration-test harness: a test CA, a scripted upstream, a gateway builder, the
//! gateway as a separate process and raw-socket helpers, all on ephemeral loopback ports. Each
//! test binary uses a subset.
#![allow(dead_code, unused_imports)]

pub mod gateway;
pub mod issuer;
pub mod process;
pub mod raw;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

pub use gateway::{GatewayBuilder, MetricsText, PUBLIC_URL, TestGateway, TestRoute, key_hash};
pub use process::{BIN, GatewayProcess};
pub use raw::{Closed, RawConn, RawResponse, to_wire};
pub use tls::{HttpVersion, KeyKind, TestCa, TestCert, plain_client};
pub use upstream::{Gate, Recorded, Reply, UpstreamServer, WireUpstream, sse_event, upstream_down};

/// Every problem `mcpgate::config` reports for `toml`, one `key.path: reason` string each.
/// Panics if the config is valid.
pub fn config_error(toml: &str) -> Vec<String> {
    match mcpgate::config::from_str(toml, Path::new(".")) {
        Ok(_) => panic!("config was accepted but should not be:\n{toml}"),
        Err(e) => e.problems(),
    }
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `secs` seconds. Bounds
/// are generous: they catch hangs, they do not measure speed.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {secs} s"))
}

/// An HTTP/1.1 POST with a correct Content-Length, as wire text (CRLF line endings).
pub fn http1_post(path: &str, headers: &[&str], body: &str) -> String {
    let mut out = format!("POST {path} HTTP/1.1\r\nHost: gateway.test\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

/// An HTTP/1.1 GET with no body, as wire text.
pub fn http1_get(path: &str, headers: &[&str]) -> String {
    let mut out = format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}
