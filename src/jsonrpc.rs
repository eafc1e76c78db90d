//! Classifies a JSON-RPC POST body in one pass without copying it: kind, id, method, and the tool / prompt name or resource URI that authorization needs.
//!
//! Why a hand-written scanner instead of `serde_json`:
//! - duplicate keys must be refused anywhere in the document (serde_json keeps the last one in maps and
//!   skips unknown fields), because the upstream's parser may pick a different duplicate than we
//!   authorized (the classic parser-differential bypass: `{"name":"get","name":"delete"}`);
//! - nesting must be bounded by our own `max_depth` with an explicit stack, so hostile input cannot
//!   overflow the thread stack whatever the limit is;
//! - keys and the few values we look at are compared after unescaping (`"n\u0061me"` is `name`), and are
//!   borrowed from the body when they contain no escapes, so the common case allocates nothing per key.
//!
//! Everything outside JSON strings is ASCII, so the body is checked for UTF-8 once up front and then
//! scanned byte by byte; slicing at ASCII delimiters always lands on a char boundary.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

/// JSON-RPC 2.0 §5.1: invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0 §5.1: the JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0 §5.1: internal error (used when an upstream list response cannot be filtered).
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP 2026-07-28 Streamable HTTP § Server Validation: `Mcp-Method` / `Mcp-Name` disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;

/// Header names mirrored from the body by MCP 2026-07-28 (SEP-2243).
pub const MCP_METHOD_HEADER: &str = "Mcp-Method";
pub const MCP_NAME_HEADER: &str = "Mcp-Name";

/// Limits applied while scanning a body (its size is limited before it is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest allowed nesting of objects and arrays; the top-level value is depth 1.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // MCP messages rarely nest past ~10 (tool arguments are user JSON); 64 leaves room without
        // letting a 1 MiB body of `[` cost more than a few hundred bytes of stack frames.
        Self { max_depth: 64 }
    }
}

/// Why a body was refused. [`ClassifyError::code`] gives the JSON-RPC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("body is not valid JSON (at byte {offset})")]
    Parse { offset: usize },
    #[error("JSON object has a duplicate key")]
    DuplicateKey,
    #[error("JSON nests deeper than {max_depth} levels")]
    TooDeep { max_depth: usize },
    #[error("invalid JSON-RPC message: {0}")]
    InvalidRequest(InvalidReason),
    #[error("JSON-RPC batches are not allowed on this route")]
    BatchNotAllowed,
    #[error("{header} header does not match the request body")]
    HeaderMismatch { header: &'static str },
}

impl ClassifyError {
    /// The JSON-RPC error code for this refusal.
    pub fn code(&self) -> i64 {
        match self {
            ClassifyError::Parse { .. } => PARSE_ERROR,
            // Duplicate keys and excessive depth are syntactically JSON (RFC 8259 §4 only says names
            // SHOULD be unique), so they are invalid requests rather than parse errors.
            ClassifyError::DuplicateKey => INVALID_REQUEST,
            ClassifyError::TooDeep { .. } => INVALID_REQUEST,
            ClassifyError::InvalidRequest(_) => INVALID_REQUEST,
            ClassifyError::BatchNotAllowed => INVALID_REQUEST,
            ClassifyError::HeaderMismatch { .. } => HEADER_MISMATCH,
        }
    }
}

/// What made a well-formed JSON document an invalid JSON-RPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    NotAnObject,
    Version,
    MethodNotString,
    BadId,
    /// Neither a request/notification nor a response (e.g. both `method` and `result`).
    Shape,
    EmptyBatch,
    /// `tools/call` / `prompts/get` without a string `params.name`.
    MissingName,
    /// `resources/read|subscribe|unsubscribe` without a string `params.uri`.
    MissingUri,
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidReason::NotAnObject => "message is not an object",
            InvalidReason::Version => "jsonrpc member is not \"2.0\"",
            InvalidReason::MethodNotString => "method is not a string",
            InvalidReason::BadId => "id is not a string or number",
            InvalidReason::Shape => "neither a request, notification nor response",
            InvalidReason::EmptyBatch => "empty batch",
            InvalidReason::MissingName => "params.name is missing or not a string",
            InvalidReason::MissingUri => "params.uri is missing or not a string",
        })
    }
}

/// The raw JSON text of a message id (a string, number or `null`), borrowed from the body so it can be
/// echoed in error bodies exactly as the client wrote it.
#[derive(Debug, Clone, Copy)]
pub struct RawId<'a>(&'a str);

impl<'a> RawId<'a> {
    /// Accepts `text` only if it is exactly one JSON string, number or `null` (no whitespace), so a
    /// `RawId` can always be spliced into a JSON document safely.
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut sc = Scanner::new(text);
        match sc.peek()? {
            b'"' => sc.string(true).ok()?,
            b'-' | b'0'..=b'9' => {
                sc.number().ok()?;
                None
            }
            b'n' => {
                sc.literal(b"null").ok()?;
                None
            }
            _ => return None,
        };
        (sc.pos == text.len()).then_some(RawId(text))
    }

    /// The id as JSON text, e.g. `1` or `"abc"`.
    pub fn as_json(&self) -> &'a str {
        self.0
    }

    pub fn is_null(&self) -> bool {
        self.0 == "null"
    }

    /// An owned copy, for matching the response after the request body is gone.
    pub fn to_buf(&self) -> RawIdBuf {
        RawIdBuf(self.0.into())
    }

    /// JSON value equality: strings compare after unescaping (`"a"` == `"\u0061"`), numbers compare as
    /// written, and a string never equals a number (`1` != `"1"`), as JSON-RPC §4 requires.
    pub fn same_as(&self, other: RawId<'_>) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        if a.first() == Some(&b'"') && b.first() == Some(&b'"') {
            if !a.contains(&b'\\') && !b.contains(&b'\\') {
                return a == b;
            }
            return unescape_id(self.0) == unescape_id(other.0);
        }
        a == b
    }
}

