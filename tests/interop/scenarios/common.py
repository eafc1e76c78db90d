"""Shared helpers for the mcpgate interop scenarios (Python side).

Every scenario prints exactly one line per check: `PASS <name>` or `FAIL <name>: <why>`;
run.sh counts those lines. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
import traceback
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

ENV = os.environ


def env(name: str, default: str | None = None) -> str:
    value = ENV.get(name, default)
    if value is None:
        print(f"FAIL setup: environment variable {name} is not set", flush=True)
        sys.exit(2)
    return value


GW = env("GW_URL", "http://127.0.0.1:0")  # gateway public_url, no trailing slash
AS_JWT = env("AS_JWT_URL", "http://127.0.0.1:0")  # issuer of the JWT authorization server
AS_OPAQUE = env("AS_OPAQUE_URL", "http://127.0.0.1:0")  # issuer of the opaque-token authorization server
NOTES_UP = env("NOTES_UPSTREAM", "http://127.0.0.1:0/mcp")  # FastMCP, direct
EVERYTHING_UP = env("EVERYTHING_UPSTREAM", "http://127.0.0.1:0/mcp")  # server-everything, direct
GW_ADMIN = env("GW_ADMIN_URL", "http://127.0.0.1:0")  # the gateway's admin listener (metrics)
CLIENT_ID = ENV.get("CLIENT_ID", "interop-client")
CLIENT_SECRET = env("CLIENT_SECRET", "interop-client-secret-0123456789abcdef")
REDIRECT_URI = "http://localhost:33418/callback"  # never listened on: the driver stops at the redirect

NOTES = f"{GW}/notes/mcp"
EVERYTHING = f"{GW}/everything/mcp"
OPEN = f"{GW}/open/mcp"
ALL_NOTES_SCOPES = "mcp:tools notes:read notes:write notes:admin"


class Reporter:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.passed = 0
        self.failed = 0

    def ok(self, name: str, detail: str = "") -> None:
        self.passed += 1
        print(f"PASS {self.prefix}/{name}" + (f" ({detail})" if detail else ""), flush=True)

    def fail(self, name: str, why: str) -> None:
        self.failed += 1
        why = " ".join(str(why).split())
        print(f"FAIL {self.prefix}/{name}: {why[:1500]}", flush=True)

    def check(self, name: str, cond: bool, why="", detail="") -> bool:
        """why/detail may be callables, evaluated only when needed."""
        if cond:
            self.ok(name, detail() if callable(detail) else detail)
        else:
            self.fail(name, (why() if callable(why) else why) or "condition false")
        return bool(cond)


async def run_checks(rep: Reporter, checks) -> None:
    """Run async check functions; an exception inside one is that check's FAIL, not a crash."""
    for fn in checks:
        try:
            await fn(rep)
        except Exception as exc:  # noqa: BLE001
            tb = traceback.format_exception(exc)
            print("".join(tb), file=sys.stderr, flush=True)
            rep.fail(fn.__name__.removeprefix("check_"), f"{type(exc).__name__}: {describe(exc)}")


def describe(exc: BaseException) -> str:
    """Flatten exception groups (anyio task groups wrap everything) into one readable string."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- tokens


def client_credentials(issuer: str, resource: str | None, scope: str | None, client_id: str = CLIENT_ID) -> dict:
    data = {"grant_type": "client_credentials"}
    if resource:
        data["resource"] = resource
    if scope:
        data["scope"] = scope
    r = httpx.post(f"{issuer}/token", data=data, auth=(client_id, CLIENT_SECRET), timeout=10)
    if r.status_code != 200:
        raise RuntimeError(f"token endpoint {r.status_code}: {r.text}")
    remember_token(r.json()["access_token"])
    return r.json()


def remember_token(tok: str) -> None:
    """run.sh greps the gateway's logs for every token handed out (none may appear there)."""
    path = ENV.get("INTEROP_TOKENS_FILE")
    if path:
        with open(path, "a") as f:
            f.write(tok + "\n")


def token(resource: str, scope: str = ALL_NOTES_SCOPES, issuer: str = AS_JWT) -> str:
    return client_credentials(issuer, resource, scope)["access_token"]


