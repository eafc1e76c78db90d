"""mcpgate interop scenarios driven by the official MCP Python SDK (PyPI `mcp`) and plain httpx.
Every request goes through mcpgate (GW_URL); the upstreams are only contacted directly to compare
results or to prove that a refused call never reached them. Prefix: py/.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import parse_qs, urlparse

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from common import (
    ALL_NOTES_SCOPES,
    AS_JWT,
    AS_OPAQUE,
    CLIENT_ID,
    CLIENT_SECRET,
    EVERYTHING,
    EVERYTHING_UP,
    GW,
    INIT_BODY,
    NOTES,
    NOTES_UP,
    REDIRECT_URI,
    Reporter,
    client_credentials,
    drive_authorization,
    exchange,
    jwt_parts,
    mcp_session,
    metric,
    now,
    raw_post,
    remember_token,
    run_checks,
    slow_count_timed,
    token,
    www_authenticate,
)


def b64json(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def hs256(header: dict, claims: dict, key: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def dump(model) -> str:
    return json.dumps(model.model_dump(mode="json", exclude_none=True), sort_keys=True)


# ---------------------------------------------------------------- discovery


async def check_discovery(rep: Reporter):
    for name, url in (("notes", NOTES), ("everything", EVERYTHING)):
        r = raw_post(url, INIT_BODY)
        ch = www_authenticate(r)
        if not rep.check(
            f"discovery_401_challenge_{name}",
            r.status_code == 401 and ch.get("").lower() == "bearer" and "resource_metadata" in ch and "error" not in ch,
            exchange(r),
            r.headers.get("www-authenticate", ""),
        ):
            continue
        prm_r = httpx.get(ch["resource_metadata"], timeout=10)
        prm = prm_r.json() if prm_r.status_code == 200 else {}
        rep.check(
            f"discovery_prm_{name}",
            prm.get("resource") == url and AS_JWT in prm.get("authorization_servers", []),
            f"GET {ch['resource_metadata']} -> {prm_r.status_code} {prm_r.text[:400]}",
            f"resource={prm.get('resource')} authorization_servers={prm.get('authorization_servers')}",
        )
        path_inserted = f"{GW}/.well-known/oauth-protected-resource{urlparse(url).path}"
        r2 = httpx.get(path_inserted, timeout=10)
        rep.check(
            f"discovery_prm_path_inserted_{name}",
            r2.status_code == 200 and r2.json().get("resource") == url,
            f"GET {path_inserted} -> {r2.status_code} {r2.text[:300]}",
        )
        if name == "notes":
            issuer = prm.get("authorization_servers", [None])[0]
            asm = httpx.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10).json()
            rep.check(
                "discovery_as_metadata",
                asm.get("issuer") == issuer == AS_JWT and "registration_endpoint" in asm,
                f"issuer={issuer} metadata issuer={asm.get('issuer')}",
                f"issuer={asm.get('issuer')}",
            )


async def check_unauthenticated_get_delete(rep: Reporter):
    """Authorization is required on every HTTP request, not only POST (standalone SSE GET, DELETE)."""
    for method, headers in (
        ("GET", {"Accept": "text/event-stream"}),
        ("DELETE", {"Mcp-Session-Id": "00000000000000000000000000000000"}),
    ):
        r = httpx.request(method, NOTES, headers=headers, timeout=10)
        rep.check(
            f"unauthenticated_{method.lower()}_refused",
            r.status_code == 401 and "resource_metadata" in www_authenticate(r),
            lambda: exchange(r),
        )


# ---------------------------------------------------------------- parity with the upstream


async def check_parity_everything(rep: Reporter):
    tok = token(EVERYTHING, "mcp:tools")
    async with mcp_session(EVERYTHING, tok) as g, mcp_session(EVERYTHING_UP) as u:
        gi, ui = await g.initialize(), await u.initialize()
        rep.check(
            "parity_everything_initialize",
            dump(gi) == dump(ui),
            f"gateway={dump(gi)[:600]} upstream={dump(ui)[:600]}",
            f"{gi.serverInfo.name} {gi.protocolVersion}",
        )
        gt, ut = await g.list_tools(), await u.list_tools()
        rep.check(
            "parity_everything_tools_list",
            dump(gt) == dump(ut),
            f"gateway={[t.name for t in gt.tools]} upstream={[t.name for t in ut.tools]}",
            f"{len(gt.tools)} tools",
        )
        for tool, args in (("echo", {"message": "through mcpgate"}), ("get-sum", {"a": 2, "b": 40})):
            gr, ur = await g.call_tool(tool, args), await u.call_tool(tool, args)
            rep.check(f"parity_everything_call_{tool}", dump(gr) == dump(ur) and not gr.isError, f"gateway={dump(gr)} upstream={dump(ur)}")
        gp, up = await g.list_prompts(), await u.list_prompts()
        rep.check("parity_everything_prompts_list", dump(gp) == dump(up), f"gateway={dump(gp)[:400]} upstream={dump(up)[:400]}")
        gres, ures = await g.list_resources(), await u.list_resources()
        rep.check("parity_everything_resources_list", dump(gres) == dump(ures), f"gateway={dump(gres)[:400]} upstream={dump(ures)[:400]}")
        pong = await g.send_ping()
        rep.check("parity_everything_ping", pong is not None, "no ping result")


async def check_parity_notes(rep: Reporter):
    tok = token(NOTES, ALL_NOTES_SCOPES)
    async with mcp_session(NOTES, tok) as g, mcp_session(NOTES_UP) as u:
        gi, ui = await g.initialize(), await u.initialize()
        rep.check("parity_notes_initialize", dump(gi) == dump(ui), f"gateway={dump(gi)[:600]} upstream={dump(ui)[:600]}")
        gt, ut = await g.list_tools(), await u.list_tools()
        rep.check(
            "parity_notes_tools_list",
            dump(gt) == dump(ut),
            f"gateway={[t.name for t in gt.tools]} upstream={[t.name for t in ut.tools]}",
            f"{len(gt.tools)} tools with all scopes",
        )
        gr, ur = await g.call_tool("read_note", {"name": "welcome"}), await u.call_tool("read_note", {"name": "welcome"})
        rep.check("parity_notes_call_read_note", dump(gr) == dump(ur) and not gr.isError, f"gateway={dump(gr)} upstream={dump(ur)}")


# ---------------------------------------------------------------- audience, bad tokens


async def check_wrong_audience(rep: Reporter):
    other = token(EVERYTHING, "mcp:tools notes:read")  # valid token, aud = the /everything/mcp route
    r = raw_post(NOTES, INIT_BODY, other)
    ch = www_authenticate(r)
    rep.check(
        "audience_other_route_refused",
        r.status_code == 401 and ch.get("error") == "invalid_token",
        exchange(r),
        r.headers.get("www-authenticate", ""),
    )
    own = token(NOTES, "mcp:tools")
    r = raw_post(NOTES, INIT_BODY, own)
    rep.check("audience_own_route_accepted", r.status_code == 200, exchange(r))


async def check_bad_tokens(rep: Reporter):
    good = token(NOTES, "mcp:tools")
    h, p, s = good.split(".")
    tampered = f"{h}.{p}.{s[:-4]}{'AAAA' if s[-4:] != 'AAAA' else 'BBBB'}"
    claims = jwt_parts(good)[1]
    alg = jwt_parts(good)[0]["alg"]
    forged_key = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else rsa.generate_private_key(65537, 2048)
    cases = {
        "garbage": "not-a-token",
        "bad_signature": tampered,
        # same claims, signed by a key the AS never had (unknown kid makes the gateway refetch the JWKS)
        "forged_unknown_kid": pyjwt.encode(claims, forged_key, algorithm=alg, headers={"kid": "forged-kid", "typ": "at+jwt"}),
        # same claims and the AS's real kid, but signed by another key
        "forged_known_kid": pyjwt.encode(claims, forged_key, algorithm=alg, headers={"kid": jwt_parts(good)[0]["kid"]}),
        "alg_none": f"{b64json({'alg': 'none', 'typ': 'at+jwt'})}.{b64json(claims)}.",
        # algorithm confusion: HS256 keyed with the AS's public JWK (must be refused: only ES256/RS256 configured)
        "alg_hs256_with_public_jwk": hs256(
            {"alg": "HS256", "typ": "at+jwt", "kid": jwt_parts(good)[0]["kid"]},
            claims,
            json.dumps(httpx.get(f"{AS_JWT}/jwks").json()["keys"][0]).encode(),
        ),
        "opaque_token_other_route": client_credentials(AS_OPAQUE, EVERYTHING, "mcp:tools")["access_token"],
    }
    for name, bad in cases.items():
        r = raw_post(NOTES, INIT_BODY, bad)
        rep.check(
            f"bad_token_{name}",
            r.status_code == 401 and www_authenticate(r).get("error") == "invalid_token",
            exchange(r),
        )
    # a valid token for /notes/mcp must not be accepted from the query string (MCP: never in the URI);
    # 401 (no credentials) or 400 invalid_request (RFC 6750 §3.1) are both acceptable refusals
    r = httpx.post(f"{NOTES}?access_token={good}", json=INIT_BODY, headers={"Accept": "application/json, text/event-stream"})
    rep.check(
        "bad_token_query_string_not_accepted",
        r.status_code in (400, 401) and "resource_metadata" in www_authenticate(r),
        lambda: exchange(r),
        lambda: f"{r.status_code} {www_authenticate(r).get('error', 'no error code')}",
    )


def short_lived_token(seconds: int, scope: str) -> tuple[str, int] | None:
    """A genuine AS-signed token for the notes route living `seconds`, and its exp; None if the AS
    ignored the requested lifetime."""
    httpx.post(f"{AS_JWT}/admin/ttl?seconds={seconds}", timeout=10).raise_for_status()
    try:
        tok = token(NOTES, scope)
    finally:
        httpx.post(f"{AS_JWT}/admin/ttl?seconds=0", timeout=10).raise_for_status()  # back to the default
    exp = jwt_parts(tok)[1]["exp"]
    return (tok, exp) if exp - time.time() <= seconds + 5 else None


async def check_expired_token(rep: Reporter):
    """A genuine AS-signed token that expires: accepted while valid, 401 invalid_token after exp + leeway
    (the gateway config sets leeway = "1s" for this issuer)."""
    issued = short_lived_token(2, "mcp:tools")
    if issued is None:
        rep.fail("expired_token_refused", "the AS ignored /admin/ttl")
        return
    tok, exp = issued
    r = raw_post(NOTES, INIT_BODY, tok)
    rep.check("expiring_token_accepted_before_exp", r.status_code == 200, lambda: exchange(r))
    await asyncio.sleep(max(0.0, exp + 1 + 1.5 - time.time()))
    r = raw_post(NOTES, INIT_BODY, tok)
    rep.check(
        "expired_token_refused",
        r.status_code == 401 and www_authenticate(r).get("error") == "invalid_token",
        lambda: exchange(r),
        lambda: f"{time.time() - exp:.1f}s after exp",
    )


async def check_get_stream_ends_at_expiry(rep: Reporter):
    """A standalone GET stream to FastMCP, opened with a short-lived token, is ended cleanly by the
    gateway once the token is no longer accepted (exp + 1 s of leeway), although the upstream holds
    it open; reopening it with the same token gets 401."""
    issued = short_lived_token(4, ALL_NOTES_SCOPES)
    if issued is None:
        rep.fail("get_stream_ends_at_expiry", "the AS ignored /admin/ttl")
        return
    tok, exp = issued
    headers = await raw_session(NOTES, tok)
    headers.update({"Authorization": f"Bearer {tok}", "Accept": "text/event-stream"})
    status, ctype, ended, error = None, "", None, None
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30)) as c:
            async with c.stream("GET", NOTES, headers=headers) as r:
                status, ctype = r.status_code, r.headers.get("content-type", "")
                async for _ in r.aiter_bytes():
                    pass
                ended = time.time()
    except httpx.HTTPError as e:
        error = f"{type(e).__name__}: {e}"
    rep.check(
        "get_stream_ends_at_expiry",
        status == 200 and ctype.startswith("text/event-stream") and error is None
        and ended is not None and ended >= exp + 1 - 0.2,
        f"status {status}, {ctype!r}, error {error}, ended {None if ended is None else round(ended - exp, 2)}s after exp",
        f"ended cleanly {ended - exp:.2f}s after exp" if ended else "",
    )
    r = httpx.get(NOTES, headers=headers, timeout=15)
    rep.check(
        "get_stream_reopened_with_expired_token_refused",
        r.status_code == 401 and www_authenticate(r).get("error") == "invalid_token",
        lambda: exchange(r),
    )


class RenewingBearer(httpx.Auth):
    """A client-credentials bearer that fetches a new token whenever the gateway answers 401, as an
    OAuth-aware client does."""

    def __init__(self, scope: str):
        self.scope = scope
        self.tokens = [token(NOTES, scope)]

    def auth_flow(self, request):
        request.headers["Authorization"] = f"Bearer {self.tokens[-1]}"
        response = yield request
        if response.status_code == 401:
            self.tokens.append(token(NOTES, self.scope))
            request.headers["Authorization"] = f"Bearer {self.tokens[-1]}"
            yield request


async def check_python_sdk_reopens_expired_get_stream(rep: Reporter):
    """The Python SDK's standalone GET stream, ended by the gateway at its 4 s token's expiry, is
    reopened by the SDK with a new token; a tools/call works afterwards."""
    def counts() -> tuple[float, float]:
        return (
            metric("mcpgate_streams_expired_total", route="notes"),
            metric("mcpgate_requests_total", route="notes", method="GET", status="200"),
        )

    expired0, gets0 = counts()
    httpx.post(f"{AS_JWT}/admin/ttl?seconds=4", timeout=10).raise_for_status()
    try:
        auth = RenewingBearer(ALL_NOTES_SCOPES)
        first_exp = jwt_parts(auth.tokens[0])[1]["exp"]
        async with mcp_session(NOTES, auth=auth) as s:
            await s.initialize()
            # exp + 1 s of leeway, then the SDK's reconnection delay (1 s) and a new token
            await asyncio.sleep(max(0.0, first_exp + 1 + 3 - time.time()))
            res = await s.call_tool("read_note", {"name": "welcome"})
    finally:
        httpx.post(f"{AS_JWT}/admin/ttl?seconds=0", timeout=10).raise_for_status()
    expired1, gets1 = counts()
    ended, opened = expired1 - expired0, gets1 - gets0
    rep.check(
        "python_sdk_reopens_expired_get_stream",
        ended >= 1 and opened >= 2 and len(auth.tokens) >= 2 and not res.isError,
        f"streams ended at expiry: {ended}, GET streams opened: {opened}, tokens: {len(auth.tokens)}, "
        f"call: {dump(res)}",
        f"{ended:.0f} ended at expiry, {opened:.0f} opened, {len(auth.tokens)} tokens",
    )


# ---------------------------------------------------------------- scopes


async def raw_session(url: str, bearer: str) -> dict:
    r = raw_post(url, INIT_BODY, bearer)
    if r.status_code != 200:
        raise RuntimeError(f"initialize failed: {exchange(r)}")
    sid = r.headers.get("mcp-session-id")
    headers = {"Mcp-Session-Id": sid} if sid else {}
    headers["MCP-Protocol-Version"] = "2025-11-25"
    raw_post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, bearer, headers)
    return headers


async def check_insufficient_scope(rep: Reporter):
    tok = token(NOTES, "mcp:tools notes:read")
    hdrs = await raw_session(NOTES, tok)
    note = f"should-not-exist-{secrets.token_hex(4)}"
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "write_note", "arguments": {"name": note, "text": "x"}}}
    r = raw_post(NOTES, body, tok, hdrs)
    ch = www_authenticate(r)
    rep.check(
        "insufficient_scope_403",
        r.status_code == 403
        and ch.get("error") == "insufficient_scope"
        and "notes:write" in ch.get("scope", "").split()
        and "resource_metadata" in ch,
        exchange(r),
        r.headers.get("www-authenticate", ""),
    )
    async with mcp_session(NOTES_UP) as u:
        await u.initialize()
        res = await u.call_tool("read_note", {"name": note})
    rep.check("insufficient_scope_upstream_untouched", "no note named" in res.content[0].text, f"upstream has the note: {res}")
    body["params"] = {"name": "purge_notes", "arguments": {}}
    r = raw_post(NOTES, body, tok, hdrs)
    ch = www_authenticate(r)
    rep.check(
        "insufficient_scope_admin_tool",
        r.status_code == 403 and "notes:admin" in ch.get("scope", "").split(),
        exchange(r),
    )


async def check_tools_list_filtered(rep: Reporter):
    for scopes, want in (
        ("mcp:tools notes:read", {"read_note", "whoami_headers", "slow_count"}),
        (ALL_NOTES_SCOPES, {"read_note", "write_note", "purge_notes", "whoami_headers", "slow_count"}),
    ):
        async with mcp_session(NOTES, token(NOTES, scopes)) as s:
            await s.initialize()
            names = {t.name for t in (await s.list_tools()).tools}
        rep.check(
            f"tools_list_filtered[{scopes}]",
            names == want,
            f"got {sorted(names)} want {sorted(want)}",
            ",".join(sorted(names)),
        )


# ---------------------------------------------------------------- passthrough, streaming


async def check_no_token_passthrough(rep: Reporter):
    tok = token(NOTES, ALL_NOTES_SCOPES)
    async with mcp_session(NOTES, tok) as s:
        await s.initialize()
        res = await s.call_tool("whoami_headers", {})
    seen = res.structuredContent or json.loads(res.content[0].text)
    leaked = [k for k, v in seen.items() if tok in v or tok.split(".")[2] in v]
    rep.check(
        "no_token_passthrough",
        "authorization" not in seen and not leaked and not res.isError,
        f"upstream saw headers {sorted(seen)} (token in {leaked})",
        "upstream headers: " + ",".join(sorted(seen)),
    )


async def check_progress_streaming(rep: Reporter):
    tok = token(NOTES, ALL_NOTES_SCOPES)
    async with mcp_session(NOTES, tok) as s:
        await s.initialize()
        stamps, t0, t1, res = await slow_count_timed(s)
    rep.check(
        "progress_notifications_streamed",
        len(stamps) == 5 and not res.isError and stamps[0] < t1 - 1.0,
        f"{len(stamps)} progress notifications; first after {stamps[0] - t0 if stamps else 'n/a'}s, result after {t1 - t0:.2f}s (buffered?)",
        f"first progress after {stamps[0] - t0:.2f}s, result after {t1 - t0:.2f}s" if stamps else "",
    )


# ---------------------------------------------------------------- keys and introspection


async def call_read_note(url: str, bearer: str) -> str:
    async with mcp_session(url, bearer) as s:
        await s.initialize()
        res = await s.call_tool("read_note", {"name": "welcome"})
        if res.isError:
            raise RuntimeError(f"tool error: {res}")
        return res.content[0].text


async def check_key_rotation(rep: Reporter):
    t1 = token(NOTES, ALL_NOTES_SCOPES)
    await call_read_note(NOTES, t1)
    state = httpx.post(f"{AS_JWT}/admin/rotate", timeout=10).json()
    t2 = token(NOTES, ALL_NOTES_SCOPES)
    kid1, kid2 = jwt_parts(t1)[0]["kid"], jwt_parts(t2)[0]["kid"]
    assert kid2 == state["kid"] != kid1, (kid1, kid2, state)
    start, last = now(), None
    while now() - start < 12:
        r = raw_post(NOTES, INIT_BODY, t2)
        if r.status_code == 200:
            break
        last = r
        await asyncio.sleep(0.5)
    waited = now() - start
    rep.check(
        "key_rotation_new_kid_accepted",
        last is None or r.status_code == 200,
        lambda: f"token with new kid {kid2} still refused after {waited:.1f}s: {exchange(last)}",
        f"{kid1} -> {kid2}, accepted after {waited:.1f}s without gateway restart",
    )
    r = raw_post(NOTES, INIT_BODY, t1)
    rep.check("key_rotation_old_kid_still_accepted", r.status_code == 200, exchange(r))


async def check_opaque_introspection(rep: Reporter):
    tok = client_credentials(AS_OPAQUE, NOTES, ALL_NOTES_SCOPES)["access_token"]
    await raw_session(NOTES, tok)  # raises with the HTTP exchange if initialize is refused
    text = await call_read_note(NOTES, tok)
    rep.check("opaque_token_via_introspection", isinstance(text, str), text, "initialize + tools/call read_note with an opaque token")
    # scopes from the introspection response are enforced like JWT scopes
    narrow = client_credentials(AS_OPAQUE, NOTES, "mcp:tools notes:read")["access_token"]
    hdrs = await raw_session(NOTES, narrow)
    r = raw_post(NOTES, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "purge_notes", "arguments": {}}}, narrow, hdrs)
    rep.check("opaque_token_scope_enforced", r.status_code == 403 and www_authenticate(r).get("error") == "insufficient_scope", exchange(r))
    # revocation at the AS takes effect once the gateway's introspection cache entry expires
    rv = httpx.post(f"{AS_OPAQUE}/token/revocation", data={"token": tok}, auth=(CLIENT_ID, CLIENT_SECRET), timeout=10)
    assert rv.status_code == 200, rv.text
    start = now()
    while now() - start < 15:
        r = raw_post(NOTES, INIT_BODY, tok)
        if r.status_code == 401:
            break
        await asyncio.sleep(0.5)
    rep.check(
        "opaque_token_revoked_refused",
        r.status_code == 401,
        f"revoked token still accepted after {now() - start:.1f}s: {exchange(r)}",
        f"refused {now() - start:.1f}s after revocation",
    )


# ---------------------------------------------------------------- full OAuth with the SDK's OAuthClientProvider


class MemoryStorage(TokenStorage):
    def __init__(self):
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


class HeadlessBrowser:
    """redirect_handler/callback_handler pair for OAuthClientProvider: instead of opening a browser,
    walk oidc-provider's login and consent pages over HTTP and hand the code back."""

    def __init__(self):
        self.auth_urls: list[str] = []
        self.pending: dict | None = None

    async def redirect(self, url: str) -> None:
        self.auth_urls.append(url)
        self.pending = await drive_authorization(url)

    async def callback(self):
        got, self.pending = self.pending, None
        return got["code"], got.get("state")

    def scopes(self, i: int) -> set[str]:
        return set(parse_qs(urlparse(self.auth_urls[i]).query).get("scope", [""])[0].split())

    def resource(self, i: int) -> str:
        return parse_qs(urlparse(self.auth_urls[i]).query).get("resource", [""])[0]