impl PartialEq for RawId<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.same_as(*other)
    }
}

impl fmt::Display for RawId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

fn unescape_id(json: &str) -> Option<Cow<'_, str>> {
    json_string(json)
}

/// The unescaped value of `raw` if it is exactly one JSON string (lone surrogates refused).
pub(crate) fn json_string(raw: &str) -> Option<Cow<'_, str>> {
    let mut sc = Scanner::new(raw);
    let s = sc.string(true).ok().flatten()?;
    (sc.pos == raw.len()).then_some(s)
}

/// Owned form of [`RawId`] (e.g. the list request's id kept by the SSE filter).
#[derive(Debug, Clone, PartialEq)]
pub struct RawIdBuf(Box<str>);

impl RawIdBuf {
    pub fn parse(text: &str) -> Option<Self> {
        RawId::parse(text).map(|id| id.to_buf())
    }

    pub fn as_raw_id(&self) -> RawId<'_> {
        RawId(&self.0)
    }
}

/// What a message is, with the id that requests and responses carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind<'a> {
    Request { id: RawId<'a> },
    Notification,
    Response { id: RawId<'a> },
}

/// One classified message. `name` is set only for `tools/call` and `prompts/get`, `uri` only for
/// `resources/read|subscribe|unsubscribe` (both required there); both are unescaped.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'a> {
    pub kind: Kind<'a>,
    /// `None` for responses.
    pub method: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
    pub uri: Option<Cow<'a, str>>,
}

impl<'a> Message<'a> {
    pub fn id(&self) -> Option<RawId<'a>> {
        match self.kind {
            Kind::Request { id } | Kind::Response { id } => Some(id),
            Kind::Notification => None,
        }
    }

    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// `params.name` or `params.uri`, whichever this method addresses: what `Mcp-Name` mirrors.
    pub fn target(&self) -> Option<&str> {
        self.name.as_deref().or(self.uri.as_deref())
    }
}

/// Which `params` member names what a method acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetParam {
    Name,
    Uri,
}

/// The methods whose target the gateway authorizes on (MCP `server/tools`, `server/prompts`,
/// `server/resources`).
pub fn target_param(method: &str) -> Option<TargetParam> {
    match method {
        "tools/call" | "prompts/get" => Some(TargetParam::Name),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            Some(TargetParam::Uri)
        }
        _ => None,
    }
}

/// A classified body: one message, or a batch (only where the route allows batches).
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope<'a> {
    Single(Message<'a>),
    Batch(Vec<Message<'a>>),
}

impl<'a> Envelope<'a> {
    pub fn messages(&self) -> std::slice::Iter<'_, Message<'a>> {
        match self {
            Envelope::Single(m) => std::slice::from_ref(m).iter(),
            Envelope::Batch(v) => v.iter(),
        }
    }

    pub fn is_batch(&self) -> bool {
        matches!(self, Envelope::Batch(_))
    }

    pub fn len(&self) -> usize {
        self.messages().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The single message, if this is not a batch.
    pub fn single(&self) -> Option<&Message<'a>> {
        match self {
            Envelope::Single(m) => Some(m),
            Envelope::Batch(_) => None,
        }
    }

    /// The first id in the body, for echoing in an error body (`null` is used when there is none).
    pub fn first_id(&self) -> Option<RawId<'a>> {
        self.messages().find_map(Message::id)
    }
}

impl<'e, 'a> IntoIterator for &'e Envelope<'a> {
    type Item = &'e Message<'a>;
    type IntoIter = std::slice::Iter<'e, Message<'a>>;
    fn into_iter(self) -> Self::IntoIter {
        self.messages()
    }
}

/// Classifies `body` in one pass; see the module docs for what is refused and why.
///
/// Syntax errors, duplicate keys and excessive depth win over JSON-RPC shape errors, because the whole
/// document is scanned before a shape error is reported (JSON-RPC §7: `[1, {bad` is a parse error).
pub fn classify<'a>(
    body: &'a [u8],
    limits: &Limits,
    allow_batches: bool,
) -> Result<Envelope<'a>, ClassifyError> {
    let text = std::str::from_utf8(body).map_err(|e| ClassifyError::Parse {
        offset: e.valid_up_to(),
    })?;
    let mut p = Classifier::new(text, limits.max_depth);
    p.sc.skip_ws();
    let top = if p.sc.peek() == Some(b'[') {
        // Rejected before scanning: 2025-06-18 removed batching, so most routes never pay for it.
        if !allow_batches {
            return Err(ClassifyError::BatchNotAllowed);
        }
        p.batch = Some(Vec::new());
        Slot::Batch
    } else {
        Slot::Message
    };
    p.run(top)?;
    p.sc.skip_ws();
    if p.sc.pos != text.len() {
        return Err(p.sc.err());
    }
    if let Some(reason) = p.invalid {
        return Err(ClassifyError::InvalidRequest(reason));
    }
    match (p.batch, p.single) {
        (Some(batch), _) => Ok(Envelope::Batch(batch)),
        (None, Some(m)) => Ok(Envelope::Single(m)),
        // Unreachable in practice: a top-level non-object sets `invalid`.
        (None, None) => Err(ClassifyError::InvalidRequest(InvalidReason::NotAnObject)),
    }
}

