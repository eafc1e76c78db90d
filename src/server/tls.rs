//! TLS on one accepted connection, over rustls's unbuffered API so that an idle connection holds
//! no buffer.
//!
//! rustls's buffered `ServerConnection` keeps a 4 KiB receive buffer for the connection's whole
//! life, even while it waits for the next request: 40 MiB for 10,000 idle HTTPS connections.
//! Here the connection's bytes live in buffers of ours, each released once it is empty and the
//! connection waits for its peer (see [`TlsConn::release_buffers`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much room a read from the socket asks for: one full TLS record and its header.
const READ_SIZE: usize = 16 * 1024 + 5;
/// Unprocessed TLS bytes allowed: a 64 KiB handshake message (rustls's own limit) split over
/// records, with their headers. A peer sending more is in error.
const MAX_INCOMING: usize = 72 * 1024;
/// Encrypted bytes queued for the socket before a write, or a read that would add more, waits
/// for them to be sent.
const MAX_OUTGOING: usize = 64 * 1024;
/// Plaintext taken by one write: a few full records.
const MAX_WRITE: usize = 64 * 1024;

/// One server-side TLS connection over `IO`.
pub(super) struct TlsConn<IO> {
    io: IO,
    tls: UnbufferedServerConnection,
    /// Bytes read from the socket that rustls has not consumed yet.
    incoming: BytesMut,
    /// Decrypted bytes not yet read by the caller.
    plain: BytesMut,
    /// Encrypted bytes not yet written to the socket.
    outgoing: BytesMut,
    /// The peer ended its side (close_notify or end of stream): reads return end-of-file.
    read_done: bool,
    close_sent: bool,
}

/// What one call into rustls led to.
enum Step {
    /// Progress that needs no IO: call again.
    Again,
    /// Nothing left to process, and rustls may send data (which in TLS 1.3 starts before the
    /// handshake ends). More bytes from the peer are needed to go on.
    Idle,
    /// The handshake needs more bytes from the peer.
    NeedRead,
    /// The plaintext given was encrypted; how much of it.
    Wrote(usize),
    /// Both sides have closed.
    Closed,
}

/// What to encrypt once rustls allows it.
enum Outbound<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsConn<IO> {
    /// Runs the server side of the handshake; on success the connection is ready for data.
    pub(super) async fn accept(config: Arc<rustls::ServerConfig>, io: IO) -> io::Result<Self> {
        let tls = UnbufferedServerConnection::new(config).map_err(invalid)?;
        let mut conn = TlsConn {
            io,
            tls,
            incoming: BytesMut::new(),
            plain: BytesMut::new(),
            outgoing: BytesMut::new(),
            read_done: false,
            close_sent: false,
        };
        std::future::poll_fn(|cx| conn.poll_handshake(cx)).await?;
        Ok(conn)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.step(cx, Outbound::Nothing)? {
                Step::Again => {}
                // TLS 1.3 lets the server send before the client's Finished: not done yet.
                Step::Idle if !self.tls.is_handshaking() => return self.poll_send(cx),
                Step::Idle | Step::NeedRead => {
                    ready!(self.poll_send(cx))?;
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Step::Wrote(_) | Step::Closed => {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
                }
            }
        }
    }

    /// Processes what rustls has (records received, messages to send), encrypting `send` once
    /// it may. Decrypted data goes to `plain`, encoded records to `outgoing`.
    fn step(&mut self, cx: &mut Context<'_>, send: Outbound<'_>) -> io::Result<Step> {
        let UnbufferedStatus { mut discard, state } =
            self.tls.process_tls_records(&mut self.incoming[..]);
        let step = match state {
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                let mut read = Ok(Step::Again);
                while let Some(record) = records.next_record() {
                    match record {
                        Ok(record) => {
                            self.plain.extend_from_slice(record.payload);
                            discard += record.discard;
                        }
                        Err(e) => {
                            read = Err(invalid(e));
                            break;
                        }
                    }
                }
                read
            }
            Ok(ConnectionState::EncodeTlsData(mut data)) => append(&mut self.outgoing, 0, |out| {
                data.encode(out).map_err(encode_error)
            })
            .map(|()| Step::Again),
            // Queued in `outgoing`, which goes out in order before anything written later.
            Ok(ConnectionState::TransmitTlsData(data)) => {
                data.done();
                Ok(Step::Again)
            }
            Ok(ConnectionState::BlockedHandshake) => Ok(Step::NeedRead),
            Ok(ConnectionState::PeerClosed) => {
                self.read_done = true;
                Ok(Step::Again)
            }
            Ok(ConnectionState::Closed) => {
                self.read_done = true;
                Ok(Step::Closed)
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match send {
                Outbound::Nothing => Ok(Step::Idle),
                Outbound::Data(data) => append(&mut self.outgoing, data.len() + 256, |out| {
                    traffic.encrypt(data, out).map_err(encrypt_error)
                })
                .map(|()| Step::Wrote(data.len())),
                Outbound::CloseNotify => append(&mut self.outgoing, 64, |out| {
                    traffic.queue_close_notify(out).map_err(encrypt_error)
                })
                .map(|()| Step::Wrote(0)),
            },
            // Early data is off (rustls's default), so none is ever accepted.
            Ok(_) => Err(invalid("unexpected TLS state")),
            Err(e) => Err(invalid(e)),
        };
        self.incoming.advance(discard);
        if step.is_err() {
            self.send_alert(cx);
        }
        step
    }

