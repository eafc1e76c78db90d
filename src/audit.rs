//! The audit log: one JSON line per JSON-RPC message (or per refused request), written by a
//! background task to stdout or an append-only file. Never a token or a secret: events carry
//! the principal's identifiers and a token fingerprint only, and arguments only on request,
//! with configured keys redacted.

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use serde_json::Value;

use crate::auth::{Identity, Principal};
use crate::config::{Audit as AuditConfig, AuditSink};
use crate::metrics::Metrics;

/// Events waiting for the writer; when full, new events are dropped and counted rather than
/// slowing requests or growing memory.
const QUEUE: usize = 16_384;
/// How often queued events reach the sink: the most an audit line lags its request.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// One audit line. Shared strings are `Arc`s of the principal's and route's own, so building
/// an event copies no text; the principal's members are rendered once per principal (see
/// [`Identity`]), not once per line.
#[derive(Debug, Clone)]
pub struct Event {
    pub time: SystemTime,
    pub request_id: HeaderValue,
    pub route: Arc<str>,
    /// Absent before authentication: the line then has no identity and no granted scopes.
    pub principal: Option<Principal>,
    pub method: Cow<'static, str>,
    pub target: Option<String>,
    pub decision: &'static str,
    pub reason: &'static str,
    pub rule: Option<Arc<str>>,
    pub required_scopes: Vec<Arc<str>>,
    pub http_status: u16,
    pub upstream_status: Option<u16>,
    pub duration_ms: f64,
    pub arguments: Option<Value>,
}

impl Default for Event {
    fn default() -> Self {
        Event {
            time: SystemTime::UNIX_EPOCH,
            request_id: HeaderValue::from_static(""),
            route: Arc::from(""),
            principal: None,
            method: Cow::Borrowed(""),
            target: None,
            decision: "",
            reason: "",
            rule: None,
            required_scopes: Vec::new(),
            http_status: 0,
            upstream_status: None,
            duration_ms: 0.0,
            arguments: None,
        }
    }
}

