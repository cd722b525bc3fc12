"""Unit tests for fal webhook signature verification (no network)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from imagegen.errors import AuthenticationError, RetryableError
from imagegen.webhook_signature import (
    FalWebhookVerifier,
    JwksCache,
    JwksUnavailableError,
    VerifiedWebhook,
    WebhookSignatureError,
    verify_signature,
)

NOW = 1_750_000_000.0
BODY = json.dumps(
    {"request_id": "req-1", "status": "OK", "payload": {"images": [{"url": "https://x/y.png"}]}}
).encode()
REQUEST_ID = "024ca5b1-45d3-4afd-883e-ad3abe2a1c4d"
USER_ID = "user-123"


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def jwk(key: Ed25519PrivateKey) -> dict:
    # As fal publishes it: base64url with the padding stripped.
    x = base64.urlsafe_b64encode(raw_public(key)).decode().rstrip("=")
    return {"kty": "OKP", "crv": "Ed25519", "x": x}


def sign_headers(
    key: Ed25519PrivateKey,
    body: bytes = BODY,
    timestamp: str | int | float = NOW,
    request_id: str = REQUEST_ID,
    user_id: str = USER_ID,
) -> dict[str, str]:
    ts = str(int(timestamp)) if not isinstance(timestamp, str) else timestamp
    message = "\n".join([request_id, user_id, ts, hashlib.sha256(body).hexdigest()])
    signature = key.sign(message.encode("utf-8")).hex()
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": ts,
        "X-Fal-Webhook-Signature": signature,
    }


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def jwks(key: Ed25519PrivateKey) -> dict:
    return {"keys": [jwk(key)]}


def assert_rejected(code: str, headers, body, jwks, now=NOW) -> WebhookSignatureError:
    with pytest.raises(WebhookSignatureError) as info:
        verify_signature(headers, body, jwks, now)
    assert info.value.code == code, info.value
    return info.value


# --- verify_signature -------------------------------------------------------------


def test_valid_signature(key, jwks):
    result = verify_signature(sign_headers(key), BODY, jwks, NOW)
    assert result == VerifiedWebhook(request_id=REQUEST_ID, user_id=USER_ID, timestamp=int(NOW))


def test_error_carries_code_message_and_status(key, jwks):
    err = assert_rejected("signature_mismatch", sign_headers(key), BODY + b"x", jwks)
    assert isinstance(err, AuthenticationError)
    assert err.status == 401
    assert err.message and str(err) == err.message
    assert err.reason == err.code
    assert err.to_body()["error"]["code"] == "signature_mismatch"


@pytest.mark.parametrize(
    "header",
    [
        "X-Fal-Webhook-Request-Id",
        "X-Fal-Webhook-User-Id",
        "X-Fal-Webhook-Timestamp",
        "X-Fal-Webhook-Signature",
    ],
)
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_header(key, jwks, header, how):
    headers = sign_headers(key)
    if how == "absent":
        del headers[header]
    else:
        headers[header] = ""
    err = assert_rejected("missing_header", headers, BODY, jwks)
    assert err.details["header"] == header.lower()


@pytest.mark.parametrize("bad", ["zz" * 64, "0x" + "ab" * 63, "ab " * 64, ("ab" * 64)[:-1] + "g"])
def test_non_hex_signature(key, jwks, bad):
    headers = sign_headers(key)
    headers["X-Fal-Webhook-Signature"] = bad
    assert_rejected("bad_signature_encoding", headers, BODY, jwks)


@pytest.mark.parametrize("n_bytes", [63, 65, 32, 0])
def test_wrong_length_signature(key, jwks, n_bytes):
    headers = sign_headers(key)
    real = bytes.fromhex(headers["X-Fal-Webhook-Signature"])
    headers["X-Fal-Webhook-Signature"] = (real + real)[:n_bytes].hex()
    code = "missing_header" if n_bytes == 0 else "bad_signature_encoding"
    assert_rejected(code, headers, BODY, jwks)


def test_uppercase_hex_signature_accepted(key, jwks):
    headers = sign_headers(key)
    headers["X-Fal-Webhook-Signature"] = headers["X-Fal-Webhook-Signature"].upper()
    assert verify_signature(headers, BODY, jwks, NOW).request_id == REQUEST_ID


def test_key_not_in_jwks(key):
    other = {"keys": [jwk(Ed25519PrivateKey.generate())]}
    assert_rejected("signature_mismatch", sign_headers(key), BODY, other)


def test_second_key_of_two_signs(key):
    jwks = {"keys": [jwk(Ed25519PrivateKey.generate()), jwk(key)]}
    assert verify_signature(sign_headers(key), BODY, jwks, NOW).user_id == USER_ID


@pytest.mark.parametrize("skew", [299, -299, 300, -300, 0])
def test_timestamp_within_tolerance_accepted(key, jwks, skew):
    headers = sign_headers(key, timestamp=NOW + skew)
    assert verify_signature(headers, BODY, jwks, NOW).timestamp == int(NOW) + skew


@pytest.mark.parametrize("skew", [301, -301, 86400, -int(NOW)])
def test_timestamp_outside_tolerance_rejected(key, jwks, skew):
    headers = sign_headers(key, timestamp=NOW + skew)
    assert_rejected("stale_timestamp", headers, BODY, jwks)


def test_fractional_now_boundary(key, jwks):
    # 300.5 s old is outside ±300 even though int() truncation would say 300.
    headers = sign_headers(key, timestamp=NOW)
    assert_rejected("stale_timestamp", headers, BODY, jwks, now=NOW + 300.5)


def test_custom_tolerance(key, jwks):
    headers = sign_headers(key, timestamp=NOW - 60)
    with pytest.raises(WebhookSignatureError) as info:
        verify_signature(headers, BODY, jwks, NOW, tolerance_seconds=30)
    assert info.value.code == "stale_timestamp"


@pytest.mark.parametrize(
    "ts",
    [
        "1750000000.0",
        "abc",
        "-1750000000",
        "+1750000000",
        " 1750000000",
        "1_750_000_000",
        "1e9",
        "１７５０００００００",
    ],
)
def test_non_integer_timestamp_rejected(key, jwks, ts):
    # Signed with the bad value, so only the format check can reject it.
    headers = sign_headers(key, timestamp=ts)
    assert_rejected("bad_timestamp", headers, BODY, jwks)


def test_timestamp_text_is_signed_verbatim(key, jwks):
    # The message uses the header text, not a re-rendered int.
    padded = "0" + str(int(NOW))
    headers = sign_headers(key, timestamp=padded)
    assert verify_signature(headers, BODY, jwks, NOW).timestamp == int(NOW)


@pytest.mark.parametrize(
    "mutate",
    [lambda b: b + b" ", lambda b: b.replace(b", ", b",", 1), lambda b: b" " + b, lambda b: b[:-1]],
)
def test_body_changed_by_one_byte_rejected(key, jwks, mutate):
    headers = sign_headers(key)
    changed = mutate(BODY)
    assert changed != BODY
    assert_rejected("signature_mismatch", headers, changed, jwks)


@pytest.mark.parametrize("field", ["X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id"])
def test_tampered_signed_header_rejected(key, jwks, field):
    headers = sign_headers(key)
    headers[field] += "x"
    assert_rejected("signature_mismatch", headers, BODY, jwks)


def test_timestamp_is_signed(key, jwks):
    headers = sign_headers(key)
    headers["X-Fal-Webhook-Timestamp"] = str(int(NOW) + 1)
    assert_rejected("signature_mismatch", headers, BODY, jwks)


@pytest.mark.parametrize("transform", [str.lower, str.upper, lambda s: s.swapcase()])
def test_header_names_case_insensitive(key, jwks, transform):
    headers = {transform(k): v for k, v in sign_headers(key).items()}
    assert verify_signature(headers, BODY, jwks, NOW).request_id == REQUEST_ID


def test_werkzeug_style_headers(key, jwks):
    werkzeug = pytest.importorskip("werkzeug.datastructures")
    environ = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in sign_headers(key).items()}
    headers = werkzeug.EnvironHeaders(environ)
    assert verify_signature(headers, BODY, jwks, NOW).user_id == USER_ID


def test_unpadded_base64url_x_needing_padding(key):
    # 32 bytes -> 43 base64 chars + one "=": every Ed25519 key needs padding back.
    entry = jwk(key)
    assert len(entry["x"]) % 4 != 0 and not entry["x"].endswith("=")
    assert verify_signature(sign_headers(key), BODY, {"keys": [entry]}, NOW)


def test_base64url_alphabet_used():
    # Find a key whose encoding contains "-" or "_" so the urlsafe alphabet is exercised.
    for _ in range(200):
        key = Ed25519PrivateKey.generate()
        entry = jwk(key)
        if "-" in entry["x"] or "_" in entry["x"]:
            break
    else:  # pragma: no cover - probability ~ (1-2/64)^(43*200)
        pytest.fail("no key with url-safe characters generated")
    assert verify_signature(sign_headers(key), BODY, {"keys": [entry]}, NOW)


def test_padded_x_also_accepted(key):
    entry = jwk(key)
    entry["x"] += "="
    assert verify_signature(sign_headers(key), BODY, {"keys": [entry]}, NOW)


def test_malformed_and_foreign_entries_skipped(key):
    good = jwk(key)
    jwks = {
        "keys": [
            "not a dict",
            None,
            {"kty": "RSA", "n": "abc", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "x": good["x"]},  # right bytes, wrong curve
            {"kty": "EC", "crv": "Ed25519", "x": good["x"]},
            {"kty": "OKP", "crv": "Ed25519"},  # no x
            {"kty": "OKP", "crv": "Ed25519", "x": 12345},
            {"kty": "OKP", "crv": "Ed25519", "x": "!!!not base64!!!"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},  # 3 bytes
            {"kty": "OKP", "crv": "Ed25519", "x": "é"},
            good,
        ]
    }
    assert verify_signature(sign_headers(key), BODY, jwks, NOW).request_id == REQUEST_ID


def test_wrong_curve_entry_alone_is_not_trusted(key):
    good = jwk(key)
    jwks = {"keys": [{"kty": "OKP", "crv": "X25519", "x": good["x"]}]}
    assert_rejected("no_keys", sign_headers(key), BODY, jwks)


@pytest.mark.parametrize(
    "jwks", [{}, {"keys": []}, {"keys": "nope"}, [], None, {"keys": [{"kty": "RSA"}]}]
)
def test_no_usable_keys(key, jwks):
    assert_rejected("no_keys", sign_headers(key), BODY, jwks)


# --- JwksCache ------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeFetch:
    """Returns queued JWKS documents (or raises queued exceptions), recording calls."""

    def __init__(self, *responses) -> None:
        self.responses = list(responses)
        self.calls: list[str] = []

    def __call__(self, url: str) -> dict:
        self.calls.append(url)
        item = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(item, BaseException):
            raise item
        return item


URL = "https://example.test/jwks.json"


def test_cache_fetches_lazily_and_reuses(jwks):
    fetch, clock = FakeFetch(jwks), FakeClock()
    cache = JwksCache(URL, ttl_seconds=600, fetch=fetch, clock=clock)
    assert fetch.calls == []  # nothing at construction
    assert cache.get() is jwks
    clock.t += 599
    assert cache.get() is jwks
    assert fetch.calls == [URL]


def test_cache_refetches_after_ttl(jwks):
    newer = {"keys": [jwk(Ed25519PrivateKey.generate())]}
    fetch, clock = FakeFetch(jwks, newer), FakeClock()
    cache = JwksCache(URL, ttl_seconds=600, fetch=fetch, clock=clock)
    cache.get()
    clock.t += 600
    assert cache.get() is newer
    assert len(fetch.calls) == 2


def test_cache_short_ttl_not_held_back_by_failure_backoff(jwks):
    # The back-off after a *failed* fetch must not delay a normal short-ttl refetch.
    fetch, clock = FakeFetch(jwks), FakeClock()
    cache = JwksCache(URL, ttl_seconds=60, fetch=fetch, clock=clock)
    cache.get()
    clock.t += 60
    cache.get()
    assert len(fetch.calls) == 2


@pytest.mark.parametrize("ttl", [7 * 24 * 3600, float("inf"), 24 * 3600 + 1])
def test_cache_ttl_clamped_to_24h(jwks, ttl):
    fetch, clock = FakeFetch(jwks), FakeClock()
    cache = JwksCache(URL, ttl_seconds=ttl, fetch=fetch, clock=clock)
    assert cache.ttl_seconds == 24 * 3600
    cache.get()
    clock.t += 24 * 3600 - 1
    cache.get()
    assert len(fetch.calls) == 1
    clock.t += 1
    cache.get()
    assert len(fetch.calls) == 2


def test_cache_default_ttl_is_24h(jwks):
    assert JwksCache(URL, fetch=FakeFetch(jwks)).ttl_seconds == 24 * 3600


def test_cache_keeps_stale_copy_when_fetch_fails(jwks):
    fetch, clock = FakeFetch(jwks, RuntimeError("fal down")), FakeClock()
    cache = JwksCache(URL, ttl_seconds=600, fetch=fetch, clock=clock)
    cache.get()
    clock.t += 601
    assert cache.get() is jwks
    assert len(fetch.calls) == 2
    # Fal still down: don't block every request on a fetch; retry after the back-off.
    clock.t += 60
    assert cache.get() is jwks
    assert len(fetch.calls) == 2
    clock.t += 300
    assert cache.get() is jwks
    assert len(fetch.calls) == 3


def test_cache_ignores_fetched_document_without_usable_keys(jwks):
    fetch, clock = FakeFetch(jwks, {"keys": []}), FakeClock()
    cache = JwksCache(URL, ttl_seconds=600, fetch=fetch, clock=clock)
    cache.get()
    clock.t += 600
    assert cache.get() is jwks
    assert len(fetch.calls) == 2


def test_cache_without_copy_raises_unavailable_and_retries():
    fetch = FakeFetch(RuntimeError("down"))
    cache = JwksCache(URL, fetch=fetch, clock=FakeClock())
    for _ in range(2):
        with pytest.raises(JwksUnavailableError) as info:
            cache.get()
        assert isinstance(info.value, RetryableError)
        assert (info.value.status, info.value.code) == (503, "jwks_unavailable")
    # With nothing cached every request tries again: otherwise we'd reject all for minutes.
    assert len(fetch.calls) == 2


def test_cache_is_thread_safe_single_fetch(jwks):
    import threading

    started = threading.Event()
    release = threading.Event()
    calls = []

    def slow_fetch(url):
        calls.append(url)
        started.set()
        release.wait(5)
        return jwks

    cache = JwksCache(URL, fetch=slow_fetch, clock=FakeClock())
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get())) for _ in range(8)]
    for t in threads:
        t.start()
    assert started.wait(5)
    release.set()
    for t in threads:
        t.join(5)
    assert results == [jwks] * 8
    assert len(calls) == 1


# --- FalWebhookVerifier (rotation handling) ----------------------------------------


def make_verifier(fetch, clock):
    cache = JwksCache(URL, fetch=fetch, clock=clock)
    return FalWebhookVerifier(cache, clock=clock), cache


def test_verifier_valid(key, jwks):
    clock = FakeClock()
    verifier, _ = make_verifier(FakeFetch(jwks), clock)
    assert verifier.verify(sign_headers(key), BODY).request_id == REQUEST_ID


def test_verifier_uses_its_clock_for_staleness(key, jwks):
    clock = FakeClock()
    verifier, _ = make_verifier(FakeFetch(jwks), clock)
    headers = sign_headers(key)
    clock.t += 301
    with pytest.raises(WebhookSignatureError) as info:
        verifier.verify(headers, BODY)
    assert info.value.code == "stale_timestamp"


def test_verifier_refetches_on_mismatch_when_cache_old(jwks):
    rotated_key = Ed25519PrivateKey.generate()
    rotated = {"keys": [jwk(rotated_key)]}
    fetch, clock = FakeFetch(jwks, rotated), FakeClock()
    verifier, _ = make_verifier(fetch, clock)
    # Prime the cache with the old keys.
    assert len(fetch.calls) == 0
    verifier.jwks.get()
    clock.t += 301  # cache now older than 5 minutes
    result = verifier.verify(sign_headers(rotated_key, timestamp=clock.t), BODY)
    assert result.request_id == REQUEST_ID
    assert len(fetch.calls) == 2


def test_verifier_no_refetch_when_cache_young(jwks):
    rotated_key = Ed25519PrivateKey.generate()
    fetch, clock = FakeFetch(jwks, {"keys": [jwk(rotated_key)]}), FakeClock()
    verifier, _ = make_verifier(fetch, clock)
    verifier.jwks.get()
    clock.t += 299
    with pytest.raises(WebhookSignatureError) as info:
        verifier.verify(sign_headers(rotated_key, timestamp=clock.t), BODY)
    assert info.value.code == "signature_mismatch"
    assert len(fetch.calls) == 1


def test_verifier_refetches_at_most_once_per_5_minutes(key, jwks):
    forger = Ed25519PrivateKey.generate()
    fetch, clock = FakeFetch(jwks), FakeClock()
    verifier, _ = make_verifier(fetch, clock)
    verifier.jwks.get()
    clock.t += 600
    for _ in range(20):  # a burst of forged deliveries
        with pytest.raises(WebhookSignatureError) as info:
            verifier.verify(sign_headers(forger, timestamp=clock.t), BODY)
        assert info.value.code == "signature_mismatch"
        clock.t += 10
    assert len(fetch.calls) == 2  # initial + one forced refresh
    clock.t += 300 - 10
    with pytest.raises(WebhookSignatureError):
        verifier.verify(sign_headers(forger, timestamp=clock.t), BODY)
    assert len(fetch.calls) == 3
    # Genuine deliveries keep working throughout.
    assert verifier.verify(sign_headers(key, timestamp=clock.t), BODY)
    assert len(fetch.calls) == 3


def test_verifier_failed_forced_refetch_keeps_cache_and_counts(key, jwks):
    forger = Ed25519PrivateKey.generate()
    fetch, clock = FakeFetch(jwks, RuntimeError("down"), jwks), FakeClock()
    verifier, _ = make_verifier(fetch, clock)
    verifier.jwks.get()
    clock.t += 600
    for _ in range(3):
        with pytest.raises(WebhookSignatureError) as info:
            verifier.verify(sign_headers(forger, timestamp=clock.t), BODY)
        assert info.value.code == "signature_mismatch"
    assert len(fetch.calls) == 2
    assert verifier.verify(sign_headers(key, timestamp=clock.t), BODY)


@pytest.mark.parametrize("breakage", ["missing", "stale", "encoding"])
def test_verifier_does_not_refetch_for_non_mismatch_errors(key, jwks, breakage):
    fetch, clock = FakeFetch(jwks), FakeClock()
    verifier, _ = make_verifier(fetch, clock)
    verifier.jwks.get()
    clock.t += 3600
    headers = sign_headers(key, timestamp=clock.t)
    if breakage == "missing":
        del headers["X-Fal-Webhook-User-Id"]
    elif breakage == "stale":
        headers = sign_headers(key, timestamp=clock.t - 1000)
    else:
        headers["X-Fal-Webhook-Signature"] = "00"
    with pytest.raises(WebhookSignatureError):
        verifier.verify(headers, BODY)
    assert len(fetch.calls) == 1


def test_refresh_after_mismatch_returns_none_when_fetch_fails(jwks):
    fetch, clock = FakeFetch(jwks, RuntimeError("down")), FakeClock()
    cache = JwksCache(URL, fetch=fetch, clock=clock)
    used = cache.get()
    clock.t += 300
    assert cache.refresh_after_mismatch(used) is None
    assert len(fetch.calls) == 2
    assert cache.get() is jwks


def test_refresh_after_mismatch_returns_copy_replaced_by_other_thread(jwks):
    newer = {"keys": [jwk(Ed25519PrivateKey.generate())]}
    fetch, clock = FakeFetch(jwks, newer), FakeClock()
    cache = JwksCache(URL, ttl_seconds=600, fetch=fetch, clock=clock)
    used = cache.get()
    clock.t += 600
    assert cache.get() is newer  # replaced (here by the ttl) after `used` was read
    clock.t += 1
    assert cache.refresh_after_mismatch(used) is newer
    assert len(fetch.calls) == 2