    /// After an error rustls may have queued an alert for the peer; it goes out if the socket
    /// takes it now.
    fn send_alert(&mut self, cx: &mut Context<'_>) {
        for _ in 0..4 {
            let UnbufferedStatus { state, .. } =
                self.tls.process_tls_records(&mut self.incoming[..]);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    let encoded = append(&mut self.outgoing, 0, |out| {
                        data.encode(out).map_err(encode_error)
                    });
                    if encoded.is_err() {
                        break;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(data)) => data.done(),
                _ => break,
            }
        }
        let _ = self.poll_send(cx);
    }

    /// Writes `outgoing` to the socket, all of it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Reads from the socket into `incoming`; 0 is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(invalid("TLS data exceeds the receive limit")));
        }
        self.incoming.reserve(READ_SIZE);
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.incoming);
        if read.is_pending() {
            self.release_buffers();
        }
        read
    }

    /// Gives back the memory of the buffers that are empty: called whenever the connection
    /// waits for its peer, so that an idle connection (HTTP/2's too, which never parks) holds
    /// none. Allocating them again for the next request costs far less than its TLS record.
    pub(super) fn release_buffers(&mut self) {
        for buf in [&mut self.incoming, &mut self.plain, &mut self.outgoing] {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
        }
    }

    /// Decrypted bytes are waiting, or bytes rustls has yet to look at, or the peer has closed.
    pub(super) fn has_input(&self) -> bool {
        !self.plain.is_empty() || !self.incoming.is_empty() || self.read_done
    }

    pub(super) fn io(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.plain.is_empty() && !this.read_done {
            match this.step(cx, Outbound::Nothing)? {
                // Closed: `step` has set `read_done`.
                Step::Again | Step::Closed => {}
                Step::Idle | Step::NeedRead | Step::Wrote(_) => {
                    // What rustls queued while reading (session tickets, an alert) goes out first.
                    // A full socket holds up reading only once MAX_OUTGOING is queued, so a peer
                    // that sends without reading cannot grow the queue. (rustls itself keeps a
                    // requested key update for our next write: see the key-update flood test.)
                    if this.outgoing.len() >= MAX_OUTGOING {
                        ready!(this.poll_send(cx))?;
                    } else if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                    if ready!(this.poll_fill(cx))? == 0 {
                        // The stream ended without close_notify: an end-of-file unless a record
                        // was cut short.
                        if !this.incoming.is_empty() {
                            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                        }
                        this.read_done = true;
                    }
                }
            }
        }
        let n = this.plain.len().min(buf.remaining());
        buf.put_slice(&this.plain[..n]);
        this.plain.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.outgoing.len() >= MAX_OUTGOING {
            ready!(this.poll_send(cx))?;
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        let had_plain = this.plain.len();
        let written = loop {
            match this.step(cx, Outbound::Data(data))? {
                Step::Wrote(n) => break n,
                Step::Again => {}
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Step::Idle | Step::NeedRead => return Poll::Ready(Err(invalid("handshake"))),
            }
        };
        // Records read here (a pipelined request) wait in `plain`: the reader must look again.
        if this.plain.len() > had_plain {
            cx.waker().wake_by_ref();
        }
        // Sent now if the socket takes it; otherwise on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(written))
    }

    /// Gathered into one plaintext, so a frame's head and payload travel in one record.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut parts = bufs.iter().filter(|b| !b.is_empty());
        let (Some(first), None) = (parts.next(), parts.next()) else {
            let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE);
            let mut gathered = Vec::with_capacity(total);
            for buf in bufs {
                let room = total - gathered.len();
                gathered.extend_from_slice(&buf[..buf.len().min(room)]);
            }
            return self.poll_write(cx, &gathered);
        };
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            // Until rustls takes the alert; a closed or failed connection has nothing to send.
            while let Ok(Step::Again) = this.step(cx, Outbound::CloseNotify) {}
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Encodes into the end of `buf` with `f`, which reports the room it needs when short of it.
fn append(
    buf: &mut BytesMut,
    guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncodeFailure>,
) -> io::Result<()> {
    let start = buf.len();
    let mut room = guess;
    loop {
        buf.resize(start + room, 0);
        match f(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                return Ok(());
            }
            Err(EncodeFailure::Room(needed)) if needed > room => room = needed,
            Err(failure) => {
                buf.truncate(start);
                let reason = match failure {
                    EncodeFailure::Room(needed) => format!("no room for {needed} bytes"),
                    EncodeFailure::Other(reason) => reason,
                };
                return Err(invalid(format!("cannot encode a TLS record: {reason}")));
            }
        }
    }
}