impl Event {
    /// Appends the event as one JSON line. Written by hand rather than derived: serde escapes
    /// through a per-byte table walk, and every request writes at least one line whose strings
    /// almost never need escaping (see [`json_str`]).
    pub fn write_line(&self, out: &mut Vec<u8>, clock: &mut Clock) {
        out.extend_from_slice(b"{\"time\":");
        clock.write(out, self.time);
        // Plain: request ids pass `request_id`'s character check, route ids and scopes the
        // config's, and decisions and reasons are the gateway's own words.
        plain_field(
            out,
            b",\"request_id\":",
            self.request_id.to_str().unwrap_or(""),
        );
        plain_field(out, b",\"route\":", &self.route);
        let identity = match &self.principal {
            Some(p) => p.audit_members(identity_members),
            None => ",\"granted_scopes\":[]",
        };
        out.extend_from_slice(identity.as_bytes());
        json_field(out, b",\"method\":", &self.method);
        if let Some(target) = &self.target {
            json_field(out, b",\"target\":", target);
        }
        plain_field(out, b",\"decision\":", self.decision);
        plain_field(out, b",\"reason\":", self.reason);
        if let Some(rule) = &self.rule {
            json_field(out, b",\"rule\":", rule);
        }
        out.extend_from_slice(b",\"required_scopes\":");
        out.push(b'[');
        for (i, scope) in self.required_scopes.iter().enumerate() {
            plain_field(out, if i == 0 { b"" } else { b"," }, scope);
        }
        out.push(b']');
        out.extend_from_slice(b",\"http_status\":");
        json_value(out, &self.http_status);
        if let Some(status) = &self.upstream_status {
            out.extend_from_slice(b",\"upstream_status\":");
            json_value(out, status);
        }
        out.extend_from_slice(b",\"duration_ms\":");
        json_value(out, &self.duration_ms);
        if let Some(arguments) = &self.arguments {
            out.extend_from_slice(b",\"arguments\":");
            json_value(out, arguments);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// The principal's members of a line, each with its leading comma. The token fingerprint is
/// left out when there is none (anonymous access).
fn identity_members(p: &Identity) -> Box<str> {
    let mut out = Vec::with_capacity(256);
    json_field(&mut out, b",\"issuer\":", &p.issuer);
    json_field(&mut out, b",\"subject\":", &p.subject);
    if let Some(client_id) = &p.client_id {
        json_field(&mut out, b",\"client_id\":", client_id);
    }
    if !p.token_fingerprint.is_empty() {
        json_field(&mut out, b",\"token_fp\":", &p.token_fingerprint);
    }
    out.extend_from_slice(b",\"granted_scopes\":");
    json_strs(&mut out, p.scopes.iter().map(|s| &**s));
    // Only whole UTF-8 strings and ASCII were written.
    String::from_utf8(out).unwrap_or_default().into_boxed_str()
}

/// RFC 3339 UTC timestamps with milliseconds, as `humantime` writes them. The part up to the
/// second is formatted once per second rather than for every line.
#[derive(Default)]
pub struct Clock {
    second: Option<u64>,
    prefix: String,
}

impl Clock {
    fn write(&mut self, out: &mut Vec<u8>, time: SystemTime) {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.second != Some(since.as_secs()) {
            self.second = Some(since.as_secs());
            let whole = UNIX_EPOCH + Duration::from_secs(since.as_secs());
            self.prefix = humantime::format_rfc3339_seconds(whole).to_string();
            self.prefix.pop(); // the trailing 'Z', written after the milliseconds
        }
        let millis = since.subsec_millis();
        out.push(b'"');
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(&[
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
            b'"',
        ]);
    }
}

/// `key` is the member's `,"name":` prefix, written in one piece.
fn json_field(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(key);
    json_str(out, value);
}

/// A string that needs no escaping, by where it comes from; checked in debug builds.
fn plain_field(out: &mut Vec<u8>, key: &[u8], value: &str) {
    debug_assert!(
        crate::jsonrpc::string_special(value.as_bytes()).is_none(),
        "{value:?} needs escaping"
    );
    out.extend_from_slice(key);
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// A JSON string. Most strings need no escaping, which a word-at-a-time search finds out;
/// only a string with a byte to escape goes through serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if crate::jsonrpc::string_special(s.as_bytes()).is_some() {
        json_value(out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

fn json_strs<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a str>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, item);
    }
    out.push(b']');
}

fn json_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing into a Vec cannot fail, and these values (numbers, strings, JSON) always serialise.
    let _ = serde_json::to_writer(&mut *out, value);
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
        event.time = SystemTime::now();
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
fn write_loop(queue: &Arc<Queue>, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::with_capacity(1024);
    let mut text = Vec::with_capacity(64 * 1024);
    let mut clock = Clock::default();
    loop {
        std::thread::park_timeout(FLUSH_EVERY);
        let last = queue.closing.load(Ordering::Acquire) || Arc::strong_count(queue) == 1;
        std::mem::swap(&mut batch, &mut *queue.lock());
        text.clear();
        for event in batch.drain(..) {
            event.write_line(&mut text, &mut clock);
        }
        if !text.is_empty() {
            let _ = out.write_all(&text).and_then(|()| out.flush());
        }
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
    use crate::auth::PrincipalKind;
    use serde_json::json;

    #[test]
    fn a_line_is_one_json_object_with_every_string_escaped() {
        let event = Event {
            request_id: HeaderValue::from_static("req-1"),
            route: Arc::from("calendar"),
            principal: Some(Principal::from(Identity {
                kind: PrincipalKind::Jwt,
                issuer: "https://issuer.example/\u{7f}".into(),
                subject: "ann \"the admin\" \\ o'neil\n\u{1}é".into(),
                client_id: None,
                scopes: Arc::from([Box::from("a:b"), Box::from("c")]),
                expires_at: None,
                valid_until: None,
                token_fingerprint: "fp1".into(),
            })),
            method: "tools/call".into(),
            target: Some("get\tevents".into()),
            decision: "allow",
            reason: "allowed",
            required_scopes: vec!["a:b".into()],
            http_status: 200,
            upstream_status: Some(201),
            duration_ms: 1.25,
            arguments: Some(json!({"k": "v"})),
            ..Event::default()
        };
        let mut out = Vec::new();
        let mut clock = Clock::default();
        event.write_line(&mut out, &mut clock);
        event.write_line(&mut out, &mut clock);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], lines[1], "the cached identity renders the same");
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["route"], "calendar");
        assert_eq!(v["subject"], "ann \"the admin\" \\ o'neil\n\u{1}é");
        assert_eq!(v["target"], "get\tevents");
        assert_eq!(v["required_scopes"], json!(["a:b"]));
        assert_eq!(v["granted_scopes"], json!(["a:b", "c"]));
        assert_eq!(v["http_status"], 200);
        assert_eq!(v["upstream_status"], 201);
        assert_eq!(v["duration_ms"], 1.25);
        assert_eq!(v["arguments"], json!({"k": "v"}));
        assert_eq!(v["issuer"], "https://issuer.example/\u{7f}");
        assert_eq!(v["token_fp"], "fp1");
        assert!(
            v.get("client_id").is_none() && v.get("rule").is_none(),
            "{v}"
        );
    }

    #[test]
    fn a_line_before_authentication_has_no_identity() {
        let mut out = Vec::new();
        Event::default().write_line(&mut out, &mut Clock::default());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["granted_scopes"], json!([]));
        assert!(
            v.get("issuer").is_none() && v.get("subject").is_none(),
            "{v}"
        );
    }

    #[test]
    fn timestamps_match_humantime_across_seconds() {
        let mut clock = Clock::default();
        for ms in [
            0u64,
            7,
            999,
            1_000,
            1_001,
            59_999,
            1_795_000_123_456,
            1_795_000_123_999,
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let mut out = Vec::new();
            clock.write(&mut out, t);
            let expected = format!("\"{}\"", humantime::format_rfc3339_millis(t));
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

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