/// MCP 2026-07-28 § Server Validation: when `Mcp-Method` / `Mcp-Name` are present they must equal the
/// body's `method` / `params.name`-or-`params.uri`, or the gateway and the upstream could act on
/// different values. Values wrapped as `=?base64?…?=` are decoded first (SEP-2243 value encoding).
/// A batch carrying either header is a mismatch (the headers describe one message). A header value
/// that is not visible ASCII should be passed here as present-but-unequal by the caller.
pub fn check_headers(
    env: &Envelope<'_>,
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
) -> Result<(), ClassifyError> {
    let mismatch = |header| Err(ClassifyError::HeaderMismatch { header });
    let msg = match env {
        Envelope::Single(m) => m,
        Envelope::Batch(_) if mcp_method.is_some() => return mismatch(MCP_METHOD_HEADER),
        Envelope::Batch(_) if mcp_name.is_some() => return mismatch(MCP_NAME_HEADER),
        Envelope::Batch(_) => return Ok(()),
    };
    if let Some(h) = mcp_method
        && !header_matches(h, msg.method())
    {
        return mismatch(MCP_METHOD_HEADER);
    }
    if let Some(h) = mcp_name
        && !header_matches(h, msg.target())
    {
        return mismatch(MCP_NAME_HEADER);
    }
    Ok(())
}

fn header_matches(header: &str, body: Option<&str>) -> bool {
    let Some(body) = body else { return false };
    match header
        .strip_prefix("=?base64?")
        .and_then(|s| s.strip_suffix("?="))
    {
        Some(b64) => decode_base64(b64).is_some_and(|v| v == body.as_bytes()),
        None => header == body,
    }
}

/// Standard-alphabet, padded base64 (RFC 4648 §4), as SEP-2243 specifies for header values.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let quads = s.len() / 4;
    for (i, q) in s.chunks_exact(4).enumerate() {
        let pad = match (q[2], q[3]) {
            (b'=', b'=') => 2,
            (_, b'=') => 1,
            _ => 0,
        };
        if pad > 0 && i + 1 != quads {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// `{"jsonrpc":"2.0","id":<id or null>,"error":{"code":…,"message":…}}`.
pub fn jsonrpc_error_body(id: Option<RawId<'_>>, code: i64, message: &str) -> Bytes {
    error_body(id, code, message, None)
}

/// As [`jsonrpc_error_body`], plus `"data":{"request_id":…}` so a user can quote the gateway's request
/// id to an operator.
pub fn jsonrpc_error_body_with_request_id(
    id: Option<RawId<'_>>,
    code: i64,
    message: &str,
    request_id: &str,
) -> Bytes {
    error_body(id, code, message, Some(request_id))
}

fn error_body(id: Option<RawId<'_>>, code: i64, message: &str, request_id: Option<&str>) -> Bytes {
    let mut out = Vec::with_capacity(96 + message.len());
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.map_or("null", |id| id.as_json()).as_bytes());
    out.extend_from_slice(b",\"error\":{\"code\":");
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    write_json_string(&mut out, message);
    if let Some(rid) = request_id {
        out.extend_from_slice(b",\"data\":{\"request_id\":");
        write_json_string(&mut out, rid);
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    Bytes::from(out)
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    serde_json::to_writer(out, s).expect("serialising a str to a Vec is infallible");
}

// ---------------------------------------------------------------------------------------------------
// Scanner: JSON lexing over a &str (RFC 8259), shared by the classifier and `RawId`.

pub(crate) struct Scanner<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Self {
            src,
            bytes: src.as_bytes(),
            pos: 0,
        }
    }

    fn err(&self) -> ClassifyError {
        ClassifyError::Parse { offset: self.pos }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), ClassifyError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err())
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Result<(), ClassifyError> {
        if self.bytes[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(self.err())
        }
    }

    /// RFC 8259 §6 number grammar; what follows is checked by the caller's structure.
    fn number(&mut self) -> Result<(), ClassifyError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits1()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits1()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn digits1(&mut self) -> Result<(), ClassifyError> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            Err(self.err())
        } else {
            Ok(())
        }
    }

    /// Scans a string whose opening quote is at `pos`. With `keep`, returns its unescaped text
    /// (borrowed when it has no escapes) and refuses lone UTF-16 surrogates, which no Rust string can
    /// hold; without `keep` it only validates, accepting lone surrogates as most JSON parsers do for
    /// values we never interpret.
    pub(crate) fn string(&mut self, keep: bool) -> Result<Option<Cow<'a, str>>, ClassifyError> {
        self.expect(b'"')?;
        let mut owned: Option<String> = None;
        let mut run = self.pos;
        loop {
            let rest = &self.bytes[self.pos..];
            let Some(i) = string_special(rest) else {
                self.pos = self.bytes.len();
                return Err(self.err());
            };
            self.pos += i;
            match self.bytes[self.pos] {
                b'"' => {
                    let tail = &self.src[run..self.pos];
                    self.pos += 1;
                    if !keep {
                        return Ok(None);
                    }
                    return Ok(Some(match owned {
                        None => Cow::Borrowed(tail),
                        Some(mut s) => {
                            s.push_str(tail);
                            Cow::Owned(s)
                        }
                    }));
                }
                b'\\' => {
                    if keep {
                        owned
                            .get_or_insert_with(|| String::with_capacity(rest.len().min(64)))
                            .push_str(&self.src[run..self.pos]);
                    }
                    self.pos += 1;
                    let c = self.escape(keep)?;
                    if let (Some(s), Some(c)) = (owned.as_mut(), c) {
                        s.push(c);
                    }
                    run = self.pos;
                }
                // RFC 8259 §7: control characters must be escaped.
                _ => return Err(self.err()),
            }
        }
    }

    /// One escape after the backslash; returns the char only when `keep`.
    fn escape(&mut self, keep: bool) -> Result<Option<char>, ClassifyError> {
        let b = self.peek().ok_or_else(|| self.err())?;
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                if !keep {
                    return Ok(None);
                }
                match hi {
                    0xD800..=0xDBFF => {
                        if !self.bytes[self.pos..].starts_with(b"\\u") {
                            return Err(self.err());
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.err());
                        }
                        let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        char::from_u32(cp).ok_or_else(|| self.err())?
                    }
                    0xDC00..=0xDFFF => return Err(self.err()),
                    _ => char::from_u32(hi).ok_or_else(|| self.err())?,
                }
            }
            _ => return Err(self.err()),
        };
        Ok(Some(c))
    }

    fn hex4(&mut self) -> Result<u32, ClassifyError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.err()),
            };
            v = (v << 4) | u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------------------
