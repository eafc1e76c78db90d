//! Log setup: an env-filter (`RUST_LOG` syntax) and JSON or human-readable output.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Installs the global subscriber. The audit log has its own target (`mcpgate::audit`) so it
/// can be filtered or routed separately.
///
/// `filter` must have passed [`check_filter`]; directives that do not parse are ignored here.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::new(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Accepts a log filter only if every directive parses. A typo is refused at start-up rather
/// than replaced by some default: the operator meant to turn logging up or down, and would
/// otherwise not notice that nothing changed.
pub fn check_filter(filter: &str) -> Result<String, String> {
    EnvFilter::try_new(filter)
        .map(|_| filter.to_owned())
        .map_err(|e| e.to_string())
}
