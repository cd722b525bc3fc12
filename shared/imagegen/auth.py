"""Who is calling: API keys, shown once and stored only as a SHA-256 hash, or Firebase ID
tokens (a bearer value that is a JWT; see `imagegen.firebase_auth`)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imagegen.errors import AuthenticationError
from imagegen.repository import ApiKeyRecord, ApiKeyRepository

KEY_PREFIX = "igk_"
MAX_KEY_CHARS = 256


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str
    key_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class TokenVerifier(Protocol):
    def principal(self, token: str) -> Principal: ...


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def issue_api_key(
    keys: ApiKeyRepository, user_id: str, role: str, now: datetime
) -> tuple[str, ApiKeyRecord]:
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKeyRecord(key_id=secrets.token_hex(8), user_id=user_id, role=role, revoked=False)
    keys.put(hash_key(api_key), record, now)
    return api_key, record


def looks_like_jwt(credential: str) -> bool:
    """Three dot-separated parts. API keys (``igk_`` + base64url) never contain a dot."""
    return credential.count(".") == 2


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError("Missing Authorization header", code="missing_credentials")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError(
            "Authorization must be 'Bearer <api key or ID token>'", code="invalid_credentials"
        )
    return token


def authenticate(
    keys: ApiKeyRepository, authorization: str | None, tokens: TokenVerifier | None = None
) -> Principal:
    token = bearer_token(authorization)
    if tokens is not None and looks_like_jwt(token):
        return tokens.principal(token)
    if len(token) > MAX_KEY_CHARS:
        raise AuthenticationError("Invalid API key", code="invalid_credentials")
    record = keys.get(hash_key(token))
    if record is None or record.revoked:
        raise AuthenticationError("Invalid API key", code="invalid_credentials")
    return Principal(user_id=record.user_id, role=record.role, key_id=record.key_id)