// Classifier: an iterative (explicit-stack) walk that extracts only what authorization needs.

/// What the value about to be scanned means to the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Ignore,
    Batch,
    Message,
    Jsonrpc,
    Method,
    Id,
    Params,
    Name,
    Uri,
}

/// What an open container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Batch,
    Message,
    Params,
    Other,
}

struct Frame {
    object: bool,
    ctx: Ctx,
    /// Where this object's keys start in `Classifier::keys`.
    keys_from: usize,
}

#[derive(Default)]
enum Field<'a> {
    #[default]
    Absent,
    Str(Cow<'a, str>),
    Other,
}

#[derive(Default)]
enum IdField<'a> {
    #[default]
    Absent,
    Scalar(RawId<'a>),
    Invalid,
}

/// The members of the message being scanned; members may come in any order.
#[derive(Default)]
struct Draft<'a> {
    jsonrpc: Field<'a>,
    method: Field<'a>,
    name: Field<'a>,
    uri: Field<'a>,
    id: IdField<'a>,
    has_result: bool,
    has_error: bool,
}

impl<'a> Draft<'a> {
    fn finish(self) -> Result<Message<'a>, InvalidReason> {
        match &self.jsonrpc {
            Field::Str(v) if v == "2.0" => {}
            _ => return Err(InvalidReason::Version),
        }
        let id = match self.id {
            IdField::Absent => None,
            IdField::Scalar(id) => Some(id),
            IdField::Invalid => return Err(InvalidReason::BadId),
        };
        let method = match self.method {
            Field::Str(m) => m,
            Field::Other => return Err(InvalidReason::MethodNotString),
            Field::Absent => {
                // A response (JSON-RPC §5): id (may be null after a parse error) and exactly one of
                // result / error.
                let id = id.ok_or(InvalidReason::Shape)?;
                if self.has_result == self.has_error {
                    return Err(InvalidReason::Shape);
                }
                return Ok(Message {
                    kind: Kind::Response { id },
                    method: None,
                    name: None,
                    uri: None,
                });
            }
        };
        if self.has_result || self.has_error {
            return Err(InvalidReason::Shape);
        }
        let kind = match id {
            None => Kind::Notification,
            // MCP RequestId is string | integer; a null id would make the response unroutable.
            Some(id) if id.is_null() => return Err(InvalidReason::BadId),
            Some(id) => Kind::Request { id },
        };
        // A notification named `tools/call` is still an invocation, so it needs its target too.
        let (name, uri) = match target_param(&method) {
            Some(TargetParam::Name) => match self.name {
                Field::Str(n) => (Some(n), None),
                _ => return Err(InvalidReason::MissingName),
            },
            Some(TargetParam::Uri) => match self.uri {
                Field::Str(u) => (None, Some(u)),
                _ => return Err(InvalidReason::MissingUri),
            },
            None => (None, None),
        };
        Ok(Message {
            kind,
            method: Some(method),
            name,
            uri,
        })
    }
}

struct Classifier<'a> {
    sc: Scanner<'a>,
    max_depth: usize,
    stack: Vec<Frame>,
    /// Keys of all open objects, innermost last; truncated when an object closes. One arena instead
    /// of a Vec per object keeps allocation per body, not per object.
    keys: Vec<Cow<'a, str>>,
    draft: Draft<'a>,
    batch: Option<Vec<Message<'a>>>,
    batch_elements: usize,
    single: Option<Message<'a>>,
    /// First JSON-RPC shape error, reported only if the whole document is valid JSON.
    invalid: Option<InvalidReason>,
}

impl<'a> Classifier<'a> {
    fn new(src: &'a str, max_depth: usize) -> Self {
        Self {
            sc: Scanner::new(src),
            max_depth,
            stack: Vec::with_capacity(8),
            keys: Vec::with_capacity(16),
            draft: Draft::default(),
            batch: None,
            batch_elements: 0,
            single: None,
            invalid: None,
        }
    }

    fn invalid(&mut self, reason: InvalidReason) {
        self.invalid.get_or_insert(reason);
    }

