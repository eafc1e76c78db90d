//! The gateway as an operating-system process: what `mcpgate run` sets up for itself so that
//! idle connections stay cheap (transparent huge pages off, the allocator's purge thread).

mod common;

use common::*;

/// `/proc/<pid>/status` line `key:`, value trimmed.
fn status_field(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("list threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[tokio::test]
async fn a_running_gateway_has_huge_pages_off_and_its_purge_thread() {
    let upstream = UpstreamServer::mcp().await;
    let builder =
        GatewayBuilder::new().route(TestRoute::anonymous("r", "/mcp", &upstream.url("/mcp")));
    let config = builder.write();
    let gw = GatewayProcess::start("run", &config, "info", &[]).await;
    // The kernel shows the prctl flag since Linux 5.0; the test process, which never sets it,
    // is the control that the field is read right.
    if let Some(ours) = status_field(std::process::id(), "THP_enabled") {
        assert_eq!(ours, "1", "control: the test process leaves THP alone");
        let theirs = status_field(gw.pid(), "THP_enabled");
        assert_eq!(theirs.as_deref(), Some("0"), "THP off for the gateway");
    }
    let threads = thread_names(gw.pid());
    assert!(
        threads.iter().any(|n| n == "mcpgate-purge"),
        "purge thread running: {threads:?}"
    );
}