def jwt_parts(tok: str) -> tuple[dict, dict]:
    def dec(part: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    h, p, _ = tok.split(".")
    return dec(h), dec(p)


# ---------------------------------------------------------------- HTTP helpers


def www_authenticate(resp: httpx.Response) -> dict[str, str]:
    """Parse `WWW-Authenticate: Bearer k="v", ...` into a dict (scheme under key '')."""
    raw = resp.headers.get("www-authenticate", "")
    out: dict[str, str] = {}
    m = re.match(r"\s*(\S+)", raw)
    if m:
        out[""] = m.group(1)
    for k, v1, v2 in re.findall(r'([A-Za-z_][A-Za-z0-9_\-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', raw):
        out[k] = v1 if v1 else v2
    return out


INIT_BODY = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "mcpgate-interop", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def raw_post(url: str, body: Any, bearer: str | None = None, extra: dict | None = None) -> httpx.Response:
    headers = dict(MCP_HEADERS)
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    if extra:
        headers.update(extra)
    return httpx.post(url, json=body, headers=headers, timeout=15)


def exchange(resp: httpx.Response) -> str:
    """Render an HTTP exchange for a FAIL line / report."""
    req = resp.request
    hdrs = {k: v for k, v in req.headers.items() if k.lower() != "authorization"}
    if "authorization" in req.headers:
        hdrs["authorization"] = "Bearer <redacted>"
    body = resp.text[:400] if resp.content else ""
    rh = {k: v for k, v in resp.headers.items() if k.lower() in ("www-authenticate", "content-type", "mcp-session-id")}
    return f"{req.method} {req.url} {hdrs} -> {resp.status_code} {rh} {body!r}"


# ---------------------------------------------------------------- MCP client


@asynccontextmanager
async def mcp_session(url: str, bearer: str | None = None, auth: httpx.Auth | None = None):
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
    async with streamablehttp_client(url, headers=headers, auth=auth, timeout=20, sse_read_timeout=60) as (r, w, _):
        async with ClientSession(r, w) as session:
            yield session


def metric(name: str, **labels: str) -> float:
    """The sum of the gateway's series of `name` that carry every given label."""
    text = httpx.get(f"{GW_ADMIN}/metrics", timeout=10).text
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, _, value = line.rpartition(" ")
            if all(w in series for w in want):
                total += float(value)
    return total


# ---------------------------------------------------------------- headless browser for oidc-provider dev interactions


async def drive_authorization(auth_url: str, login: str = "alice", redirect_prefix: str = REDIRECT_URI) -> dict:
    """Follow an authorization request through oidc-provider's devInteractions login and consent
    forms, like a user in a browser would, and return the query of the final redirect to the client
    (code, state, iss) without requesting the redirect_uri itself."""
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as c:
        method, url, data = "GET", auth_url, None
        for _ in range(25):
            r = await (c.get(url) if method == "GET" else c.post(url, data=data))
            if r.status_code in (301, 302, 303, 307, 308):
                loc = urljoin(url, r.headers["location"])
                if loc.startswith(redirect_prefix):
                    q = {k: v[0] for k, v in parse_qs(urlparse(loc).query).items()}
                    if "error" in q:
                        raise RuntimeError(f"authorization error: {q}")
                    return q
                method, url, data = "GET", loc, None
                continue
            if r.status_code == 200 and "<form" in r.text:
                action = re.search(r'<form[^>]*action="([^"]+)"', r.text)
                prompt = re.search(r'name="prompt" value="([^"]+)"', r.text)
                if not action or not prompt:
                    raise RuntimeError(f"unexpected form at {url}: {r.text[:300]}")
                data = {"prompt": prompt.group(1)}
                if prompt.group(1) == "login":
                    data.update(login=login, password="any-password")
                method, url = "POST", urljoin(url, action.group(1).replace("&amp;", "&"))
                continue
            raise RuntimeError(f"unexpected {r.status_code} at {url}: {r.text[:500]}")
    raise RuntimeError("too many redirects in authorization flow")


def now() -> float:
    return time.monotonic()


async def slow_count_timed(session: ClientSession) -> tuple[list[float], float, float, Any]:
    """Calls the notes upstream's slow_count (5 steps, 0.4 s apart): when each progress notification
    arrived, when the call began and ended, and its result."""
    stamps: list[float] = []

    async def progress(p, total, msg):
        stamps.append(now())

    t0 = now()
    res = await session.call_tool("slow_count", {"steps": 5, "interval": 0.4}, progress_callback=progress)
    return stamps, t0, now(), res
