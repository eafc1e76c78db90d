//! Raw HTTP/1.1 over TCP or TLS, for tests where the exact bytes on the wire matter (paths that
//! clients would normalise, hop-by-hop headers, half-sent requests, idle connections).

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// One client connection.
pub struct RawConn {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

/// How a connection ended when the test waited on it.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The server closed (EOF or reset).
    Yes,
    /// Still open when the wait ended.
    No,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> Self {
        RawConn {
            stream: Box::new(tcp(addr).await),
            buf: Vec::new(),
        }
    }

    /// A TLS connection to `localhost` at `addr`, handshake done.
    pub async fn connect_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = TlsConnector::from(config).connect(name, tcp(addr).await);
        let stream = tokio::time::timeout(Duration::from_secs(5), tls)
            .await
            .expect("TLS handshake within 5 s")
            .expect("TLS handshake");
        RawConn {
            stream: Box::new(stream),
            buf: Vec::new(),
        }
    }

    /// TLS 1.3: new traffic keys for what we send next, and a request that the server update its
    /// own (a KeyUpdate message, sent with the next write).
    pub fn tls_key_update(&mut self) {
        let tls = (*self.stream)
            .as_any_mut()
            .downcast_mut::<TlsStream<TcpStream>>()
            .expect("a TLS connection");
        tls.get_mut().1.refresh_traffic_keys().expect("key update");
    }

    /// Ends our side: close_notify first over TLS, then FIN.
    pub async fn shutdown(&mut self) {
        self.stream.shutdown().await.expect("shutdown");
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// Sends `request` with `\n` line endings turned into CRLF.
    pub async fn send_text(&mut self, request: &str) {
        self.send(to_wire(request).as_bytes()).await;
    }

    /// Reads one response (Content-Length or chunked; else until EOF), failing after `wait`.
    pub async fn read_response_within(&mut self, wait: Duration) -> Option<RawResponse> {
        tokio::time::timeout(wait, self.read_response()).await.ok()
    }

    /// Reads one response, failing the test after 5 s.
    pub async fn response(&mut self) -> RawResponse {
        self.read_response_within(Duration::from_secs(5))
            .await
            .expect("a response within 5 s")
    }

    async fn read_response(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            assert!(self.fill().await > 0, "connection closed before a response");
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().expect("content-length");
            while self.buf.len() < len {
                assert!(self.fill().await > 0, "closed inside the body");
            }
            resp.body = self.buf.drain(..len).collect();
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|te| te.contains("chunked"))
        {
            resp.body = self.read_chunked().await;
        } else if status != 204 && status != 304 && !(100..200).contains(&status) {
            while self.fill().await > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }

    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                assert!(self.fill().await > 0, "closed inside a chunk size");
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                assert!(self.fill().await > 0, "closed inside a chunk");
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return body;
            }
        }
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(_) => 0,
        }
    }

    /// Waits up to `wait` for the server to close the connection. Bytes that arrive meanwhile
    /// are kept for a later `response()`.
    pub async fn closed_within(&mut self, wait: Duration) -> Closed {
        let until_eof = async { while self.fill().await > 0 {} };
        match tokio::time::timeout(wait, until_eof).await {
            Ok(()) => Closed::Yes,
            Err(_) => Closed::No,
        }
    }
}

async fn tcp(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect within 5 s")
        .expect("connect")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends one raw request on a fresh connection and reads the response.
pub async fn request(addr: SocketAddr, request: &str) -> RawResponse {
    let mut conn = RawConn::connect(addr).await;
    conn.send_text(request).await;
    conn.response().await
}

/// A request written with `\n` or `\r\n` line ends, as it goes on the wire (CRLF only).
pub fn to_wire(request: &str) -> String {
    request.replace("\r\n", "\n").replace('\n', "\r\n")
}
