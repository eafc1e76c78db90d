//! The HTTP/1.1 wire format of exchanges with plain-HTTP upstreams (RFC 9112): request heads
//! out; response heads, body framing and chunked decoding in.
//!
//! Written here rather than taken from hyper's client because the gateway already knows every
//! header it sends and needs nothing of the client's dispatch machinery: serialising straight
//! from the request's `HeaderMap` and parsing the response with `httparse` (hyper's own parser)
//! cost a third of the instructions hyper's client connection spent on the same exchange.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::headers::{HOP_BY_HOP, Outbound};

/// Largest response head accepted from an upstream.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in one response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest trailer section of a chunked body; trailers are read and dropped.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid response header {0}")]
    Header(String),
    #[error("status {0} is not supported on a forwarded request")]
    Status(u16),
    #[error("invalid or conflicting content-length")]
    ContentLength,
    #[error("unsupported transfer-coding (only chunked is accepted)")]
    TransferCoding,
    #[error("malformed chunked body")]
    Chunk,
}

/// The parts of a request head the gateway decided on.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Path pieces written one after the other (the upstream base path, the route's tail).
    pub path: [&'a str; 2],
    pub query: Option<&'a str>,
    pub host: &'a HeaderValue,
    /// The client's headers, sent as `outbound` says; framing headers are written here.
    pub headers: &'a HeaderMap,
    pub outbound: &'a Outbound<'a>,
    /// The body's exact length, or `None` to send it chunked.
    pub length: Option<u64>,
}

