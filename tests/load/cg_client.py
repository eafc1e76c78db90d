#!/usr/bin/env python3
"""Fixed-count driver for instruction counting under callgrind.

Warms up, zeroes the target's callgrind counters, sends exactly COUNT requests over CONNS
keep-alive connections, then dumps the counters. callgrind_control reaches a process that is
blocked in epoll_wait through vgdb, so nothing else runs between the zero and the dump.

usage: cg_client.py HOST PORT PATH TOKEN_FILE PID WARMUP COUNT CONNS
PID 0 skips the callgrind control (used by the strace syscall count).
Prints: COUNTED <requests>
"""
import subprocess
import sys
import threading

from httpclient import Conn, build_request

BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_events","arguments":{"calendar":"work","limit":10}}}'


def drive(conns, request, total):
    """Sends `total` requests spread over `conns`, each connection on its own thread."""
    errors = []

    def worker(conn, n):
        try:
            for _ in range(n):
                status, _ = conn.roundtrip(request)
                if status != 200:
                    raise RuntimeError(f"status {status}")
        except Exception as e:  # reported below, never swallowed
            errors.append(e)

    share = [total // len(conns) + (1 if i < total % len(conns) else 0) for i in range(len(conns))]
    threads = [threading.Thread(target=worker, args=(c, n)) for c, n in zip(conns, share)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"cg_client: {errors[0]!r}")


def control(flag, pid):
    if pid == "0":  # no callgrind target: the caller counts something else (strace)
        return
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def main():
    host, port, path, token_file, pid, warmup, count, nconns = sys.argv[1:9]
    port, warmup, count, nconns = int(port), int(warmup), int(count), int(nconns)
    token = open(token_file).read().strip()
    request = build_request(host, port, path, token, BODY)
    conns = [Conn(host, port, timeout=120) for _ in range(nconns)]
    drive(conns, request, warmup)
    control("-z", pid)
    drive(conns, request, count)
    control("-d", pid)
    for c in conns:
        c.close()
    print(f"COUNTED {count}")


if __name__ == "__main__":
    main()
