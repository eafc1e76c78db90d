//! Filters `tools/list`, `prompts/list` and `resources/list` results, as one JSON body or inside an SSE stream, so a token sees only what it may use.
//!
//! Fail-closed decisions (a list we cannot filter could leak names the token may not see):
//! - [`filter_list_json`] is given the body of the response to a list request. If it is not a single
//!   JSON-RPC response object, or its `result` / item array is malformed (duplicate keys, wrong types),
//!   it is REPLACED by a JSON-RPC internal error (−32603). Error responses and results without the
//!   item array pass unchanged. Items without a string `name` / `uri` are dropped.
//! - In an SSE stream, an event is the target when its data is a JSON object whose `id` equals the
//!   list request's id as a JSON value (`1` != `"1"`). Data that is not JSON at all passes unchanged
//!   (no client can read it as the response); data that is JSON but cannot be read as one message
//!   (e.g. a duplicate `id`), or a batch array containing the target id, is treated as the target and
//!   replaced by an internal error.
//! - Memory is bounded by `max_event`: an event larger than that is dropped and replaced by an
//!   internal-error response for the target id (so the client's request completes rather than
//!   hangs), and the rest of the stream passes through unparsed. Set `max_event` at least as large as
//!   the biggest list response the upstream can produce.
//! - After the target event, the stream passes through without parsing.
//!
//! Other events are emitted byte-identical as soon as their terminating blank line is seen; only the
//! current incomplete event is buffered. Framing follows the WHATWG HTML "event stream
//! interpretation": lines end in CRLF, LF or CR; a blank line ends an event; `data` lines join with
//! LF; one leading BOM is ignored; invalid UTF-8 decodes to U+FFFD (so we decode the same way before
//! parsing: a client would).
//!
//! The gateway should only create a filter for a single (non-batch) list request; a batch containing
//! list requests cannot be filtered per id by this module and should be refused when `filter_lists` is
//! on.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::jsonrpc::{INTERNAL_ERROR, RawId, RawIdBuf, json_string, jsonrpc_error_body};
use crate::policy::{ListKind, Policy, ScopeSet};

/// Message of the internal error that replaces a list response we cannot filter.
pub const FILTER_FAILED_MESSAGE: &str = "list response could not be filtered by the gateway";

/// The members of a response we look at; serde refuses duplicates of these (fail closed).
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ListResult<'a> {
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    resources: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    uri: Option<&'a RawValue>,
}

enum Filtered {
    Unchanged,
    Rewritten(Vec<u8>),
    Malformed,
}