enum EncodeFailure {
    Room(usize),
    Other(String),
}

fn encode_error(e: EncodeError) -> EncodeFailure {
    match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            EncodeFailure::Room(required_size)
        }
        other => EncodeFailure::Other(other.to_string()),
    }
}

fn encrypt_error(e: EncryptError) -> EncodeFailure {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            EncodeFailure::Room(required_size)
        }
        other => EncodeFailure::Other(other.to_string()),
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Rounds of one byte of data followed by key updates: rustls refuses a 33rd key update
    /// request without data in between (BoringSSL's limit).
    const ROUNDS: usize = 300;
    const UPDATES_PER_ROUND: usize = 31;

    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A flood of TLS 1.3 key updates, each asking for ours, from a peer that does not read:
    /// rustls keeps one answer pending until we next write, so nothing piles up for the peer,
    /// and the keys of both sides stay in step.
    #[tokio::test]
    async fn key_update_flood_queues_nothing_and_keeps_keys_in_step() {
        let (server_config, client_config) = configs();
        let (client_io, server_io) = tokio::io::duplex(4096);
        let client = tokio::spawn(async move {
            let connector = tokio_rustls::TlsConnector::from(client_config);
            let name = ServerName::try_from("localhost").expect("name");
            let tls = connector.connect(name, client_io).await.expect("handshake");
            // From here the client writes its records itself, without reading until the end.
            let (mut io, mut conn) = tls.into_inner();
            for _ in 0..ROUNDS {
                std::io::Write::write_all(&mut conn.writer(), b"x").expect("data");
                for _ in 0..UPDATES_PER_ROUND {
                    conn.refresh_traffic_keys().expect("key update");
                }
                send(&mut conn, &mut io).await;
            }
            let answer = receive(&mut conn, &mut io, 2).await;
            conn.send_close_notify();
            send(&mut conn, &mut io).await;
            answer
        });

        let mut server = TlsConn::accept(server_config, server_io)
            .await
            .expect("accept");
        let (mut received, mut most_queued) = (0, 0);
        let mut buf = [0u8; 64];
        while received < ROUNDS {
            let n = server.read(&mut buf).await.expect("server read");
            assert!(n > 0, "the stream ended early");
            received += n;
            most_queued = most_queued.max(server.outgoing.len());
        }
        server.write_all(b"ok").await.expect("server write");
        server.flush().await.expect("flush");
        assert_eq!(server.read(&mut buf).await.expect("close_notify"), 0);
        assert_eq!(client.await.expect("client"), b"ok");
        assert!(
            most_queued <= MAX_OUTGOING,
            "{most_queued} bytes queued for a peer that does not read"
        );
    }

    async fn send(conn: &mut rustls::ClientConnection, to: &mut (impl AsyncWrite + Unpin)) {
        let mut records = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut records).expect("encode");
        }
        to.write_all(&records).await.expect("send");
    }

    /// Reads and decrypts until `len` bytes of data have arrived.
    async fn receive(
        conn: &mut rustls::ClientConnection,
        from: &mut (impl AsyncRead + Unpin),
        len: usize,
    ) -> Vec<u8> {
        let mut data = Vec::new();
        let mut wire = vec![0u8; 16 * 1024];
        while data.len() < len {
            let n = from.read(&mut wire).await.expect("receive");
            assert!(n > 0, "the server closed before answering");
            conn.read_tls(&mut &wire[..n]).expect("read_tls");
            conn.process_new_packets().expect("decrypt");
            let _ = std::io::Read::read_to_end(&mut conn.reader(), &mut data);
        }
        data
    }
}
