"""fal's webhook signatures: the ED25519 key, its JWKS, and signing a delivery.

fal signs the UTF-8 bytes of ``request_id \\n user_id \\n timestamp \\n sha256_hex(body)``
and sends the hex signature with the three signed values in ``X-Fal-Webhook-*`` headers.
``sign_webhook`` is public so tests can forge or replay deliveries exactly like fal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .files import write_atomic

HEADER_REQUEST_ID = "X-Fal-Webhook-Request-Id"
HEADER_USER_ID = "X-Fal-Webhook-User-Id"
HEADER_TIMESTAMP = "X-Fal-Webhook-Timestamp"
HEADER_SIGNATURE = "X-Fal-Webhook-Signature"


def ensure_private_key(path: Path) -> Ed25519PrivateKey:
    """Load the signing key, generating it on first start so restarts keep the same JWKS."""
    if path.exists():
        return load_private_key(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(path, pem, private=True)
    return key


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an ED25519 private key")
    return key


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    x = _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    # RFC 7638 thumbprint: stable across restarts and derived from the key alone.
    thumbprint_input = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(thumbprint_input.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}


def jwks(public_key: Ed25519PublicKey) -> dict[str, list[dict[str, str]]]:
    return {"keys": [public_jwk(public_key)]}


def sign_webhook(
    private_key: Ed25519PrivateKey,
    request_id: str,
    user_id: str,
    body: bytes,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Return the four headers fal sends with a webhook whose raw body is ``body``."""
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    message = "\n".join([request_id, user_id, ts, hashlib.sha256(body).hexdigest()])
    return {
        HEADER_REQUEST_ID: request_id,
        HEADER_USER_ID: user_id,
        HEADER_TIMESTAMP: ts,
        HEADER_SIGNATURE: private_key.sign(message.encode("utf-8")).hex(),
    }


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
