"""Verification of fal.ai webhook signatures.

fal signs every webhook delivery with ED25519 over
``request_id \\n user_id \\n timestamp \\n sha256_hex(raw_body)`` and publishes the
public keys as a JWKS. The webhook URL itself is not secret (it travels in every
submit call), so this check is what stops anyone from forging a "generation done"
callback.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagegen.errors import AuthenticationError, RetryableError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

FAL_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"

HEADER_REQUEST_ID = "x-fal-webhook-request-id"
HEADER_USER_ID = "x-fal-webhook-user-id"
HEADER_TIMESTAMP = "x-fal-webhook-timestamp"
HEADER_SIGNATURE = "x-fal-webhook-signature"

DEFAULT_TOLERANCE_SECONDS = 300.0
MAX_JWKS_TTL_SECONDS = 24 * 3600.0
# Minimum gap between JWKS fetches triggered by a failed verification: anyone can
# send us a bad signature, and that must not translate into traffic towards fal.
FORCED_REFRESH_INTERVAL_SECONDS = 300.0
JWKS_FETCH_TIMEOUT_SECONDS = 5.0

# Strict formats: int() and bytes.fromhex() are lenient (signs, "_", whitespace),
# and the signed message uses the header text verbatim, so be exact up front.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{128}")  # 64-byte ED25519 signature


class WebhookSignatureError(AuthenticationError):
    """The webhook is not provably from fal (HTTP 401 at the edge).

    ``code`` is stable and machine-usable (logs, metrics); ``message`` is for humans.
    """

    def __init__(self, code: str, message: str | None = None, **details: Any) -> None:
        super().__init__(message or code, code=code, details=details or None)
        self.reason = code


class JwksUnavailableError(RetryableError):
    """fal's JWKS could not be fetched and nothing is cached.

    Not a signature error: it is our outage, not a forged request, so answer 503 and
    let fal redeliver rather than dropping a genuine result.
    """

    code = "jwks_unavailable"


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    request_id: str
    user_id: str
    timestamp: int


def _normalise_headers(headers: Mapping[str, str]) -> dict[str, str]:
    # Plain dicts are case-sensitive while werkzeug's EnvironHeaders title-cases
    # names; lower-casing once makes both behave the same.
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _b64url_decode(value: str) -> bytes:
    # JWK uses unpadded base64url (RFC 7515 §2); Python's decoder insists on padding.
    padded = value + "=" * (-len(value) % 4)
    return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)


def load_ed25519_keys(jwks: Any) -> list[Ed25519PublicKey]:
    """Usable ED25519 keys of a JWKS; anything else in it is ignored.

    A single odd entry (a future key type, a typo) must not take down verification
    with the keys that do work.
    """
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(entries, list):
        return []
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: list[Ed25519PublicKey] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        x = entry.get("x")
        if not isinstance(x, str):
            continue
        try:
            keys.append(Ed25519PublicKey.from_public_bytes(_b64url_decode(x)))
        except (ValueError, UnicodeEncodeError, binascii.Error):
            continue
    return keys


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    request_id: str
    user_id: str
    timestamp_text: str
    timestamp: int
    signature: bytes


def check_headers(
    headers: Mapping[str, str], now: float, tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS
) -> SignedHeaders:
    """The cheap checks, done before any key is fetched: a forged or replayed delivery is
    refused without making us call fal's JWKS endpoint."""
    h = _normalise_headers(headers)
    values: dict[str, str] = {}
    for name in (HEADER_REQUEST_ID, HEADER_USER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE):
        value = h.get(name, "")
        if not value:
            raise WebhookSignatureError("missing_header", f"missing header {name}", header=name)
        values[name] = value

    timestamp_text = values[HEADER_TIMESTAMP]
    if not _TIMESTAMP_RE.fullmatch(timestamp_text):
        raise WebhookSignatureError("bad_timestamp", "timestamp is not integer unix seconds")
    timestamp = int(timestamp_text)
    # Bounds replay of a captured delivery; fal's and our clocks are NTP-synced.
    if abs(now - timestamp) > tolerance_seconds:
        raise WebhookSignatureError(
            "stale_timestamp",
            f"timestamp outside ±{tolerance_seconds:g}s",
            skew_seconds=now - timestamp,
        )

    signature_hex = values[HEADER_SIGNATURE]
    if not _SIGNATURE_RE.fullmatch(signature_hex):
        raise WebhookSignatureError("bad_signature_encoding", "signature is not 64 bytes of hex")
    return SignedHeaders(
        request_id=values[HEADER_REQUEST_ID],
        user_id=values[HEADER_USER_ID],
        timestamp_text=timestamp_text,
        timestamp=timestamp,
        signature=bytes.fromhex(signature_hex),
    )


