//! The audit log: one JSON line per JSON-RPC message (or per refused request), written by a
//! background task to stdout or an append-only file. Never a token or a secret: events carry
//! the principal's identifiers and a token fingerprint only, and arguments only on request,
//! with configured keys redacted.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::config::{Audit as AuditConfig, AuditSink};
use crate::metrics::Metrics;

/// Events waiting for the writer; when full, new events are dropped and counted rather than
/// slowing requests or growing memory.
const QUEUE: usize = 16_384;
/// How often queued events reach the sink: the most an audit line lags its request.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Default, Serialize)]
pub struct Event {
    pub time: String,
    pub request_id: String,
    pub route: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_fp: Option<String>,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub decision: &'static str,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub required_scopes: Vec<String>,
    pub granted_scopes: Vec<String>,
    pub http_status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

pub struct Auditor {
    /// Events waiting for the writer thread, which takes the whole batch every `FLUSH_EVERY`:
    /// a request only pushes under an uncontended lock and never wakes another thread.
    queue: Arc<Queue>,
    /// The writer, joined by `close` so that a graceful shutdown loses no event.
    writer: Mutex<Option<JoinHandle<()>>>,
    log_arguments: bool,
    redact_keys: Arc<[String]>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open audit file {path}: {source}")]
pub struct AuditError {
    path: String,
    source: std::io::Error,
}

impl Auditor {
    pub fn start(config: &AuditConfig, metrics: Arc<Metrics>) -> Result<Self, AuditError> {
        let out: Box<dyn Write + Send> = match &config.sink {
            AuditSink::Stdout => Box::new(std::io::stdout()),
            AuditSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
        };
        let queue = Arc::new(Queue::default());
        let writer_queue = queue.clone();
        let writer = std::thread::Builder::new()
            .name("mcpgate-audit".into())
            .spawn(move || write_loop(&writer_queue, out))
            .map_err(|source| AuditError {
                path: "(audit writer thread)".into(),
                source,
            })?;
        Ok(Auditor {
            queue,
            writer: Mutex::new(Some(writer)),
            log_arguments: config.log_arguments,
            redact_keys: config.redact_keys.clone().into(),
            metrics,
        })
    }

    pub fn record(&self, mut event: Event) {
        event.time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut queue = self.queue.lock();
        if queue.len() < QUEUE {
            queue.push(event);
        } else {
            drop(queue);
            self.metrics.audit_dropped();
        }
    }

    /// Writes every event recorded so far and stops the writer; called once the listeners have
    /// drained. Events recorded afterwards are not written.
    pub fn close(&self) {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            self.queue.closing.store(true, Ordering::Release);
            writer.thread().unpark();
            let _ = writer.join();
        }
    }

    pub fn logs_arguments(&self) -> bool {
        self.log_arguments
    }

    /// `params.arguments` of a JSON-RPC body, if the operator enabled argument logging, with the
    /// configured keys redacted. Parsed only in that case: off by default, no cost.
    pub fn arguments_of(&self, body: &[u8]) -> Option<Value> {
        if !self.log_arguments {
            return None;
        }
        let mut args = serde_json::from_slice::<Value>(body)
            .ok()?
            .pointer_mut("/params/arguments")?
            .take();
        redact(&mut args, &self.redact_keys);
        Some(args)
    }
}

#[derive(Default)]
struct Queue {
    events: Mutex<Vec<Event>>,
    closing: AtomicBool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes whatever accumulated every `FLUSH_EVERY`, one buffered write and flush per batch.
/// Ends once `close` asks (after writing the last batch) or the `Auditor` is gone.
fn write_loop(queue: &Arc<Queue>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut batch = Vec::with_capacity(1024);
    loop {
        std::thread::park_timeout(FLUSH_EVERY);
        let last = queue.closing.load(Ordering::Acquire) || Arc::strong_count(queue) == 1;
        std::mem::swap(&mut batch, &mut *queue.lock());
        for event in batch.drain(..) {
            if serde_json::to_writer(&mut out, &event).is_ok() {
                let _ = out.write_all(b"\n");
            }
        }
        let _ = out.flush();
        if last {
            return;
        }
    }
}

/// Replaces the value of every object key matching (case-insensitively) a redact key, at any depth.
fn redact(value: &mut Value, keys: &[String]) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if keys.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                    *v = Value::String("[redacted]".into());
                } else {
                    redact(v, keys);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, keys)),
        _ => {}
    }
}

pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configured_keys_are_redacted_at_any_depth() {
        let mut v = json!({"user": "a", "Password": "p", "nested": [{"token": "t", "ok": 1}]});
        redact(&mut v, &["password".into(), "token".into()]);
        assert_eq!(
            v,
            json!({"user": "a", "Password": "[redacted]", "nested": [{"token": "[redacted]", "ok": 1}]})
        );
    }
}