    /// The main loop: `want` is `Some(slot)` while a value is expected, `None` after a value ended.
    fn run(&mut self, top: Slot) -> Result<(), ClassifyError> {
        let mut want = Some(top);
        loop {
            if let Some(slot) = want.take() {
                self.sc.skip_ws();
                match self.sc.peek() {
                    Some(b'{') => {
                        self.sc.pos += 1;
                        self.open(true, slot)?;
                        self.sc.skip_ws();
                        if self.sc.peek() == Some(b'}') {
                            self.sc.pos += 1;
                            self.close()?;
                        } else {
                            want = Some(self.member()?);
                            continue;
                        }
                    }
                    Some(b'[') => {
                        self.sc.pos += 1;
                        self.open(false, slot)?;
                        self.sc.skip_ws();
                        if self.sc.peek() == Some(b']') {
                            self.sc.pos += 1;
                            self.close()?;
                        } else {
                            want = Some(self.element());
                            continue;
                        }
                    }
                    Some(b'"') => self.string_value(slot)?,
                    Some(b'-' | b'0'..=b'9') => {
                        let start = self.sc.pos;
                        self.sc.number()?;
                        self.scalar_value(slot, start, true);
                    }
                    Some(b't') => {
                        self.sc.literal(b"true")?;
                        self.scalar_value(slot, 0, false);
                    }
                    Some(b'f') => {
                        self.sc.literal(b"false")?;
                        self.scalar_value(slot, 0, false);
                    }
                    Some(b'n') => {
                        let start = self.sc.pos;
                        self.sc.literal(b"null")?;
                        self.scalar_value(slot, start, true);
                    }
                    _ => return Err(self.sc.err()),
                }
            }
            // A value ended: continue or close the enclosing container.
            let Some(frame) = self.stack.last() else {
                return Ok(());
            };
            let object = frame.object;
            self.sc.skip_ws();
            match self.sc.peek() {
                Some(b',') => {
                    self.sc.pos += 1;
                    want = Some(if object {
                        self.member()?
                    } else {
                        self.element()
                    });
                }
                Some(b'}') if object => {
                    self.sc.pos += 1;
                    self.close()?;
                }
                Some(b']') if !object => {
                    self.sc.pos += 1;
                    self.close()?;
                }
                _ => return Err(self.sc.err()),
            }
        }
    }