/// Rewrites the body of the response to a list request, dropping items the token may not use.
/// `None`: pass the original through (nothing hidden, an error response, or no filtering needed).
/// `Some`: the rewritten body, or an internal-error body if the response could not be filtered
/// (see the module docs). Everything but the removed items is preserved byte for byte.
pub fn filter_list_json(
    body: &[u8],
    kind: ListKind,
    policy: &Policy,
    granted: ScopeSet,
) -> Option<Bytes> {
    if !policy.needs_filtering(kind) {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let head = match first_byte(&text) {
        Some(b'{') => serde_json::from_str::<Head<'_>>(&text).ok(),
        _ => None,
    };
    let Some(head) = head else {
        return Some(jsonrpc_error_body(
            None,
            INTERNAL_ERROR,
            FILTER_FAILED_MESSAGE,
        ));
    };
    match filter_response(&text, &head, kind, policy, granted) {
        Filtered::Unchanged => None,
        Filtered::Rewritten(out) => Some(Bytes::from(out)),
        Filtered::Malformed => {
            let id = head.id.and_then(|id| RawId::parse(id.get()));
            Some(jsonrpc_error_body(
                id,
                INTERNAL_ERROR,
                FILTER_FAILED_MESSAGE,
            ))
        }
    }
}

fn filter_response(
    text: &str,
    head: &Head<'_>,
    kind: ListKind,
    policy: &Policy,
    granted: ScopeSet,
) -> Filtered {
    let Some(result) = head.result else {
        return Filtered::Unchanged;
    };
    if first_byte(result.get()) != Some(b'{') {
        return Filtered::Malformed;
    }
    let Ok(lists) = serde_json::from_str::<ListResult<'_>>(result.get()) else {
        return Filtered::Malformed;
    };
    let array = match kind {
        ListKind::Tools => lists.tools,
        ListKind::Prompts => lists.prompts,
        ListKind::Resources => lists.resources,
    };
    let Some(array) = array else {
        return Filtered::Unchanged;
    };
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(array.get()) else {
        return Filtered::Malformed;
    };
    let kept: Vec<&RawValue> = items
        .iter()
        .copied()
        .filter(|item| item_visible(item, kind, policy, granted))
        .collect();
    if kept.len() == items.len() {
        return Filtered::Unchanged;
    }
    // Splice: the RawValues borrow from `text`, so their offsets locate the array exactly.
    let Some(start) = offset_in(text, array.get()) else {
        return Filtered::Malformed;
    };
    let end = start + array.get().len();
    let mut out = Vec::with_capacity(text.len());
    out.extend_from_slice(&text.as_bytes()[..start]);
    out.push(b'[');
    for (i, item) in kept.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.get().as_bytes());
    }
    out.push(b']');
    out.extend_from_slice(&text.as_bytes()[end..]);
    Filtered::Rewritten(out)
}

fn item_visible(item: &RawValue, kind: ListKind, policy: &Policy, granted: ScopeSet) -> bool {
    if first_byte(item.get()) != Some(b'{') {
        return false;
    }
    let Ok(item) = serde_json::from_str::<Item<'_>>(item.get()) else {
        return false;
    };
    let key = match kind {
        ListKind::Tools | ListKind::Prompts => item.name,
        ListKind::Resources => item.uri,
    };
    match key.and_then(|raw| json_string(raw.get())) {
        Some(name) => policy.visible(kind, &name, granted),
        None => false,
    }
}

/// Byte offset of `inner` within `outer`, if `inner` is a sub-slice of it.
fn offset_in(outer: &str, inner: &str) -> Option<usize> {
    let off = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (off + inner.len() <= outer.len()).then_some(off)
}

/// What an SSE event's data is to the filter.
enum Inspect {
    NotTarget,
    Target(Filtered),
}

fn inspect(
    data: &str,
    target: RawId<'_>,
    kind: ListKind,
    policy: &Policy,
    granted: ScopeSet,
) -> Inspect {
    match first_byte(data) {
        Some(b'{') => match serde_json::from_str::<Head<'_>>(data) {
            Ok(head) if head.id.is_some_and(|id| id_matches(id, target)) => {
                Inspect::Target(filter_response(data, &head, kind, policy, granted))
            }
            Ok(_) => Inspect::NotTarget,
            Err(e) if e.is_data() => Inspect::Target(Filtered::Malformed),
            Err(_) => Inspect::NotTarget,
        },
        Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(data) {
            Ok(elements) if elements.iter().any(|e| may_be_target(e, target)) => {
                Inspect::Target(Filtered::Malformed)
            }
            _ => Inspect::NotTarget,
        },
        _ => Inspect::NotTarget,
    }
}

fn may_be_target(element: &RawValue, target: RawId<'_>) -> bool {
    if first_byte(element.get()) != Some(b'{') {
        return false;
    }
    match serde_json::from_str::<Head<'_>>(element.get()) {
        Ok(head) => head.id.is_some_and(|id| id_matches(id, target)),
        Err(e) => e.is_data(),
    }
}

