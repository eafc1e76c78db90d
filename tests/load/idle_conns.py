#!/usr/bin/env python3
"""Opens many keep-alive connections, sends one authenticated request on each, then holds them idle.

Reports the server's VmRSS (from /proc/PID/status) before, while all connections are idle, and
how many connections the server still kept open at the end of the hold. Bounded: every phase has
a deadline, and the script exits after HOLD seconds.

usage: idle_conns.py [--tls=h1|--tls=h2] HOST PORT PATH TOKEN_FILE SERVER_PID COUNT HOLD_SECONDS [METRICS_URL]
With --tls, each connection is HTTPS (the certificate is not checked), HTTP/1.1 or HTTP/2 as named,
chosen by ALPN; HTTP/2 needs the Python package `h2`. TLS connections open one at a time.
Prints: IDLE opened=<n> rss_before_kib=<k> rss_idle_kib=<k> hwm_kib=<k> server_fds_at_sample=<n>
        open_after_hold=<n> rss_after_hold_kib=<k> [parked_at_sample=<n>]
With METRICS_URL (mcpgate's admin /metrics), parked_at_sample is mcpgate_parked_connections read
right after the RSS sample: how many of the connections held no hyper state at that moment.
"""
import os
import selectors
import socket
import ssl
import sys
import time
import urllib.request

from httpclient import build_request

BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_events","arguments":{"calendar":"work","limit":10}}}'
BATCH = 500  # connections in flight at once while opening


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def open_batch(host, port, request, n, deadline):
    """Connects n sockets, sends one request on each, waits for each full response header+body."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=10)
        s.setblocking(False)
        s.sendall(request)
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
    pending = len(socks)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit("idle_conns: timed out waiting for responses")
        for key, _ in sel.select(timeout=1):
            buf = key.data
            chunk = key.fileobj.recv(65536)
            if not chunk:
                raise SystemExit("idle_conns: server closed a connection while opening")
            buf += chunk
            head, sep, body = bytes(buf).partition(b"\r\n\r\n")
            if not sep:
                continue
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"idle_conns: unexpected response {head[:40]!r}")
            length = next(
                (int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")),
                None,
            )
            if length is None or len(body) >= length:
                sel.unregister(key.fileobj)
                pending -= 1
    sel.close()
    return socks


def tls_context(alpn):
    """Made once per run: a context loads the system's CA store, which costs more than a handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


def open_tls(ctx, alpn, host, port, path, token, deadline):
    """One HTTPS connection with one answered request on it, left open."""
    raw = socket.create_connection((host, port), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=host)
    if tls.selected_alpn_protocol() != alpn:
        raise SystemExit(f"idle_conns: the server chose ALPN {tls.selected_alpn_protocol()!r}, not {alpn}")
    if alpn == "h2":
        h2_request(tls, host, port, path, token)
    else:
        h1_request(tls, build_request(host, port, path, token, BODY))
    if time.monotonic() > deadline:
        raise SystemExit("idle_conns: timed out opening TLS connections")
    # The TLS layer stays in place: a close_notify would end the connection.
    return tls


def h1_request(tls, request):
    tls.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += recv_some(tls)
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"idle_conns: unexpected response {head[:40]!r}")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += recv_some(tls)


def h2_request(tls, host, port, path, token):
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [
        (":method", "POST"), (":path", path), (":scheme", "https"), (":authority", f"{host}:{port}"),
        ("authorization", f"Bearer {token}"), ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ])
    conn.send_data(1, BODY, end_stream=True)
    tls.sendall(conn.data_to_send())
    ended = False
    while not ended:
        for event in conn.receive_data(recv_some(tls)):
            if isinstance(event, h2.events.ResponseReceived) and dict(event.headers)[b":status"] != b"200":
                raise SystemExit(f"idle_conns: HTTP/2 status {dict(event.headers)[b':status']!r}")
            ended = ended or isinstance(event, h2.events.StreamEnded)
        tls.sendall(conn.data_to_send())


def recv_some(sock):
    chunk = sock.recv(65536)
    if not chunk:
        raise SystemExit("idle_conns: server closed a connection while opening")
    return chunk


def still_open(socks):
    """A socket the server closed reads EOF (or an error) without blocking."""
    alive = 0
    for s in socks:
        # TLS sockets are checked on the TCP socket underneath: peeking through TLS would
        # read records (a session ticket) as data.
        sock = socket.socket(fileno=os.dup(s.fileno())) if isinstance(s, ssl.SSLSocket) else s
        sock.setblocking(False)
        try:
            if sock.recv(1, socket.MSG_PEEK) == b"":
                continue
            alive += 1  # unexpected data (for TLS: a ticket not read yet), but still open
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
        finally:
            if sock is not s:
                sock.close()
    return alive


def parked(metrics_url):
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("mcpgate_parked_connections "):
                return int(float(line.split()[1]))
    raise SystemExit("idle_conns: no mcpgate_parked_connections in the metrics")


def main():
    args = sys.argv[1:]
    tls = args.pop(0).split("=", 1)[1] if args[0].startswith("--tls=") else None
    host, port, path, token_file, pid, count, hold = args[:7]
    metrics_url = args[7] if len(args) > 7 else None
    port, pid, count, hold = int(port), int(pid), int(count), float(hold)
    token = open(token_file).read().strip()
    request = build_request(host, port, path, token, BODY)
    rss_before = status_kib(pid, "VmRSS")
    deadline = time.monotonic() + 120
    socks = []
    if tls:
        alpn = {"h1": "http/1.1", "h2": "h2"}[tls]
        ctx = tls_context(alpn)
        socks = [open_tls(ctx, alpn, host, port, path, token, deadline + 180) for _ in range(count)]
    while len(socks) < count:
        socks += open_batch(host, port, request, min(BATCH, count - len(socks)), deadline)
    time.sleep(2)  # let the server settle: responses flushed, per-connection state idle
    rss_idle = status_kib(pid, "VmRSS")
    server_fds = len(os.listdir(f"/proc/{pid}/fd"))
    parked_now = f" parked_at_sample={parked(metrics_url)}" if metrics_url else ""
    time.sleep(max(0.0, hold - 2))
    alive = still_open(socks)
    hwm = status_kib(pid, "VmHWM")
    rss_after = status_kib(pid, "VmRSS")
    for s in socks:
        s.close()
    print(f"IDLE opened={len(socks)} rss_before_kib={rss_before} rss_idle_kib={rss_idle} "
          f"hwm_kib={hwm} server_fds_at_sample={server_fds} open_after_hold={alive} "
          f"rss_after_hold_kib={rss_after}{parked_now}")


if __name__ == "__main__":
    main()