/// Serialises the request line and header section into `out`.
pub fn encode_request(out: &mut Vec<u8>, head: &RequestHead<'_>) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let [base, tail] = head.path;
    if base.is_empty() && tail.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(base.as_bytes());
    out.extend_from_slice(tail.as_bytes());
    if let Some(q) = head.query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(head.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    head.outbound.for_each(head.headers, |name, value| {
        // Framing and routing are the gateway's to write.
        if name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            return;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
    match head.length {
        // As hyper's client: no `content-length: 0` on methods that carry no body.
        Some(0) if !matches!(*head.method, Method::POST | Method::PUT | Method::PATCH) => {}
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: 204, 304, or a response to HEAD.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// Hop-by-hop fields (and those `Connection` names) already removed.
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request once this body has been read.
    pub keep_alive: bool,
}

#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// An interim 1xx response of this many bytes, to be skipped.
    Interim(usize),
    /// A final response head of this many bytes.
    Head(ResponseHead, usize),
}

/// Parses the response head at the start of `buf`; header values share `buf`'s memory.
pub fn parse_response(buf: &Bytes, method: &Method) -> Result<Parsed, WireError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(WireError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(WireError::Head(e)),
    };
    let code = resp.code.unwrap_or_default();
    match code {
        // 101 would switch protocols; nothing the gateway sends asks for it.
        101 => return Err(WireError::Status(code)),
        100..=199 => return Ok(Parsed::Interim(len)),
        _ => {}
    }
    let status = StatusCode::from_u16(code).map_err(|_| WireError::Status(code))?;
    let mut fields = Fields {
        keep_alive: resp.version == Some(1),
        ..Fields::default()
    };
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| WireError::Header(h.name.escape_default().to_string()))?;
        if fields.consumes(&name, h.value)? {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(buf.slice_ref(h.value))
            .map_err(|_| WireError::Header(name.to_string()))?;
        headers.append(name, value);
    }
    for name in &fields.listed {
        headers.remove(name);
    }
    let framing = fields.framing(&status, method, &mut headers)?;
    let head = ResponseHead {
        status,
        headers,
        framing,
        keep_alive: fields.keep_alive,
    };
    Ok(Parsed::Head(head, len))
}

/// What the framing and connection-level fields of a response say.
#[derive(Default)]
struct Fields {
    length: Option<u64>,
    /// `Some(chunked_last)` when a Transfer-Encoding field was present.
    coding: Option<bool>,
    keep_alive: bool,
    /// Names the `Connection` field lists: hop-by-hop for this message (RFC 9110 §7.6.1).
    listed: Vec<HeaderName>,
}

impl Fields {
    /// Takes note of a framing or hop-by-hop field; `true` if it is not to be forwarded.
    fn consumes(&mut self, name: &HeaderName, value: &[u8]) -> Result<bool, WireError> {
        if name == header::CONTENT_LENGTH {
            let n = parse_length(value).ok_or(WireError::ContentLength)?;
            if self.length.is_some_and(|m| m != n) {
                return Err(WireError::ContentLength);
            }
            self.length = Some(n);
            return Ok(false);
        }
        if name == header::TRANSFER_ENCODING {
            // Chunked must be the only coding: another would reach the client undeclared once
            // this hop-by-hop field is dropped.
            let only_chunked =
                self.coding.is_none() && value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            self.coding = Some(only_chunked);
            return Ok(true);
        }
        if name == header::CONNECTION {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    // Names a field that is hop-by-hop anyway; the common case, kept cheap.
                } else if let Ok(listed) = HeaderName::from_bytes(token) {
                    self.listed.push(listed);
                }
            }
            return Ok(true);
        }
        Ok(HOP_BY_HOP.contains(name))
    }

    fn framing(
        &mut self,
        status: &StatusCode,
        method: &Method,
        headers: &mut HeaderMap,
    ) -> Result<Framing, WireError> {
        if *method == Method::HEAD
            || *status == StatusCode::NO_CONTENT
            || *status == StatusCode::NOT_MODIFIED
        {
            return Ok(Framing::Empty);
        }
        match (self.coding, self.length) {
            (Some(true), length) => {
                // Both framings at once smell of request smuggling: chunked wins, the length is
                // dropped, and the connection is not reused (RFC 9112 §6.3, item 3).
                if length.is_some() {
                    headers.remove(header::CONTENT_LENGTH);
                    self.keep_alive = false;
                }
                Ok(Framing::Chunked)
            }
            (Some(false), _) => Err(WireError::TransferCoding),
            (None, Some(0)) => Ok(Framing::Empty),
            (None, Some(n)) => Ok(Framing::Length(n)),
            (None, None) => {
                self.keep_alive = false;
                Ok(Framing::Close)
            }
        }
    }
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// What the next step of reading a body produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer holds no further complete element; read more.
    NeedMore,
    End,
}

