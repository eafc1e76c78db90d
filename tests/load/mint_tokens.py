#!/usr/bin/env python3
"""Mint many distinct access tokens from mcpgate's dev issuer key, fast.

`mcpgate token` mints one token per process start; the cold-cache run needs tens of thousands.
This script takes one token minted by `mcpgate token` as the template (same header, same
claims: iss, aud, scope, exp, ...), replaces only `jti`, and signs with the same ES256 key that
the dev issuer keeps in its state directory. The gateway verifies them exactly like tokens
from `mcpgate token`.

usage: mint_tokens.py KEY_PEM TEMPLATE_TOKEN COUNT > tokens.txt
"""
import base64
import json
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def main() -> None:
    key_path, template, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    header_b64, payload_b64, _ = template.split(".")
    claims = json.loads(b64url_decode(payload_b64))
    out = sys.stdout
    for _ in range(count):
        claims["jti"] = os.urandom(16).hex()
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header_b64}.{payload}".encode()
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        out.write(f"{header_b64}.{payload}.{b64url(sig)}\n")


if __name__ == "__main__":
    main()