async def check_python_sdk_oauth_and_step_up(rep: Reporter):
    storage, browser = MemoryStorage(), HeadlessBrowser()
    provider = OAuthClientProvider(
        server_url=NOTES,
        client_metadata=OAuthClientMetadata(
            client_name="mcpgate-interop-python",
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
        timeout=60,
    )
    async with mcp_session(NOTES, auth=provider) as s:
        init = await s.initialize()
        if storage.tokens is None:
            rep.fail("python_sdk_oauth_flow", "the gateway never challenged the client (no 401), so no OAuth flow ran")
            return
        first_token = storage.tokens.access_token
        first = jwt_parts(first_token)[1]
        rep.check(
            "python_sdk_oauth_flow",
            len(browser.auth_urls) == 1 and browser.resource(0) == NOTES and storage.client is not None and first.get("aud") == NOTES,
            f"authorizations={len(browser.auth_urls)} resource={browser.resource(0) if browser.auth_urls else None} aud={first.get('aud')}",
            f"401 -> PRM -> AS metadata -> DCR ({storage.client.client_id[:8]}…) -> code+PKCE scope={sorted(browser.scopes(0))} -> {init.serverInfo.name}",
        )
        before = len(browser.auth_urls)
        res = await s.call_tool("write_note", {"name": "from-python-sdk", "text": "stepped up"})
        final = jwt_parts(storage.tokens.access_token)[1]
        remember_token(first_token)
        remember_token(storage.tokens.access_token)
        rep.check(
            "python_sdk_step_up",
            not res.isError
            and len(browser.auth_urls) > before
            and "notes:write" in browser.scopes(-1)
            and "notes:write" in final.get("scope", "").split(),
            f"isError={res.isError} authorizations={len(browser.auth_urls)} last scope={browser.scopes(-1)} token scope={final.get('scope')}",
            f"403 insufficient_scope -> re-authorized with scope={sorted(browser.scopes(-1))} -> {res.content[0].text}",
        )
        res = await s.call_tool("read_note", {"name": "from-python-sdk"})
        rep.check(
            "python_sdk_after_step_up",
            not res.isError and res.content[0].text == "stepped up",
            f"{res}",
            f"authorizations total: {len(browser.auth_urls)}",
        )


async def main():
    rep = Reporter("py")
    await run_checks(
        rep,
        [
            check_discovery,
            check_unauthenticated_get_delete,
            check_parity_everything,
            check_parity_notes,
            check_wrong_audience,
            check_bad_tokens,
            check_expired_token,
            check_get_stream_ends_at_expiry,
            check_python_sdk_reopens_expired_get_stream,
            check_insufficient_scope,
            check_tools_list_filtered,
            check_no_token_passthrough,
            check_progress_streaming,
            check_opaque_introspection,
            check_python_sdk_oauth_and_step_up,
            check_key_rotation,
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