/// Incremental decoder of one response body from a connection's read buffer.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Close,
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers(usize),
    Done,
}

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        Decoder { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The upstream closed the connection: the end of a close-delimited body, `true`; any
    /// other body is truncated, `false`.
    pub fn at_eof(&mut self) -> bool {
        if self.state == State::Close {
            self.state = State::Done;
        }
        self.is_done()
    }

    /// Bytes still expected, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of body data out of `buf`, consuming framing bytes on the way.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(_) | State::ChunkData(_) if buf.is_empty() => {
                    return Ok(Decoded::NeedMore);
                }
                State::Length(n) => return Ok(self.data(buf, n, State::Done, State::Length)),
                State::ChunkData(n) => {
                    return Ok(self.data(buf, n, State::ChunkEnd, State::ChunkData));
                }
                State::Close if buf.is_empty() => return Ok(Decoded::NeedMore),
                State::Close => return Ok(Decoded::Data(buf.split().freeze())),
                _ => {
                    if !self.step_framing(buf)? {
                        return Ok(Decoded::NeedMore);
                    }
                }
            }
        }
    }

    /// Up to `n` bytes of data from `buf`; then `after`, or `more` with what is still due.
    fn data(
        &mut self,
        buf: &mut BytesMut,
        n: u64,
        after: State,
        more: fn(u64) -> State,
    ) -> Decoded {
        let k = usize::try_from(n).map_or(buf.len(), |n| n.min(buf.len()));
        let left = n - k as u64;
        self.state = if left == 0 { after } else { more(left) };
        Decoded::Data(buf.split_to(k).freeze())
    }

    /// Consumes the framing that follows the data just returned, so that a body whose end is
    /// already buffered is known to be complete without another read. `true` if it is.
    pub fn settle(&mut self, buf: &mut BytesMut) -> Result<bool, WireError> {
        while matches!(self.state, State::ChunkEnd | State::Trailers(_))
            || (self.state == State::ChunkSize && starts_last_chunk(buf))
        {
            if !self.step_framing(buf)? {
                break;
            }
        }
        Ok(self.is_done())
    }

    /// One chunk-size line, chunk end or trailer line; `false` if `buf` holds too little.
    fn step_framing(&mut self, buf: &mut BytesMut) -> Result<bool, WireError> {
        match self.state {
            State::ChunkSize => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(size)
                    };
                    Ok(true)
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                    Err(WireError::Chunk)
                }
                Ok(httparse::Status::Partial) => Ok(false),
                Err(_) => Err(WireError::Chunk),
            },
            State::ChunkEnd => {
                if buf.len() < 2 {
                    return Ok(false);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(WireError::Chunk);
                }
                buf.advance(2);
                self.state = State::ChunkSize;
                Ok(true)
            }
            State::Trailers(seen) => {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if seen + buf.len() > MAX_TRAILERS {
                        return Err(WireError::Chunk);
                    }
                    return Ok(false);
                };
                buf.advance(end + 2);
                self.state = if end == 0 {
                    State::Done
                } else if seen + end + 2 > MAX_TRAILERS {
                    return Err(WireError::Chunk);
                } else {
                    State::Trailers(seen + end + 2)
                };
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Whether `buf` begins with the zero-size chunk that ends a chunked body.
fn starts_last_chunk(buf: &[u8]) -> bool {
    let zeros = buf.iter().take_while(|&&b| b == b'0').count();
    zeros > 0 && matches!(buf.get(zeros), Some(b'\r' | b';' | b' ' | b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Parsed, WireError> {
        parse_response(&Bytes::copy_from_slice(text.as_bytes()), &Method::POST)
    }

    fn final_head(text: &str) -> (ResponseHead, usize) {
        match head(text).unwrap() {
            Parsed::Head(h, n) => (h, n),
            other => panic!("not a final head: {other:?}"),
        }
    }

    /// Feeds `wire` to a decoder in pieces of `step` bytes and returns the body it decoded.
    fn decode_in_steps(framing: Framing, wire: &[u8], step: usize) -> Result<Vec<u8>, WireError> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::End => return Ok(body),
                Decoded::NeedMore if fed == wire.len() => return Ok(body),
                Decoded::NeedMore => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn request_head_is_written_with_gateway_framing_and_host() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(header::HOST, HeaderValue::from_static("client.example"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        let host = HeaderValue::from_static("up:8080");
        let strip = super::super::headers::request_strip_set(&[], [].iter());
        let outbound = Outbound {
            strip: &strip,
            added: vec![(
                HeaderName::from_static("x-b"),
                HeaderValue::from_static("3"),
            )],
        };
        let mut out = Vec::new();
        encode_request(
            &mut out,
            &RequestHead {
                method: &Method::POST,
                path: ["/mcp", "/x"],
                query: Some("a=1"),
                host: &host,
                headers: &headers,
                outbound: &outbound,
                length: Some(12),
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /mcp/x?a=1 HTTP/1.1\r\nhost: up:8080\r\ncontent-type: application/json\r\n\
             x-a: 1\r\nx-a: 2\r\nx-b: 3\r\ncontent-length: 12\r\n\r\n"
        );
    }

    #[test]
    fn bodiless_get_has_no_length_and_streamed_body_is_chunked() {
        let host = HeaderValue::from_static("up");
        let headers = HeaderMap::new();
        let strip = super::super::headers::StripSet::default();
        let outbound = Outbound {
            strip: &strip,
            added: Vec::new(),
        };
        let mut out = Vec::new();
        let mut req = RequestHead {
            method: &Method::GET,
            path: ["", ""],
            query: None,
            host: &host,
            headers: &headers,
            outbound: &outbound,
            length: Some(0),
        };
        encode_request(&mut out, &req);
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: up\r\n\r\n");
        out.clear();
        req.length = None;
        encode_request(&mut out, &req);
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn response_head_drops_hop_by_hop_and_connection_listed_fields() {
        let text = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: x-secret, close\r\n\
             X-Secret: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n{}";
        let (h, n) = final_head(text);
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(2));
        assert!(!h.keep_alive);
        assert_eq!(h.headers.len(), 2, "{:?}", h.headers);
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers["content-length"], "2");
        assert_eq!(n, text.len() - 2, "the head ends before the body");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                Framing::Empty,
                true,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", Framing::Empty, true),
            (
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n",
                Framing::Length(3),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
        ];
        for (text, framing, keep_alive) in cases {
            let (h, _) = final_head(text);
            assert_eq!((h.framing, h.keep_alive), (framing, keep_alive), "{text}");
            if framing == Framing::Chunked {
                assert!(h.headers.get("content-length").is_none(), "{text}");
            }
        }
    }

    #[test]
    fn bad_framing_and_heads_are_errors() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(head(text).is_err(), "{text}");
        }
        let big = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(head(&big), Err(WireError::HeadTooLarge)));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nx: 1\r\n"),
            Ok(Parsed::Partial)
        ));
        assert!(matches!(
            head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
            Ok(Parsed::Interim(25))
        ));
    }

    #[test]
    fn header_values_share_the_read_buffer() {
        let wire = Bytes::from_static(b"HTTP/1.1 200 OK\r\nx-v: abc\r\ncontent-length: 0\r\n\r\n");
        let Parsed::Head(h, _) = parse_response(&wire, &Method::GET).unwrap() else {
            panic!("no head");
        };
        let v = h.headers["x-v"].as_bytes();
        assert!(wire.as_ptr_range().contains(&v.as_ptr()));
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\ntrailer: x\r\n\r\n";
        for step in 1..=wire.len() {
            let body = decode_in_steps(Framing::Chunked, wire, step).unwrap();
            assert_eq!(body, b"hello world!", "step {step}");
        }
    }

    #[test]
    fn length_and_close_bodies_decode_and_stop_at_the_length() {
        let body = decode_in_steps(Framing::Length(5), b"hello", 2).unwrap();
        assert_eq!(body, b"hello");
        let body = decode_in_steps(Framing::Close, b"until close", 3).unwrap();
        assert_eq!(body, b"until close");
        let mut d = Decoder::new(Framing::Length(3));
        let mut buf = BytesMut::from(&b"abcEXTRA"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(d.decode(&mut buf).unwrap(), Decoded::End);
        assert_eq!(&buf[..], b"EXTRA");
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"zz\r\nhello\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            assert!(decode_in_steps(Framing::Chunked, wire, wire.len()).is_err());
        }
        let long_line = format!("1;{}", "e".repeat(MAX_CHUNK_LINE + 1));
        assert!(decode_in_steps(Framing::Chunked, long_line.as_bytes(), 64).is_err());
        let trailers = format!("0\r\n{}", "t: 1\r\n".repeat(MAX_TRAILERS / 6 + 1));
        assert!(decode_in_steps(Framing::Chunked, trailers.as_bytes(), 100).is_err());
    }

    #[test]
    fn settle_sees_a_buffered_end_of_chunked_body() {
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"ok"))
        );
        assert!(d.settle(&mut buf).unwrap());
        assert!(buf.is_empty());
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"2\r\nok\r\n3\r\nmor"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"ok"))
        );
        assert!(!d.settle(&mut buf).unwrap());
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"mor"))
        );
    }
}
