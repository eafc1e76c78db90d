"""Self-check of the third-party fixtures WITHOUT mcpgate: proves the authorization servers and the
upstream MCP servers behave as the gateway scenarios assume, so a gateway scenario failure points at
the gateway. Prefix: components/.
"""

import asyncio
import base64
import os
import hashlib
import secrets
from urllib.parse import urlencode

import httpx

from common import (
    AS_JWT,
    AS_OPAQUE,
    CLIENT_ID,
    CLIENT_SECRET,
    EVERYTHING_UP,
    NOTES,
    NOTES_UP,
    REDIRECT_URI,
    Reporter,
    client_credentials,
    drive_authorization,
    jwt_parts,
    mcp_session,
    now,
    run_checks,
)

INTROSPECTION_CLIENT = ("mcpgate-introspect", os.environ.get("MCPGATE_INTROSPECTION_SECRET", ""))


async def check_as_jwt_audience(rep: Reporter):
    tok = client_credentials(AS_JWT, NOTES, "mcp:tools notes:read")
    header, claims = jwt_parts(tok["access_token"])
    rep.check(
        "as_jwt_access_token",
        header.get("typ") == "at+jwt"
        and header.get("alg") in ("ES256", "RS256")
        and claims.get("aud") == NOTES
        and claims.get("iss") == AS_JWT
        and set(claims.get("scope", "").split()) == {"mcp:tools", "notes:read"},
        f"header={header} claims={claims}",
        f"aud={claims.get('aud')} alg={header.get('alg')} kid={header.get('kid')}",
    )
    r = httpx.post(
        f"{AS_JWT}/token",
        data={"grant_type": "client_credentials", "resource": "http://127.0.0.2:1/elsewhere"},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    rep.check("as_refuses_foreign_resource", r.status_code == 400 and r.json().get("error") == "invalid_target", r.text)


async def check_as_opaque_introspection(rep: Reporter):
    tok = client_credentials(AS_OPAQUE, NOTES, "mcp:tools notes:read")["access_token"]
    r = httpx.post(f"{AS_OPAQUE}/token/introspection", data={"token": tok}, auth=INTROSPECTION_CLIENT)
    body = r.json()
    rep.check(
        "as_opaque_introspection",
        tok.count(".") == 0 and body.get("active") is True and body.get("aud") == NOTES and "notes:read" in body.get("scope", ""),
        f"{r.status_code} {body}",
        f"aud={body.get('aud')}",
    )
    r = httpx.post(f"{AS_OPAQUE}/token/revocation", data={"token": tok}, auth=(CLIENT_ID, CLIENT_SECRET))
    r2 = httpx.post(f"{AS_OPAQUE}/token/introspection", data={"token": tok}, auth=INTROSPECTION_CLIENT)
    rep.check("as_opaque_revocation", r.status_code == 200 and r2.json() == {"active": False}, f"{r.status_code} {r2.text}")


async def check_as_rotation(rep: Reporter):
    old = jwt_parts(client_credentials(AS_JWT, NOTES, "mcp:tools")["access_token"])[0]["kid"]
    state = httpx.post(f"{AS_JWT}/admin/rotate").json()
    new = jwt_parts(client_credentials(AS_JWT, NOTES, "mcp:tools")["access_token"])[0]["kid"]
    jwks = [k["kid"] for k in httpx.get(f"{AS_JWT}/jwks").json()["keys"]]
    rep.check(
        "as_key_rotation",
        old != new and state["kid"] == new and jwks[0] == new and old in jwks,
        f"old={old} new={new} jwks={jwks}",
        f"{old} -> {new}",
    )


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def check_as_dcr_authcode_pkce(rep: Reporter):
    """DCR + authorization code + PKCE + resource indicator, then a second authorization with more
    scope for the same client (what a step-up needs from the AS)."""
    meta = httpx.get(f"{AS_JWT}/.well-known/oauth-authorization-server").json()
    reg = httpx.post(
        meta["registration_endpoint"],
        json={
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_post",
            "scope": "mcp:tools",
            "client_name": "components-check",
        },
    )
    if reg.status_code != 201:
        rep.fail("as_dcr", f"{reg.status_code} {reg.text}")
        return
    client = reg.json()
    rep.ok("as_dcr", client["client_id"])
    for n, scope in enumerate(["mcp:tools", "mcp:tools notes:write"]):
        verifier, challenge = pkce()
        state = secrets.token_urlsafe(8)
        q = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": NOTES,
        }
        got = await drive_authorization(f"{meta['authorization_endpoint']}?{urlencode(q)}")
        r = httpx.post(
            meta["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": got["code"],
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
                "resource": NOTES,
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
            },
        )
        ok = r.status_code == 200 and got.get("state") == state
        claims = jwt_parts(r.json()["access_token"])[1] if ok else {}
        rep.check(
            f"as_authcode_pkce_{n + 1}",
            ok and claims.get("aud") == NOTES and set(claims.get("scope", "").split()) == set(scope.split()),
            f"{r.status_code} {r.text[:300]} claims={claims}",
            f"scope={claims.get('scope')!r} sub={claims.get('sub')}",
        )


async def check_upstream_notes_direct(rep: Reporter):
    async with mcp_session(NOTES_UP) as s:
        init = await s.initialize()
        names = sorted(t.name for t in (await s.list_tools()).tools)
        want = sorted(["read_note", "write_note", "purge_notes", "whoami_headers", "slow_count"])
        rep.check("fastmcp_direct_tools", names == want, f"{names}", f"{init.serverInfo.name} {init.serverInfo.version}")
        stamps: list[float] = []

        async def progress(p, total, msg):
            stamps.append(now())

        t0 = now()
        res = await s.call_tool("slow_count", {}, progress_callback=progress)
        t1 = now()
        rep.check(
            "fastmcp_direct_progress",
            len(stamps) == 5 and not res.isError and stamps[0] < t1 - 1.0,
            f"progress={len(stamps)} first_at={stamps[0] - t0 if stamps else None} total={t1 - t0}",
            f"{len(stamps)} progress notifications over {t1 - t0:.1f}s",
        )


async def check_upstream_everything_direct(rep: Reporter):
    async with mcp_session(EVERYTHING_UP) as s:
        init = await s.initialize()
        res = await s.call_tool("echo", {"message": "components"})
        rep.check(
            "everything_direct_echo",
            res.content and res.content[0].text == "Echo: components",
            f"{res}",
            f"{init.serverInfo.name} {init.serverInfo.version}",
        )


async def main():
    rep = Reporter("components")
    await run_checks(
        rep,
        [
            check_as_jwt_audience,
            check_as_opaque_introspection,
            check_as_dcr_authcode_pkce,
            check_upstream_notes_direct,
            check_upstream_everything_direct,
            check_as_rotation,
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