def _verify_with_keys(
    signed: SignedHeaders, body: bytes, jwks: Mapping[str, Any]
) -> VerifiedWebhook:
    from cryptography.exceptions import InvalidSignature

    keys = load_ed25519_keys(jwks)
    if not keys:
        raise WebhookSignatureError("no_keys", "JWKS has no usable Ed25519 key")

    message = "\n".join(
        (signed.request_id, signed.user_id, signed.timestamp_text, hashlib.sha256(body).hexdigest())
    ).encode("utf-8")
    # fal publishes no key id with the signature, so any published key may be the signer
    # (during a rotation there are several).
    for key in keys:
        try:
            key.verify(signed.signature, message)
        except InvalidSignature:
            continue
        return VerifiedWebhook(
            request_id=signed.request_id, user_id=signed.user_id, timestamp=signed.timestamp
        )
    raise WebhookSignatureError("signature_mismatch", "signature does not match any fal key")


def verify_signature(
    headers: Mapping[str, str],
    body: bytes,
    jwks: Mapping[str, Any],
    now: float,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> VerifiedWebhook:
    """Check a fal webhook delivery against ``jwks``; raise WebhookSignatureError if not valid.

    ``body`` must be the raw request bytes: re-serialised JSON would not match.
    """
    return _verify_with_keys(check_headers(headers, now, tolerance_seconds), body, jwks)


def _http_fetch(url: str) -> dict[str, Any]:
    import httpx  # loaded by the first verification, not at start-up

    from imagegen.tls import client_context

    response = httpx.get(url, timeout=JWKS_FETCH_TIMEOUT_SECONDS, verify=client_context())
    response.raise_for_status()
    return response.json()


class JwksCache:
    """Thread-safe, lazily fetched copy of fal's JWKS.

    Fetching happens on first use (never at import: cold starts and tests stay offline).
    """

    def __init__(
        self,
        url: str = FAL_JWKS_URL,
        ttl_seconds: float = MAX_JWKS_TTL_SECONDS,
        fetch: Callable[[str], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        # Revoked keys must stop being trusted within a day whatever the config says.
        self.ttl_seconds = min(max(float(ttl_seconds), 0.0), MAX_JWKS_TTL_SECONDS)
        self._fetch = fetch or _http_fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._jwks: dict[str, Any] | None = None
        # -inf: "never", which keeps every age comparison true without None checks.
        self._fetched_at = float("-inf")  # last successful fetch
        self._attempted_at = float("-inf")  # last fetch attempt, successful or not

    def get(self) -> dict[str, Any]:
        """Current JWKS, fetching it if absent or older than the ttl."""
        with self._lock:
            now = self._clock()
            if self._jwks is None:
                self._fetch_locked(now)
            elif now - self._fetched_at >= self.ttl_seconds:
                # While fal is unreachable, don't stall every request on a 5 s timeout:
                # the stale copy is served and the fetch retried only every few minutes.
                failed_recently = (
                    self._attempted_at > self._fetched_at
                    and now - self._attempted_at < FORCED_REFRESH_INTERVAL_SECONDS
                )
                if not failed_recently:
                    self._fetch_locked(now)
            if self._jwks is None:
                raise JwksUnavailableError(f"could not fetch JWKS from {self.url}")
            return self._jwks

    def refresh_after_mismatch(self, used: Mapping[str, Any]) -> dict[str, Any] | None:
        """Refetch because a signature matched no key (fal may have rotated keys).

        ``used`` is the JWKS the failed check ran against. Returns a JWKS worth retrying
        with, or None if there is none (no new copy, or refetched too recently).
        """
        with self._lock:
            if self._jwks is not None and self._jwks is not used:
                # Another thread already replaced it since the caller read it.
                return self._jwks
            now = self._clock()
            if now - self._attempted_at < FORCED_REFRESH_INTERVAL_SECONDS:
                return None
            before = self._jwks
            self._fetch_locked(now)
            return self._jwks if self._jwks is not before else None

    def _fetch_locked(self, now: float) -> None:
        # Held under the lock on purpose: concurrent requests wait for one fetch
        # instead of each sending their own.
        self._attempted_at = now
        try:
            jwks = self._fetch(self.url)
        except Exception as exc:  # any failure: keep whatever copy we have
            log.warning("fal JWKS fetch from %s failed: %s", self.url, exc)
            return
        # A broken or empty answer must not replace keys that work.
        if not load_ed25519_keys(jwks):
            log.warning("fal JWKS from %s has no usable Ed25519 key; ignored", self.url)
            return
        self._jwks = jwks
        self._fetched_at = now


class FalWebhookVerifier:
    def __init__(
        self,
        jwks: JwksCache,
        tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwks = jwks
        self.tolerance_seconds = tolerance_seconds
        self._clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> VerifiedWebhook:
        """Verify a delivery; raises WebhookSignatureError, or JwksUnavailableError."""
        signed = check_headers(headers, self._clock(), self.tolerance_seconds)
        jwks = self.jwks.get()
        try:
            return _verify_with_keys(signed, body, jwks)
        except WebhookSignatureError as exc:
            # Only a mismatch can be explained by keys we don't have yet.
            if exc.code != "signature_mismatch":
                raise
            fresh = self.jwks.refresh_after_mismatch(jwks)
            if fresh is None:
                raise
            return _verify_with_keys(signed, body, fresh)