    fn open(&mut self, object: bool, slot: Slot) -> Result<(), ClassifyError> {
        if self.stack.len() >= self.max_depth {
            return Err(ClassifyError::TooDeep {
                max_depth: self.max_depth,
            });
        }
        let ctx = match (slot, object) {
            (Slot::Batch, false) => Ctx::Batch,
            (Slot::Message, true) => {
                self.draft = Draft::default();
                Ctx::Message
            }
            (Slot::Params, true) => Ctx::Params,
            (Slot::Message, false) => {
                self.invalid(InvalidReason::NotAnObject);
                Ctx::Other
            }
            (Slot::Id, _) => {
                self.draft.id = IdField::Invalid;
                Ctx::Other
            }
            (Slot::Jsonrpc | Slot::Method | Slot::Name | Slot::Uri, _) => {
                self.set_field(slot, Field::Other);
                Ctx::Other
            }
            _ => Ctx::Other,
        };
        self.stack.push(Frame {
            object,
            ctx,
            keys_from: self.keys.len(),
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), ClassifyError> {
        let frame = self.stack.pop().expect("close() follows open()");
        if frame.object {
            if has_duplicate(&mut self.keys[frame.keys_from..]) {
                return Err(ClassifyError::DuplicateKey);
            }
            self.keys.truncate(frame.keys_from);
        }
        match frame.ctx {
            Ctx::Message => match std::mem::take(&mut self.draft).finish() {
                Ok(m) => match &mut self.batch {
                    Some(batch) => batch.push(m),
                    None => self.single = Some(m),
                },
                Err(reason) => self.invalid(reason),
            },
            Ctx::Batch if self.batch_elements == 0 => self.invalid(InvalidReason::EmptyBatch),
            Ctx::Batch | Ctx::Params | Ctx::Other => {}
        }
        Ok(())
    }

    /// Scans `"key":` inside an object and returns the slot of its value.
    fn member(&mut self) -> Result<Slot, ClassifyError> {
        self.sc.skip_ws();
        if self.sc.peek() != Some(b'"') {
            return Err(self.sc.err());
        }
        let key = self.sc.string(true)?.expect("keep=true returns the key");
        self.sc.skip_ws();
        self.sc.expect(b':')?;
        let ctx = self.stack.last().map_or(Ctx::Other, |f| f.ctx);
        let slot = match (ctx, &*key) {
            (Ctx::Message, "jsonrpc") => Slot::Jsonrpc,
            (Ctx::Message, "method") => Slot::Method,
            (Ctx::Message, "id") => Slot::Id,
            (Ctx::Message, "params") => Slot::Params,
            (Ctx::Message, "result") => {
                self.draft.has_result = true;
                Slot::Ignore
            }
            (Ctx::Message, "error") => {
                self.draft.has_error = true;
                Slot::Ignore
            }
            (Ctx::Params, "name") => Slot::Name,
            (Ctx::Params, "uri") => Slot::Uri,
            _ => Slot::Ignore,
        };
        self.keys.push(key);
        Ok(slot)
    }

    fn element(&mut self) -> Slot {
        match self.stack.last().map(|f| f.ctx) {
            Some(Ctx::Batch) => {
                self.batch_elements += 1;
                Slot::Message
            }
            _ => Slot::Ignore,
        }
    }

    fn string_value(&mut self, slot: Slot) -> Result<(), ClassifyError> {
        match slot {
            Slot::Jsonrpc | Slot::Method | Slot::Name | Slot::Uri => {
                let s = self.sc.string(true)?.expect("keep=true returns the value");
                self.set_field(slot, Field::Str(s));
            }
            Slot::Id => {
                let start = self.sc.pos;
                // Strict (keep) so that `RawId::same_as` can always unescape it later.
                self.sc.string(true)?;
                self.draft.id = IdField::Scalar(RawId(&self.sc.src[start..self.sc.pos]));
            }
            Slot::Message | Slot::Batch => {
                self.sc.string(false)?;
                self.invalid(InvalidReason::NotAnObject);
            }
            Slot::Params | Slot::Ignore => {
                self.sc.string(false)?;
            }
        }
        Ok(())
    }

    /// A number or literal ended; `id_ok` says whether it may be an id (numbers and null).
    fn scalar_value(&mut self, slot: Slot, start: usize, id_ok: bool) {
        match slot {
            Slot::Id if id_ok => {
                self.draft.id = IdField::Scalar(RawId(&self.sc.src[start..self.sc.pos]));
            }
            Slot::Id => self.draft.id = IdField::Invalid,
            Slot::Jsonrpc | Slot::Method | Slot::Name | Slot::Uri => {
                self.set_field(slot, Field::Other)
            }
            Slot::Message | Slot::Batch => self.invalid(InvalidReason::NotAnObject),
            Slot::Params | Slot::Ignore => {}
        }
    }

    fn set_field(&mut self, slot: Slot, value: Field<'a>) {
        let d = &mut self.draft;
        match slot {
            Slot::Jsonrpc => d.jsonrpc = value,
            Slot::Method => d.method = value,
            Slot::Name => d.name = value,
            Slot::Uri => d.uri = value,
            _ => {}
        }
    }
}

/// Position of the first `"`, `\` or control byte: where a JSON string ends or needs escaping.
/// Eight bytes at a time, with the "has zero byte" and "has less than" tests of Bit Twiddling
/// Hacks; a byte-at-a-time search cost ~5 instructions a byte and was the classifier's
/// largest cost (callgrind, tests/load). A test's false positives only ever lie above a true
/// match, so the lowest flagged byte is the first match.
pub(crate) fn string_special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut words = bytes.chunks_exact(8);
    for (n, word) in (&mut words).enumerate() {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let found = (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
            | has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(n * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let tail = words.remainder();
    let at = bytes.len() - tail.len();
    tail.iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|i| at + i)
}

/// Pairwise for the small objects MCP messages are made of; sorting for large ones so a hostile
/// object with 100k keys costs O(n log n), not O(n²).
fn has_duplicate(keys: &mut [Cow<'_, str>]) -> bool {
    const PAIRWISE_MAX: usize = 16;
    if keys.len() <= PAIRWISE_MAX {
        (1..keys.len()).any(|i| keys[..i].contains(&keys[i]))
    } else {
        keys.sort_unstable();
        keys.windows(2).any(|w| w[0] == w[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Message<'_> {
        match classify(body.as_bytes(), &Limits::default(), false) {
            Ok(Envelope::Single(m)) => m,
            other => panic!("{body}: {other:?}"),
        }
    }

    fn err(body: &str) -> ClassifyError {
        classify(body.as_bytes(), &Limits::default(), true).expect_err(body)
    }

    #[test]
    fn tools_call_extracts_method_name_and_raw_id() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_events","arguments":{"name":"x","uri":"y"}}}"#,
        );
        assert_eq!(m.method(), Some("tools/call"));
        assert_eq!(m.name.as_deref(), Some("get_events"));
        assert!(
            matches!(m.name, Some(Cow::Borrowed(_))),
            "no escapes: borrowed"
        );
        assert_eq!(m.uri, None);
        assert_eq!(m.id().unwrap().as_json(), "7");
        assert!(matches!(m.kind, Kind::Request { .. }));
    }

    #[test]
    fn the_word_search_finds_the_first_special_byte() {
        for len in 0..20 {
            assert_eq!(string_special(&vec![b'a'; len]), None);
            assert_eq!(string_special("é€".repeat(len).as_bytes()), None);
            for pos in 0..len {
                for b in 0..0x80u8 {
                    let mut s = vec![b'a'; len];
                    s[pos] = b;
                    // A second special byte after the first never changes the answer.
                    if pos + 1 < len {
                        s[pos + 1] = b'"';
                    }
                    let special = b < 0x20 || b == b'"' || b == b'\\';
                    let expected = if special {
                        Some(pos)
                    } else {
                        (pos + 1 < len).then_some(pos + 1)
                    };
                    assert_eq!(
                        string_special(&s),
                        expected,
                        "byte {b:#04x} at {pos} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn members_in_any_order() {
        let m = one(
            r#" { "params" : { "uri" : "file:///a b" } , "method" : "resources/read" , "id" : "x" , "jsonrpc" : "2.0" } "#,
        );
        assert_eq!(m.uri.as_deref(), Some("file:///a b"));
        assert_eq!(m.name, None);
        assert_eq!(m.id().unwrap().as_json(), r#""x""#);
    }

    #[test]
    fn escaped_name_and_method_are_unescaped() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"\u0064elete_event"}}"#,
        );
        assert_eq!(m.method(), Some("tools/call"));
        assert_eq!(m.name.as_deref(), Some("delete_event"));
        assert!(matches!(m.name, Some(Cow::Owned(_))));
    }

    #[test]
    fn surrogate_pairs_and_unicode_names() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"r\u00e9sum\u00e9 \ud83d\ude00 日本"}}"#,
        );
        assert_eq!(m.name.as_deref(), Some("résumé 😀 日本"));
        assert!(matches!(
            err(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"\ud83d"}}"#),
            ClassifyError::Parse { .. }
        ));
    }