/// First non-whitespace byte. Checked before deserializing into a struct because serde also
/// accepts a JSON array for a struct (fields by position), which no MCP client would read that way.
fn first_byte(text: &str) -> Option<u8> {
    text.bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

fn id_matches(id: &RawValue, target: RawId<'_>) -> bool {
    RawId::parse(id.get()).is_some_and(|id| id.same_as(target))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Looking for the target response, event by event.
    Scan,
    /// Dropping an oversized event until its end; then `Pass`.
    Discard,
    /// Target handled: bytes pass unparsed.
    Pass,
}

/// Incremental SSE filter for the stream answering one list request.
pub struct SseFilter {
    target: RawIdBuf,
    kind: ListKind,
    policy: Arc<Policy>,
    granted: ScopeSet,
    max_event: usize,
    mode: Mode,
    /// Bytes of the current incomplete event carried over from earlier chunks.
    pending: Vec<u8>,
    /// The current event has begun (in `pending` or in the chunk being scanned).
    event_open: bool,
    /// The current line has at least one byte (so a line end is not a blank line).
    line_has_content: bool,
    /// The last byte was CR: an LF right after it belongs to the same line end.
    after_cr: bool,
    /// No byte of the stream seen yet.
    at_stream_start: bool,
    /// The current event began at stream byte 0, where a BOM is ignored.
    event_at_stream_start: bool,
}

impl SseFilter {
    /// `target_id`: the list request's id. `max_event`: largest event (in bytes, framing included)
    /// that is buffered for inspection.
    pub fn new(
        target_id: RawIdBuf,
        kind: ListKind,
        policy: Arc<Policy>,
        granted: ScopeSet,
        max_event: usize,
    ) -> Self {
        // Nothing of this kind is ever hidden: skip parsing entirely.
        let mode = if policy.needs_filtering(kind) {
            Mode::Scan
        } else {
            Mode::Pass
        };
        Self {
            target: target_id,
            kind,
            policy,
            granted,
            max_event,
            mode,
            pending: Vec::new(),
            event_open: false,
            line_has_content: false,
            after_cr: false,
            at_stream_start: true,
            event_at_stream_start: false,
        }
    }

    /// True once the target response has been handled (or nothing needs filtering): the caller may
    /// forward later chunks itself, without the copy `push` makes.
    pub fn is_passthrough(&self) -> bool {
        self.mode == Mode::Pass
    }

    /// Feeds a chunk; returns the bytes that may be sent now.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if self.mode == Mode::Pass {
            return Bytes::copy_from_slice(chunk);
        }
        let chunk_at_stream_start = self.at_stream_start && !chunk.is_empty();
        if !chunk.is_empty() {
            self.at_stream_start = false;
        }
        let mut out = Vec::with_capacity(chunk.len());
        // Where the current event's bytes begin in this chunk.
        let mut ev_start = self.event_open.then_some(0);
        let mut i = 0;
        while i < chunk.len() {
            if self.mode == Mode::Pass {
                out.extend_from_slice(&chunk[i..]);
                return Bytes::from(out);
            }
            let b = chunk[i];
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                // LF of a CRLF whose CR already ended the line; between events it is emitted as is.
                if ev_start.is_none() {
                    out.push(b);
                }
                i += 1;
                continue;
            }
            match b {
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    if self.line_has_content {
                        self.line_has_content = false;
                    } else if let Some(start) = ev_start.take() {
                        self.dispatch(&chunk[start..=i], &mut out);
                    } else {
                        // A blank line outside any event dispatches nothing.
                        out.push(b);
                    }
                    i += 1;
                }
                _ => {
                    self.line_has_content = true;
                    if ev_start.is_none() {
                        ev_start = Some(i);
                        self.event_open = true;
                        self.event_at_stream_start = chunk_at_stream_start && i == 0;
                    }
                    // Skip the rest of the line's content in one go.
                    i += chunk[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(chunk.len() - i);
                }
            }
        }
        if let Some(start) = ev_start {
            self.hold(&chunk[start..], &mut out);
        }
        Bytes::from(out)
    }

    /// Ends the stream. An unterminated last event is one no conforming client dispatches, but it is
    /// still inspected (and filtered if it is the target) in case a lenient client does.
    pub fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        if self.mode == Mode::Scan && self.event_open {
            let event = std::mem::take(&mut self.pending);
            self.process(&event, &mut out);
        }
        self.pending = Vec::new();
        self.event_open = false;
        self.mode = Mode::Pass;
        Bytes::from(out)
    }

    /// Keeps the incomplete tail of the current event, within `max_event`.
    fn hold(&mut self, tail: &[u8], out: &mut Vec<u8>) {
        match self.mode {
            Mode::Scan if self.pending.len() + tail.len() > self.max_event => {
                self.pending = Vec::new();
                self.overflow(out);
            }
            Mode::Scan => self.pending.extend_from_slice(tail),
            Mode::Discard | Mode::Pass => {}
        }
    }

    /// The current event ended with `tail` (its last bytes in this chunk).
    fn dispatch(&mut self, tail: &[u8], out: &mut Vec<u8>) {
        self.event_open = false;
        match self.mode {
            Mode::Discard => self.mode = Mode::Pass,
            Mode::Scan if self.pending.len() + tail.len() > self.max_event => {
                self.pending.clear();
                self.overflow(out);
                self.mode = Mode::Pass;
            }
            Mode::Scan if self.pending.is_empty() => self.process(tail, out),
            Mode::Scan => {
                let mut event = std::mem::take(&mut self.pending);
                event.extend_from_slice(tail);
                self.process(&event, out);
                // Keep the allocation for the next event.
                event.clear();
                self.pending = event;
            }
            Mode::Pass => out.extend_from_slice(tail),
        }
    }

    fn overflow(&mut self, out: &mut Vec<u8>) {
        let body = jsonrpc_error_body(
            Some(self.target.as_raw_id()),
            INTERNAL_ERROR,
            FILTER_FAILED_MESSAGE,
        );
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        self.mode = Mode::Discard;
    }

    /// Emits one complete event: unchanged unless it is the target response.
    fn process(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let strip_bom = self.event_at_stream_start;
        let Some(data) = event_data(event, strip_bom) else {
            out.extend_from_slice(event);
            return;
        };
        let text = String::from_utf8_lossy(&data);
        let target = self.target.as_raw_id();
        match inspect(&text, target, self.kind, &self.policy, self.granted) {
            Inspect::NotTarget => out.extend_from_slice(event),
            Inspect::Target(filtered) => {
                self.mode = Mode::Pass;
                match filtered {
                    Filtered::Unchanged => out.extend_from_slice(event),
                    Filtered::Rewritten(json) => rebuild(event, &json, strip_bom, out),
                    Filtered::Malformed => {
                        let body =
                            jsonrpc_error_body(Some(target), INTERNAL_ERROR, FILTER_FAILED_MESSAGE);
                        rebuild(event, &body, strip_bom, out);
                    }
                }
            }
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Lines of an event as (content, content + line end).
fn lines(event: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = event;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let term = match rest.get(end..end + 2) {
            Some(b"\r\n") => 2,
            _ if end < rest.len() => 1,
            _ => 0,
        };
        let (line, tail) = rest.split_at(end + term);
        rest = tail;
        Some((&line[..end], line))
    })
}

