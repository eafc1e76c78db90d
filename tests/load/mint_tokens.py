#!/usr/bin/env python3
"""Mint many distinct access tokens for the cold-cache rounds, fast.

`mcpgate token` mints one token per process start; the cold-cache runs need tens of thousands.

ES256, from mcpgate's dev issuer:
    mint_tokens.py KEY_PEM TEMPLATE_TOKEN COUNT > tokens.txt
  takes one token minted by `mcpgate token` as the template (same header, same claims: iss, aud,
  scope, exp, ...), replaces only `jti`, and signs with the ES256 key that the dev issuer keeps in
  its state directory. The gateway verifies them exactly like tokens from `mcpgate token`.

RS256, from a stand-in identity provider whose JWKS the load script serves as a static file:
    mint_tokens.py --rsa-key KEY_PEM JWKS_OUT
  writes a new RSA-2048 key and its public JWKS (kid "load-rs256");
    mint_tokens.py --rs256 KEY_PEM TEMPLATE_TOKEN COUNT ISSUER AUDIENCE > tokens.txt
  mints tokens with the template's claims, `iss` and `aud` replaced, a fresh `jti` each, signed
  RS256. RSA signing is slow (about 1 ms here), so the tokens are minted on every core.
"""
import base64
import json
import multiprocessing
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

RSA_KID = "load-rs256"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def template_claims(template: str):
    header_b64, payload_b64, _ = template.split(".")
    return header_b64, json.loads(b64url_decode(payload_b64))


def signed(header_b64: str, claims: dict, sign) -> str:
    claims["jti"] = os.urandom(16).hex()
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header_b64}.{payload}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def es256(key_path: str, template: str, count: int) -> None:
    key = load_key(key_path)
    header_b64, claims = template_claims(template)

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    for _ in range(count):
        sys.stdout.write(signed(header_b64, claims, sign) + "\n")


def rsa_key(key_path: str, jwks_path: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public = key.public_key().public_numbers()
    n = public.n.to_bytes((public.n.bit_length() + 7) // 8, "big")
    e = public.e.to_bytes((public.e.bit_length() + 7) // 8, "big")
    jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": RSA_KID, "n": b64url(n), "e": b64url(e)}
    with open(jwks_path, "w") as f:
        json.dump({"keys": [jwk]}, f)


def _rs256_batch(job) -> list:
    key_path, header_b64, claims, count = job
    key = load_key(key_path)

    def sign(data: bytes) -> bytes:
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    return [signed(header_b64, dict(claims), sign) for _ in range(count)]


def rs256(key_path: str, template: str, count: int, issuer: str, audience: str) -> None:
    _, claims = template_claims(template)
    claims["iss"] = issuer
    claims["aud"] = audience
    header_b64 = b64url(json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": RSA_KID},
                                   separators=(",", ":")).encode())
    workers = os.cpu_count() or 1
    sizes = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    with multiprocessing.Pool(workers) as pool:
        for batch in pool.imap(_rs256_batch, [(key_path, header_b64, claims, n) for n in sizes if n]):
            sys.stdout.write("".join(token + "\n" for token in batch))


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--rsa-key"] and len(args) == 3:
        rsa_key(args[1], args[2])
    elif args[:1] == ["--rs256"] and len(args) == 6:
        rs256(args[1], args[2], int(args[3]), args[4], args[5])
    elif len(args) == 3:
        es256(args[0], args[1], int(args[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
