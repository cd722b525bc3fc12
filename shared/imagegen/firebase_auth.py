"""Firebase Authentication ID tokens as API credentials.

A web frontend that signs its users in with Firebase sends their ID token as
``Authorization: Bearer <JWT>``. It is verified the way Firebase documents it (and the way
``google.oauth2.id_token.verify_firebase_token`` does): RS256 signed by one of Google's
``securetoken`` certificates (chosen by the header's ``kid``), ``iss`` =
``https://securetoken.google.com/<project>``, ``aud`` = the project id, ``iat`` and
``auth_time`` not in the future, ``exp`` not past, ``sub`` (the uid) non-empty.

google-auth checks the signature (``google.auth.crypt.RSAVerifier`` on the certificate);
the claims are checked here, against an injectable clock. google-auth's own helper fetches the
certificates on every call; `CertificateCache` fetches them once and keeps them for as long
as Google's ``Cache-Control: max-age`` says (at most an hour).

Tokens are never logged: only the reason a token was refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any, TypeGuard

from imagegen.auth import Principal, looks_like_jwt
from imagegen.errors import AuthenticationError, RetryableError

log = logging.getLogger(__name__)

ISSUER_PREFIX = "https://securetoken.google.com/"
FIREBASE_KEY_ID = "firebase"  # Principal.key_id of a caller authenticated by ID token

MAX_TOKEN_CHARS = 8192
MAX_UID_CHARS = 128  # Firebase's own limit on a uid
CLOCK_SKEW_SECONDS = 60
MAX_CERTS_TTL_SECONDS = 3600.0
MIN_CERTS_TTL_SECONDS = 60.0  # a max-age of 0 must not turn into a fetch per request
DEFAULT_CERTS_TTL_SECONDS = 300.0  # when the response says nothing
# Minimum gap between fetches caused by an unknown `kid` or a failed fetch: anyone can send
# a token naming a made-up key, and that must not turn into traffic towards Google.
FORCED_REFRESH_INTERVAL_SECONDS = 300.0
CERTS_FETCH_TIMEOUT_SECONDS = 5.0

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


class InvalidTokenError(AuthenticationError):
    code = "invalid_token"


class TokenExpiredError(AuthenticationError):
    code = "token_expired"


class CertificatesUnavailableError(RetryableError):
    """The signing certificates could not be fetched and none are cached: our outage, not a
    bad token, so 503 (retry) rather than 401."""

    code = "auth_unavailable"


def max_age_seconds(cache_control: str | None) -> float | None:
    match = _MAX_AGE.search(cache_control or "")
    return float(match.group(1)) if match else None


def _http_fetch(url: str) -> tuple[dict[str, str], float | None]:
    """(certificates, max-age in seconds or None)."""
    import httpx  # loaded by the first token check, not at start-up

    from imagegen.tls import client_context

    response = httpx.get(url, timeout=CERTS_FETCH_TIMEOUT_SECONDS, verify=client_context())
    response.raise_for_status()
    certs = response.json()
    if not isinstance(certs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in certs.items()
    ):
        raise ValueError("certificate endpoint did not answer {kid: PEM certificate}")
    return certs, max_age_seconds(response.headers.get("cache-control"))


class CertificateCache:
    """Thread-safe, lazily fetched copy of the ``{kid: PEM certificate}`` document."""

    def __init__(
        self,
        url: str,
        fetch: Callable[[str], tuple[dict[str, str], float | None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._fetch = fetch or _http_fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._certs: dict[str, str] | None = None
        # -inf: "never", which keeps every age comparison true without None checks.
        self._fetched_at = float("-inf")  # last successful fetch
        self._expires_at = float("-inf")
        self._attempted_at = float("-inf")  # last attempt, successful or not

    def _refresh_locked(self, now: float) -> None:
        self._attempted_at = now
        try:
            certs, max_age = self._fetch(self.url)
        except Exception as exc:  # network, HTTP status, JSON: all mean "no new copy"
            log.warning("could not fetch signing certificates: %s", type(exc).__name__)
            return
        ttl = DEFAULT_CERTS_TTL_SECONDS if max_age is None else max_age
        self._certs = dict(certs)
        self._fetched_at = now
        self._expires_at = now + min(max(ttl, MIN_CERTS_TTL_SECONDS), MAX_CERTS_TTL_SECONDS)

    def get(self, kid: str) -> str | None:
        """The certificate for `kid`, or None if the current document has none."""
        with self._lock:
            now = self._clock()
            recently_attempted = now - self._attempted_at < FORCED_REFRESH_INTERVAL_SECONDS
            if self._certs is None:
                self._refresh_locked(now)
            elif now >= self._expires_at:
                # While the endpoint is down, the stale copy is served and the fetch retried
                # only every few minutes, rather than stalling every request on a timeout.
                failed_recently = self._attempted_at > self._fetched_at and recently_attempted
                if not failed_recently:
                    self._refresh_locked(now)
            elif kid not in self._certs and not recently_attempted:
                # Google rotates keys; one we have not seen may have been published since.
                self._refresh_locked(now)
            if self._certs is None:
                raise CertificatesUnavailableError(
                    "Could not fetch the ID token signing certificates"
                )
            return self._certs.get(kid)


def _b64url(segment: str) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_object(segment: str) -> dict[str, Any]:
    value = json.loads(_b64url(segment))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _is_time(value: Any) -> TypeGuard[float]:
    # JSON lets NaN and Infinity through, and NaN compares false with everything.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class FirebaseTokenVerifier:
    def __init__(
        self,
        project_id: str,
        certificates: CertificateCache,
        clock: Callable[[], float] = time.time,
        clock_skew_seconds: int = CLOCK_SKEW_SECONDS,
    ) -> None:
        self.project_id = project_id
        self.issuer = ISSUER_PREFIX + project_id
        self._certificates = certificates
        self._clock = clock
        self._skew = clock_skew_seconds

    def verify(self, token: str) -> dict[str, Any]:
        """The token's verified claims; InvalidTokenError / TokenExpiredError otherwise."""
        header, claims, signed, signature = self._parse(token)
        if header.get("alg") != "RS256":
            raise self._refuse("unexpected_algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise self._refuse("missing_kid")
        certificate = self._certificates.get(kid)
        if certificate is None:
            raise self._refuse("unknown_kid")
        try:
            from google.auth import crypt

            valid = crypt.RSAVerifier.from_string(certificate).verify(signed, signature)
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise self._refuse("bad_signature")
        self._check_claims(claims)
        return claims

    def principal(self, token: str) -> Principal:
        claims = self.verify(token)
        is_admin = claims.get("admin") is True or claims.get("role") == "admin"
        return Principal(
            user_id=claims["sub"], role="admin" if is_admin else "user", key_id=FIREBASE_KEY_ID
        )

    @staticmethod
    def _refuse(reason: str) -> InvalidTokenError:
        log.info("ID token refused", extra={"reason": reason})
        return InvalidTokenError("Invalid ID token")

    def _parse(self, token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
        if len(token) > MAX_TOKEN_CHARS or not looks_like_jwt(token):
            raise self._refuse("malformed")
        try:
            encoded_header, encoded_claims, encoded_signature = token.split(".")
            header = _json_object(encoded_header)
            claims = _json_object(encoded_claims)
            signature = _b64url(encoded_signature)
        # ValueError covers JSONDecodeError and UnicodeDecodeError; deep nesting recurses.
        except (ValueError, binascii.Error, RecursionError):
            raise self._refuse("malformed") from None
        signed = f"{encoded_header}.{encoded_claims}".encode("ascii")
        return header, claims, signed, signature

    def _check_claims(self, claims: dict[str, Any]) -> None:
        now = self._clock()
        if claims.get("iss") != self.issuer:
            raise self._refuse("wrong_issuer")
        if claims.get("aud") != self.project_id:
            raise self._refuse("wrong_audience")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_UID_CHARS:
            raise self._refuse("bad_subject")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not _is_time(iat) or not _is_time(exp):
            raise self._refuse("missing_times")
        if iat > now + self._skew:
            raise self._refuse("issued_in_future")
        auth_time = claims.get("auth_time")
        if auth_time is not None and (not _is_time(auth_time) or auth_time > now + self._skew):
            raise self._refuse("bad_auth_time")
        if exp < now - self._skew:
            log.info("ID token refused", extra={"reason": "expired"})
            raise TokenExpiredError("ID token has expired")


@cache
def verifier() -> FirebaseTokenVerifier:
    """The api instance's verifier: one certificate cache per instance, built on first use
    (nothing is fetched at import or cold start)."""
    from imagegen.settings import get_settings

    settings = get_settings()
    return FirebaseTokenVerifier(
        settings.firebase_project, CertificateCache(settings.firebase_certs_url)
    )
