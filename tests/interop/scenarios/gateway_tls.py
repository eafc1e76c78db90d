"""mcpgate terminating TLS itself, driven by OpenSSL clients: Python's ssl module and the MCP Python
SDK over httpx, with HTTP/1.1 and with HTTP/2.

usage: gateway_tls.py CONFIG LOG_DIR
Starts a second mcpgate from run.sh's CONFIG with `[server.tls]` added (a fresh self-signed
certificate for 127.0.0.1), on ports of its own, and stops it at the end; its log and audit log go
to LOG_DIR/mcpgate-tls.log and LOG_DIR/audit-tls.jsonl, which run.sh searches for secrets too. Its public_url stays the plain gateway's, so the authorization server's
tokens (aud = that URL) are valid here too: these checks are about the transport.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common import (
    ALL_NOTES_SCOPES,
    NOTES,
    ClientSession,
    Reporter,
    env,
    run_checks,
    slow_count_timed,
    streamablehttp_client,
    token,
)

MCPGATE_BIN = env("MCPGATE_BIN")
CONFIG, LOG_DIR = Path(sys.argv[1]), Path(sys.argv[2])
WORK = Path(tempfile.mkdtemp(prefix="mcpgate-tls-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT, ADMIN = free_port(), free_port()
BASE = f"https://127.0.0.1:{PORT}"


def self_signed() -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = WORK / "cert.pem", WORK / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


CERT, KEY = self_signed()


def tls_config() -> Path:
    """run.sh's config, on this instance's ports and files, with [server.tls]."""
    text = CONFIG.read_text()
    listens = iter([f'listen = "127.0.0.1:{PORT}"', f'listen = "127.0.0.1:{ADMIN}"'])
    text = re.sub(r'^listen = ".*"$', lambda _: next(listens), text, count=2, flags=re.M)
    text = re.sub(r'^state_dir = ".*"$', f'state_dir = "{WORK / "state"}"', text, count=1, flags=re.M)
    text = re.sub(r'^file = ".*"$', f'file = "{LOG_DIR / "audit-tls.jsonl"}"', text, count=1, flags=re.M)
    text += f'\n[server.tls]\ncert_file = "{CERT}"\nkey_file = "{KEY}"\n'
    path = WORK / "gateway-tls.toml"
    path.write_text(text)
    return path


def trusting(alpn: list[str], max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(CERT))
    ctx.set_alpn_protocols(alpn)
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def handshake(ctx: ssl.SSLContext) -> tuple[str | None, str | None]:
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.selected_alpn_protocol(), tls.version()


def client_factory(http2: bool, versions: list[str]):
    """An httpx client factory for the SDK: trusts the test certificate, records each response's
    HTTP version."""

    def factory(headers=None, timeout=None, auth=None) -> httpx.AsyncClient:
        async def seen(resp: httpx.Response) -> None:
            versions.append(resp.http_version)

        return httpx.AsyncClient(
            verify=trusting(["h2", "http/1.1"] if http2 else ["http/1.1"]),
            http2=http2,
            http1=not http2,
            headers=headers,
            timeout=timeout or httpx.Timeout(30, read=60),
            auth=auth,
            event_hooks={"response": [seen]},
        )

    return factory


def sdk_session(url: str, bearer: str | None, http2: bool, versions: list[str]):
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
    return streamablehttp_client(url, headers=headers, httpx_client_factory=client_factory(http2, versions))


def proto(http2: bool) -> str:
    return "h2" if http2 else "http1"


# ---------------------------------------------------------------- checks


async def check_handshakes(rep: Reporter):
    for alpn, expected in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        got, version = handshake(trusting(alpn))
        rep.check(f"alpn_{expected}", got == expected, f"offered {alpn}, got {got!r} over {version}", str(version))
    got, version = handshake(trusting(["http/1.1"], ssl.TLSVersion.TLSv1_2))
    rep.check("tls12_client", version == "TLSv1.2" and got == "http/1.1", f"{version}, ALPN {got!r}", "TLSv1.2")


async def check_challenge_over_https(rep: Reporter):
    for http2 in (False, True):
        async with httpx.AsyncClient(verify=trusting(["h2", "http/1.1"]), http2=http2) as c:
            r = await c.post(f"{BASE}/notes/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        challenge = r.headers.get("www-authenticate", "")
        rep.check(
            f"challenge_{proto(http2)}",
            r.status_code == 401 and "resource_metadata=" in challenge and r.http_version == ("HTTP/2" if http2 else "HTTP/1.1"),
            f"{r.http_version} {r.status_code} {challenge!r}",
            r.http_version,
        )


async def check_sdk_open_route(rep: Reporter):
    for http2 in (False, True):
        versions: list[str] = []
        async with sdk_session(f"{BASE}/open/mcp", None, http2, versions) as (r, w, _):
            async with ClientSession(r, w) as s:
                await s.initialize()
                tools = {t.name for t in (await s.list_tools()).tools}
                res = await s.call_tool("echo", {"message": "over TLS"})
        text = " ".join(getattr(c, "text", "") for c in res.content)
        want = "HTTP/2" if http2 else "HTTP/1.1"
        rep.check(
            f"sdk_open_route_{proto(http2)}",
            "echo" in tools and "over TLS" in text and not res.isError and set(versions) == {want},
            f"tools {sorted(tools)[:5]}…, echo {text!r}, versions {sorted(set(versions))}",
            f"{len(tools)} tools, {len(versions)} responses over {want}",
        )


async def check_sdk_large_notes_and_streaming(rep: Reporter):
    """Bodies of many TLS records both ways, and progress events streamed through TLS as they come."""
    tok = token(NOTES, ALL_NOTES_SCOPES)
    big = "".join(chr(ord("a") + i % 26) for i in range(300_000))
    for http2 in (False, True):
        versions: list[str] = []
        async with sdk_session(f"{BASE}/notes/mcp", tok, http2, versions) as (r, w, _):
            async with ClientSession(r, w) as s:
                await s.initialize()
                await s.call_tool("write_note", {"name": f"big-{proto(http2)}", "text": big})
                back = await s.call_tool("read_note", {"name": f"big-{proto(http2)}"})
                stamps, t0, t1, counted = await slow_count_timed(s)
        text = "".join(getattr(c, "text", "") for c in back.content)
        rep.check(f"large_note_roundtrip_{proto(http2)}", text == big, f"read back {len(text)} chars, wrote {len(big)}", f"{len(big)} chars")
        rep.check(
            f"progress_streamed_{proto(http2)}",
            len(stamps) == 5 and not counted.isError and stamps[0] < t1 - 1.0,
            f"{len(stamps)} progress notifications, first after {stamps[0] - t0 if stamps else 'n/a'}s, result after {t1 - t0:.2f}s",
            f"first after {stamps[0] - t0:.2f}s of {t1 - t0:.2f}s" if stamps else "",
        )


# ---------------------------------------------------------------- gateway process


def wait_ready(proc: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{ADMIN}/readyz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


async def main() -> int:
    rep = Reporter("tls")
    log = open(LOG_DIR / "mcpgate-tls.log", "wb")
    proc = subprocess.Popen([MCPGATE_BIN, "--config", str(tls_config()), "--log-format", "json"], stdout=log, stderr=log)
    try:
        if not wait_ready(proc, 30):
            rep.fail("gateway_start", f"not ready within 30 s (exit {proc.poll()}); see mcpgate-tls.log")
            return 1
        await run_checks(rep, [check_handshakes, check_challenge_over_https, check_sdk_open_route, check_sdk_large_notes_and_streaming])
        if proc.poll() is not None:
            rep.fail("gateway_alive", f"the TLS gateway exited ({proc.returncode}) during the checks")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