/// WHATWG field parsing: `None` for comments and blank lines; `field:value` with one leading space
/// removed from the value; a line without a colon is a field with an empty value.
fn field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    if line.is_empty() || line[0] == b':' {
        return None;
    }
    Some(match line.iter().position(|&b| b == b':') {
        Some(p) => {
            let value = &line[p + 1..];
            (&line[..p], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[][..]),
    })
}

fn content(line: &[u8], first: bool, strip_bom: bool) -> &[u8] {
    if first && strip_bom {
        line.strip_prefix(BOM).unwrap_or(line)
    } else {
        line
    }
}

/// The event's data (data lines joined with LF), or `None` if it has no data field.
fn event_data(event: &[u8], strip_bom: bool) -> Option<Cow<'_, [u8]>> {
    let mut data: Option<Cow<'_, [u8]>> = None;
    for (i, (line, _)) in lines(event).enumerate() {
        if let Some((b"data", value)) = field(content(line, i == 0, strip_bom)) {
            data = Some(match data {
                None => Cow::Borrowed(value),
                Some(prev) => {
                    let mut joined = prev.into_owned();
                    joined.push(b'\n');
                    joined.extend_from_slice(value);
                    Cow::Owned(joined)
                }
            });
        }
    }
    data
}

/// Re-emits `event` with its data replaced by `json` (at the first data line), keeping every other
/// line (`id:`, `event:`, `retry:`, comments) and the line ends as they were.
fn rebuild(event: &[u8], json: &[u8], strip_bom: bool, out: &mut Vec<u8>) {
    let mut written = false;
    for (i, (line, full)) in lines(event).enumerate() {
        let is_data = matches!(field(content(line, i == 0, strip_bom)), Some((b"data", _)));
        if !is_data {
            out.extend_from_slice(full);
            continue;
        }
        if written {
            continue;
        }
        written = true;
        let term = match &full[line.len()..] {
            b"" => &b"\n"[..],
            t => t,
        };
        // JSON text has raw line breaks only as whitespace; each piece becomes its own data line,
        // which the client joins back with LF.
        for piece in json.split(|&b| b == b'\n' || b == b'\r') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(piece);
            out.extend_from_slice(term);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{Limits, classify};
    use crate::policy::{PolicySpec, compile};
    use std::collections::BTreeMap;

    /// Where the fuzz seeds live; the main crate keeps them at the same place.
    const FUZZ_CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");

    fn policy() -> Arc<Policy> {
        let map = |e: &[(&str, &str)]| -> BTreeMap<String, Vec<String>> {
            e.iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect()
        };
        Arc::new(
            compile(&PolicySpec {
                route_scopes: vec!["mcp".into()],
                tools: map(&[("get_*", "read"), ("delete_*", "admin"), ("café", "read")]),
                resources: map(&[("file:///public/*", "read")]),
                ..Default::default()
            })
            .unwrap(),
        )
    }

    fn reader(p: &Policy) -> ScopeSet {
        p.grant_set(&["mcp", "read"])
    }

    const TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_a","inputSchema":{}},{"name":"delete_b"},{"name":"caf\u00e9"},{"name":"other"}],"nextCursor":"c2","_meta":{"k":[1,2]}}}"#;
    const TOOLS_FILTERED: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_a","inputSchema":{}},{"name":"caf\u00e9"}],"nextCursor":"c2","_meta":{"k":[1,2]}}}"#;

    #[test]
    fn json_body_is_filtered_preserving_other_fields() {
        let p = policy();
        let out = filter_list_json(TOOLS.as_bytes(), ListKind::Tools, &p, reader(&p)).unwrap();
        assert_eq!(std::str::from_utf8(&out).unwrap(), TOOLS_FILTERED);
        // Admin sees get_a and delete_b but still not the unlisted "other".
        let admin = p.grant_set(&["mcp", "read", "admin"]);
        let out = filter_list_json(TOOLS.as_bytes(), ListKind::Tools, &p, admin).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let names: Vec<_> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["get_a", "delete_b", "café"]);
    }

    #[test]
    fn json_body_unchanged_or_error_passes() {
        let p = policy();
        let all = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_a"}]}}"#;
        assert_eq!(
            filter_list_json(all.as_bytes(), ListKind::Tools, &p, reader(&p)),
            None
        );
        let err = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}}"#;
        assert_eq!(
            filter_list_json(err.as_bytes(), ListKind::Tools, &p, reader(&p)),
            None
        );
        // No per-prompt rules: no filtering, not even parsing.
        assert_eq!(
            filter_list_json(b"not json", ListKind::Prompts, &p, reader(&p)),
            None
        );
    }

    #[test]
    fn json_body_that_cannot_be_filtered_becomes_an_internal_error() {
        let p = policy();
        for body in [
            "not json",
            r#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}]"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"result":{"tools":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"delete_b"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"delete_b"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":[]}"#,
        ] {
            let out =
                filter_list_json(body.as_bytes(), ListKind::Tools, &p, reader(&p)).expect(body);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["error"]["code"], -32603, "{body}");
        }
        let out = filter_list_json(
            br#"{"jsonrpc":"2.0","id":"q","result":{"tools":7}}"#,
            ListKind::Tools,
            &p,
            reader(&p),
        )
        .unwrap();
        assert!(out.starts_with(br#"{"jsonrpc":"2.0","id":"q","error""#));
    }

    #[test]
    fn items_without_a_usable_name_are_dropped() {
        let p = policy();
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_a"},{"title":"x"},{"name":1},"get_b",["get_d"],{"name":"get_c","name":"delete_b"},{"name":"\ud800"}]}}"#;
        let out = filter_list_json(body.as_bytes(), ListKind::Tools, &p, reader(&p)).unwrap();
        assert_eq!(
            &out[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_a"}]}}"#
        );
        let res = r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///public/a/b","name":"x"},{"uri":"file:///etc/passwd","name":"get_a"}]}}"#;
        let out = filter_list_json(res.as_bytes(), ListKind::Resources, &p, reader(&p)).unwrap();
        assert_eq!(
            &out[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///public/a/b","name":"x"}]}}"#
        );
    }

    fn filter(id: &str, max_event: usize) -> SseFilter {
        let p = policy();
        let g = reader(&p);
        SseFilter::new(
            RawIdBuf::parse(id).unwrap(),
            ListKind::Tools,
            p,
            g,
            max_event,
        )
    }

    fn run_split(stream: &[u8], id: &str, max_event: usize, split: usize) -> Vec<u8> {
        let mut f = filter(id, max_event);
        let mut out = f.push(&stream[..split]).to_vec();
        out.extend_from_slice(&f.push(&stream[split..]));
        out.extend_from_slice(&f.finish());
        out
    }

    /// Filters `stream` whole, split at every point, and byte by byte; all must agree.
    fn run_all_splits(stream: &[u8], id: &str, max_event: usize) -> Vec<u8> {
        let whole = run_split(stream, id, max_event, stream.len());
        for split in 0..stream.len() {
            assert_eq!(
                run_split(stream, id, max_event, split),
                whole,
                "split at {split}: {:?}",
                String::from_utf8_lossy(&stream[..split])
            );
        }
        let mut f = filter(id, max_event);
        let mut bytewise = Vec::new();
        for b in stream {
            bytewise.extend_from_slice(&f.push(std::slice::from_ref(b)));
        }
        bytewise.extend_from_slice(&f.finish());
        assert_eq!(bytewise, whole, "byte by byte");
        whole
    }

    fn sample(nl: &str) -> (String, String) {
        let before = format!(
            ": keep-alive{nl}{nl}id: prime-1{nl}data:{nl}{nl}retry: 3000{nl}{nl}event: message{nl}data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":1}}}}{nl}{nl}data: {{\"jsonrpc\":\"2.0\",\"id\":\"1\",\"result\":{{\"tools\":[{{\"name\":\"delete_b\"}}]}}}}{nl}{nl}"
        );
        let target =
            format!("id: ev-7{nl}event: message{nl}data: {TOOLS}{nl}: trailing comment{nl}{nl}");
        let after =
            format!("data: {{\"jsonrpc\":\"2.0\",\"method\":\"x\"}}{nl}{nl}data: not json{nl}{nl}");
        let input = format!("{before}{target}{after}");
        let expected = format!(
            "{before}id: ev-7{nl}event: message{nl}data: {TOOLS_FILTERED}{nl}: trailing comment{nl}{nl}{after}"
        );
        (input, expected)
    }

    #[test]
    fn sse_every_split_point_lf() {
        let (input, expected) = sample("\n");
        let out = run_all_splits(input.as_bytes(), "1", 1 << 20);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn sse_every_split_point_crlf_and_cr() {
        for nl in ["\r\n", "\r"] {
            let (input, expected) = sample(nl);
            let out = run_all_splits(input.as_bytes(), "1", 1 << 20);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{nl:?}");
        }
    }

    #[test]
    fn sse_id_matching_is_by_json_value() {
        // Target "1" (a string): the event with id 1 (a number) is not it, the "1" event is.
        let (input, _) = sample("\n");
        let out = run_all_splits(input.as_bytes(), "\"1\"", 1 << 20);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(&format!("data: {TOOLS}\n")),
            "number id untouched"
        );
        assert!(out.contains(r#"data: {"jsonrpc":"2.0","id":"1","result":{"tools":[]}}"#));
        // Escaped id text still matches by value.
        let s = "data: {\"jsonrpc\":\"2.0\",\"id\":\"\\u0031\",\"result\":{\"tools\":[{\"name\":\"delete_b\"}]}}\n\n";
        let out = run_all_splits(s.as_bytes(), "\"1\"", 1 << 20);
        assert!(!String::from_utf8(out).unwrap().contains("delete_b"));
    }

    #[test]
    fn sse_complete_events_are_emitted_immediately() {
        let mut f = filter("1", 1 << 20);
        let out = f.push(b"data: {\"jsonrpc\":\"2.0\",\"method\":\"n\"}\n\ndata: {\"jsonrpc\":");
        assert_eq!(
            &out[..],
            b"data: {\"jsonrpc\":\"2.0\",\"method\":\"n\"}\n\n"
        );
        assert!(!f.is_passthrough());
        let out =
            f.push(b"\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_b\"}]}}\n\nrest");
        assert_eq!(
            &out[..],
            b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}\n\nrest"
        );
        assert!(f.is_passthrough());
        assert_eq!(&f.push(b"\n\nanything")[..], b"\n\nanything");
    }

    #[test]
    fn sse_multiline_data_and_bom() {
        let s = "\u{feff}id: 9\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":1,\"result\":{\"tools\":[\ndata: {\"name\":\"delete_b\"},{\"name\":\"get_x\"}]}}\n\n";
        let out = String::from_utf8(run_all_splits(s.as_bytes(), "1", 1 << 20)).unwrap();
        assert_eq!(
            out,
            "\u{feff}id: 9\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":1,\"result\":{\"tools\":[{\"name\":\"get_x\"}]}}\n\n"
        );
    }

    #[test]
    fn sse_unicode_names_and_invalid_utf8() {
        let s = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"café\"},{\"name\":\"日本\"}]}}\n\n";
        let out = String::from_utf8(run_all_splits(s.as_bytes(), "1", 1 << 20)).unwrap();
        assert_eq!(
            out,
            "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"café\"}]}}\n\n"
        );
        // A client decodes invalid UTF-8 as U+FFFD and would read this JSON, so we must filter it.
        let s = b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_\xff\"}]}}\n\n".to_vec();
        let out = run_all_splits(&s, "1", 1 << 20);
        assert!(
            !out.windows(7).any(|w| w == b"delete_"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn sse_duplicate_id_or_batch_with_target_fails_closed() {
        for s in [
            "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_b\"}]}}\n\n",
            "data: [{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_b\"}]}}]\n\n",
        ] {
            let out = String::from_utf8(run_all_splits(s.as_bytes(), "1", 1 << 20)).unwrap();
            assert!(
                out.starts_with("data: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32603"),
                "{out}"
            );
            assert!(!out.contains("delete_b"));
        }
    }

    #[test]
    fn sse_oversized_event_is_replaced_and_memory_bounded() {
        let big = format!(
            "data: {{\"jsonrpc\":\"2.0\",\"method\":\"n\",\"params\":\"{}\"}}\n\n",
            "x".repeat(300)
        );
        let s = format!(": hi\n\n{big}data: {TOOLS}\n\n");
        let out = String::from_utf8(run_all_splits(s.as_bytes(), "1", 200)).unwrap();
        let err = String::from_utf8(
            jsonrpc_error_body(RawId::parse("1"), INTERNAL_ERROR, FILTER_FAILED_MESSAGE).to_vec(),
        )
        .unwrap();
        // After the replacement the stream is passed through: the target was answered already.
        assert_eq!(out, format!(": hi\n\ndata: {err}\n\ndata: {TOOLS}\n\n"));
        let mut f = filter("1", 200);
        f.push(b"data: ");
        for _ in 0..1000 {
            f.push(&[b'x'; 100]);
            assert!(f.pending.capacity() <= 4096);
        }
        // An event of exactly max_event bytes is still inspected.
        let exact = format!("data: {TOOLS}\n\n");
        let out = run_all_splits(exact.as_bytes(), "1", exact.len());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("data: {TOOLS_FILTERED}\n\n")
        );
    }

    #[test]
    fn sse_unterminated_target_is_still_filtered_at_finish() {
        let s = format!("event: message\ndata: {TOOLS}");
        let out = String::from_utf8(run_all_splits(s.as_bytes(), "1", 1 << 20)).unwrap();
        assert_eq!(out, format!("event: message\ndata: {TOOLS_FILTERED}\n"));
    }

    #[test]
    fn sse_without_rules_for_the_kind_is_passthrough_from_the_start() {
        let p = policy();
        let g = reader(&p);
        let mut f = SseFilter::new(RawIdBuf::parse("1").unwrap(), ListKind::Prompts, p, g, 16);
        assert!(f.is_passthrough());
        assert_eq!(
            &f.push(b"data: anything at all\n\n")[..],
            b"data: anything at all\n\n"
        );
    }

    #[test]
    fn sse_error_response_passes_unchanged() {
        let s = "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-1,\"message\":\"no\"}}\n\ndata: x\n\n";
        let out = run_all_splits(s.as_bytes(), "1", 1 << 20);
        assert_eq!(out, s.as_bytes());
    }

    fn seeds(dir: &str) -> Vec<(String, Vec<u8>)> {
        let path = format!("{FUZZ_CORPUS}/{dir}");
        let mut files: Vec<_> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{path} has too few seeds");
        files
            .into_iter()
            .map(|f| (f.display().to_string(), std::fs::read(&f).unwrap()))
            .collect()
    }

    /// Every fuzz seed runs through the real entry points without panicking (and SSE output does not
    /// depend on chunking), so the corpus stays meaningful between fuzzing sessions.
    #[test]
    fn corpus_replay() {
        let p = policy();
        for (name, body) in seeds("classify") {
            for batches in [false, true] {
                if let Ok(env) = classify(&body, &Limits::default(), batches) {
                    let _ = p.authorize_all(&env, reader(&p));
                    let _ = crate::jsonrpc::check_headers(&env, Some("tools/call"), Some("x"));
                }
            }
            let _ = name;
        }
        for (name, stream) in seeds("sse_filter") {
            let whole = run_split(&stream, "1", 4096, stream.len());
            for split in [
                0,
                1,
                stream.len() / 3,
                stream.len() / 2,
                stream.len().saturating_sub(1),
            ] {
                assert_eq!(
                    run_split(&stream, "1", 4096, split),
                    whole,
                    "{name} split {split}"
                );
            }
            let _ = filter_list_json(&stream, ListKind::Tools, &p, reader(&p));
        }
    }
}