    #[test]
    fn duplicate_keys_rejected_after_unescaping() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list","params":{"name":"a"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"deep":[{"k":1,"k":2}]}}"#,
        ] {
            assert_eq!(err(body), ClassifyError::DuplicateKey, "{body}");
        }
    }

    #[test]
    fn duplicate_keys_in_large_objects_use_the_sorting_path() {
        let mut obj: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let ok = format!(
            r#"{{"jsonrpc":"2.0","method":"x","params":{{{}}}}}"#,
            obj.join(",")
        );
        assert!(classify(ok.as_bytes(), &Limits::default(), false).is_ok());
        obj.push("\"k\\u0031\":0".into());
        let dup = format!(
            r#"{{"jsonrpc":"2.0","method":"x","params":{{{}}}}}"#,
            obj.join(",")
        );
        assert_eq!(err(&dup), ClassifyError::DuplicateKey);
    }

    #[test]
    fn deep_nesting_fails_fast_without_recursion() {
        let body = vec![b'['; 1 << 20];
        let t = std::time::Instant::now();
        assert_eq!(
            classify(&body, &Limits::default(), true).unwrap_err(),
            ClassifyError::TooDeep { max_depth: 64 }
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let mut obj = String::from(r#"{"jsonrpc":"2.0","method":"x","params":"#);
        obj.push_str(&r#"{"a":"#.repeat(1 << 16));
        assert_eq!(err(&obj), ClassifyError::TooDeep { max_depth: 64 });
        // A huge limit is still safe: the walk is iterative.
        let huge = Limits {
            max_depth: usize::MAX,
        };
        let mut deep = String::from(r#"{"jsonrpc":"2.0","method":"x","params":"#);
        deep.push_str(&"[".repeat(100_000));
        deep.push_str(&"]".repeat(100_000));
        deep.push('}');
        assert!(classify(deep.as_bytes(), &huge, false).is_ok());
        // Exactly at the limit is fine: message object (1) + params (2) + 62 arrays = 64.
        let mut at = String::from(r#"{"jsonrpc":"2.0","method":"x","params":{"a":"#);
        at.push_str(&"[".repeat(62));
        at.push_str(&"]".repeat(62));
        at.push_str("}}");
        assert!(classify(at.as_bytes(), &Limits::default(), false).is_ok());
        at.insert(at.find('[').unwrap(), '[');
        at.insert(at.rfind(']').unwrap(), ']');
        assert_eq!(err(&at), ClassifyError::TooDeep { max_depth: 64 });
    }

    #[test]
    fn invalid_json_is_a_parse_error() {
        for body in [
            "",
            "   ",
            "{",
            r#"{"jsonrpc":"2.0","method":"x",}"#,
            r#"{"jsonrpc":"2.0","method":"x"} x"#,
            r#"{"jsonrpc":"2.0","method":'x'}"#,
            r#"{"jsonrpc":"2.0","method":"x","id":01}"#,
            r#"{"jsonrpc":"2.0","method":"x","id":1.}"#,
            r#"{"jsonrpc":"2.0","method":"x","id":-}"#,
            r#"{"jsonrpc":"2.0","method":"x","params":[1,]}"#,
            r#"{"jsonrpc":"2.0","method":"x","params":tru}"#,
            r#"{"jsonrpc":"2.0","method":"x","params":"\x"}"#,
            r#"{"jsonrpc":"2.0","method":"x","params":"\u12"}"#,
            "{\"jsonrpc\":\"2.0\",\"method\":\"a\tb\"}",
            "\u{feff}{\"jsonrpc\":\"2.0\",\"method\":\"x\"}",
            "[1, {bad",
        ] {
            assert!(matches!(err(body), ClassifyError::Parse { .. }), "{body:?}");
        }
        assert!(matches!(
            classify(b"{\"a\":\"\xff\"}", &Limits::default(), false),
            Err(ClassifyError::Parse { offset: 6 })
        ));
    }

    #[test]
    fn lone_surrogates_are_tolerated_only_in_values_we_ignore() {
        let ok = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"s":"\udc00\ud800x"}}}"#;
        assert!(classify(ok.as_bytes(), &Limits::default(), false).is_ok());
        let key = r#"{"jsonrpc":"2.0","method":"x","params":{"\ud800":1}}"#;
        assert!(matches!(err(key), ClassifyError::Parse { .. }));
    }

    #[test]
    fn invalid_requests() {
        use InvalidReason::*;
        for (body, reason) in [
            (r#"[]"#, EmptyBatch),
            (r#""x""#, NotAnObject),
            (r#"[1]"#, NotAnObject),
            (r#"{"method":"x"}"#, Version),
            (r#"{"jsonrpc":"1.0","method":"x"}"#, Version),
            (r#"{"jsonrpc":2.0,"method":"x"}"#, Version),
            (r#"{"jsonrpc":"2.0","method":1}"#, MethodNotString),
            (r#"{"jsonrpc":"2.0","method":{"a":1}}"#, MethodNotString),
            (r#"{"jsonrpc":"2.0","method":"x","id":true}"#, BadId),
            (r#"{"jsonrpc":"2.0","method":"x","id":{}}"#, BadId),
            (r#"{"jsonrpc":"2.0","method":"x","id":null}"#, BadId),
            (r#"{"jsonrpc":"2.0","id":1}"#, Shape),
            (r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#, Shape),
            (r#"{"jsonrpc":"2.0","id":1,"method":"x","result":1}"#, Shape),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
                MissingName,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
                MissingName,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["a"]}"#,
                MissingName,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"tools/call","params":{}}"#,
                MissingName,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"a"}}"#,
                MissingUri,
            ),
        ] {
            assert_eq!(err(body), ClassifyError::InvalidRequest(reason), "{body}");
        }
    }

    #[test]
    fn kinds() {
        let n = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(n.kind, Kind::Notification);
        let r = one(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#);
        assert!(matches!(r.kind, Kind::Response { .. }));
        assert_eq!(r.method(), None);
        let e = one(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}"#);
        assert!(e.id().unwrap().is_null());
    }

    #[test]
    fn batches_off_and_on() {
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/x"}]"#;
        assert_eq!(
            classify(body, &Limits::default(), false).unwrap_err(),
            ClassifyError::BatchNotAllowed
        );
        let env = classify(body, &Limits::default(), true).unwrap();
        assert!(env.is_batch());
        assert_eq!(env.len(), 2);
        assert_eq!(env.first_id().unwrap().as_json(), "1");
        let methods: Vec<_> = env.messages().filter_map(Message::method).collect();
        assert_eq!(methods, ["tools/list", "notifications/x"]);
        let bad = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0"}]"#;
        assert_eq!(
            classify(bad, &Limits::default(), true).unwrap_err(),
            ClassifyError::InvalidRequest(InvalidReason::Shape)
        );
        // Nested arrays inside a batch are not batches.
        assert_eq!(
            classify(b"[[]]", &Limits::default(), true).unwrap_err(),
            ClassifyError::InvalidRequest(InvalidReason::NotAnObject)
        );
    }

    #[test]
    fn raw_id_equality_is_by_json_value() {
        let p = |s| RawId::parse(s).unwrap();
        assert!(p("1").same_as(p("1")));
        assert!(!p("1").same_as(p("\"1\"")));
        assert!(p("\"a\"").same_as(p("\"\\u0061\"")));
        assert!(!p("\"a\"").same_as(p("\"b\"")));
        for bad in [
            "",
            " 1",
            "1 ",
            "{}",
            "[]",
            "true",
            "\"a",
            "01",
            "nul",
            "\"\\ud800\"",
        ] {
            assert!(RawId::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(
            RawIdBuf::parse("\"x\"").unwrap().as_raw_id().as_json(),
            "\"x\""
        );
    }

    #[test]
    fn error_bodies() {
        let id = RawId::parse("\"a\\\"b\"").unwrap();
        let b = jsonrpc_error_body(Some(id), INVALID_REQUEST, "bad \"thing\"\n");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["id"], "a\"b");
        assert_eq!(v["error"]["code"], -32600);
        assert_eq!(v["error"]["message"], "bad \"thing\"\n");
        let b = jsonrpc_error_body_with_request_id(None, HEADER_MISMATCH, "m", "req-1");
        assert_eq!(
            &b[..],
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32020,"message":"m","data":{"request_id":"req-1"}}}"#
        );
        assert_eq!(ClassifyError::Parse { offset: 0 }.code(), PARSE_ERROR);
        assert_eq!(ClassifyError::DuplicateKey.code(), INVALID_REQUEST);
    }

    #[test]
    fn header_check() {
        let body =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"caf\u00e9"}}"#;
        let env = classify(body, &Limits::default(), true).unwrap();
        assert_eq!(check_headers(&env, None, None), Ok(()));
        assert_eq!(check_headers(&env, Some("tools/call"), None), Ok(()));
        // "café" = Y2Fmw6k= (SEP-2243 base64 sentinel for non-ASCII values)
        assert_eq!(
            check_headers(&env, Some("tools/call"), Some("=?base64?Y2Fmw6k=?=")),
            Ok(())
        );
        let mm = |h| Err(ClassifyError::HeaderMismatch { header: h });
        assert_eq!(
            check_headers(&env, Some("tools/list"), None),
            mm("Mcp-Method")
        );
        assert_eq!(check_headers(&env, None, Some("cafe")), mm("Mcp-Name"));
        assert_eq!(
            check_headers(&env, None, Some("=?base64?Y2Fmw6k?=")),
            mm("Mcp-Name")
        );
        assert_eq!(
            check_headers(&env, None, Some("=?base64?!!!!?=")),
            mm("Mcp-Name")
        );
        let list = classify(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            &Limits::default(),
            false,
        )
        .unwrap();
        assert_eq!(check_headers(&list, None, Some("x")), mm("Mcp-Name"));
        let read = classify(
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#,
            &Limits::default(),
            false,
        )
        .unwrap();
        assert_eq!(
            check_headers(&read, Some("resources/read"), Some("file:///a")),
            Ok(())
        );
        let batch = classify(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
            &Limits::default(),
            true,
        )
        .unwrap();
        assert_eq!(
            check_headers(&batch, Some("tools/list"), None),
            mm("Mcp-Method")
        );
        assert_eq!(check_headers(&batch, None, Some("x")), mm("Mcp-Name"));
        assert_eq!(check_headers(&batch, None, None), Ok(()));
    }

    #[test]
    fn base64_decoder() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert_eq!(decode_base64("YWI=").unwrap(), b"ab");
        assert_eq!(decode_base64("YWJj").unwrap(), b"abc");
        assert_eq!(
            decode_base64("PT9iYXNlNjQ/bGl0ZXJhbD89").unwrap(),
            b"=?base64?literal?="
        );
        assert!(decode_base64("YQ==YWJj").is_none());
        assert!(decode_base64("YQ").is_none());
    }
}
