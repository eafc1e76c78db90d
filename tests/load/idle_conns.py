#!/usr/bin/env python3
"""Opens many keep-alive connections, sends one authenticated request on each, then holds them idle.

Reports the server's VmRSS (from /proc/PID/status) before, while all connections are idle, and
how many connections the server still kept open at the end of the hold. Bounded: every phase has
a deadline, and the script exits after HOLD seconds.

usage: idle_conns.py HOST PORT PATH TOKEN_FILE SERVER_PID COUNT HOLD_SECONDS [METRICS_URL]
Prints: IDLE opened=<n> rss_before_kib=<k> rss_idle_kib=<k> hwm_kib=<k> server_fds_at_sample=<n>
        open_after_hold=<n> rss_after_hold_kib=<k> [parked_at_sample=<n>]
With METRICS_URL (mcpgate's admin /metrics), parked_at_sample is mcpgate_parked_connections read
right after the RSS sample: how many of the connections held no hyper state at that moment.
"""
import os
import selectors
import socket
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


def still_open(socks):
    """A socket the server closed reads EOF (or an error) without blocking."""
    alive = 0
    for s in socks:
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                continue
            alive += 1  # unexpected data, but still open
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def parked(metrics_url):
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("mcpgate_parked_connections "):
                return int(float(line.split()[1]))
    raise SystemExit("idle_conns: no mcpgate_parked_connections in the metrics")


def main():
    host, port, path, token_file, pid, count, hold = sys.argv[1:8]
    metrics_url = sys.argv[8] if len(sys.argv) > 8 else None
    port, pid, count, hold = int(port), int(pid), int(count), float(hold)
    token = open(token_file).read().strip()
    request = build_request(host, port, path, token, BODY)
    rss_before = status_kib(pid, "VmRSS")
    deadline = time.monotonic() + 120
    socks = []
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
