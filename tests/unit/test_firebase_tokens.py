"""Firebase ID tokens: verification, the principal they give, and the certificate cache.

Tokens are signed with keys made by infra/identity.py (the local stand-in for Firebase's
signer); certificates come from an injected fetch and time from an injected clock, so
nothing here touches the network.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from pathlib import Path

import pytest

from imagegen.auth import Principal, authenticate, hash_key
from imagegen.errors import AuthenticationError
from imagegen.firebase_auth import (
    MAX_CERTS_TTL_SECONDS,
    CertificateCache,
    CertificatesUnavailableError,
    FirebaseTokenVerifier,
    InvalidTokenError,
    TokenExpiredError,
    max_age_seconds,
)
from imagegen.repository import ApiKeyRecord
from imagegen.settings import Settings
from infra.identity import certs_document, ensure_identity, mint_token

PROJECT = "proj-test"


@pytest.fixture(scope="module")
def signer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_identity(tmp_path_factory.mktemp("identity"))


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_identity(tmp_path_factory.mktemp("other-identity"))


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Fetch:
    """Counts fetches; answers with `certs` and `max_age`, or raises `error`."""

    def __init__(self, certs: dict[str, str], max_age: float | None = 3600) -> None:
        self.certs, self.max_age = certs, max_age
        self.error: Exception | None = None
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, url: str) -> tuple[dict[str, str], float | None]:
        with self._lock:
            self.calls += 1
        time.sleep(0.001)  # widen any race between threads
        if self.error is not None:
            raise self.error
        return dict(self.certs), self.max_age


def _verifier(certs: dict[str, str], **kwargs) -> tuple[FirebaseTokenVerifier, Fetch]:
    fetch = Fetch(certs)
    cache = CertificateCache(
        "https://certs.invalid/", fetch=fetch, clock=kwargs.pop("certs_clock", Clock())
    )
    return FirebaseTokenVerifier(PROJECT, cache, **kwargs), fetch


@pytest.fixture
def verifier(signer_dir: Path) -> FirebaseTokenVerifier:
    return _verifier(certs_document(signer_dir))[0]


def _token(signer_dir: Path, uid: str = "uid-123", claims: dict | None = None, **kwargs) -> str:
    return mint_token(signer_dir, uid, claims, project=PROJECT, **kwargs)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- the principal -----------------------------------------------------------------------


def test_valid_token_gives_its_uid_as_a_plain_user(verifier, signer_dir) -> None:
    caller = verifier.principal(_token(signer_dir, "uid-123"))
    assert caller == Principal(user_id="uid-123", role="user", key_id="firebase")
    assert not caller.is_admin


@pytest.mark.parametrize("claims", [{"admin": True}, {"role": "admin"}])
def test_admin_custom_claim_gives_the_admin_role(verifier, signer_dir, claims) -> None:
    assert verifier.principal(_token(signer_dir, claims=claims)).role == "admin"


@pytest.mark.parametrize("claims", [{"admin": "true"}, {"admin": 1}, {"role": "Admin"}, {}])
def test_anything_but_the_exact_admin_claims_is_a_user(verifier, signer_dir, claims) -> None:
    assert verifier.principal(_token(signer_dir, claims=claims)).role == "user"


# -- refusals ----------------------------------------------------------------------------


def _refused(verifier: FirebaseTokenVerifier, token: str, code: str = "invalid_token") -> None:
    with pytest.raises(AuthenticationError) as caught:
        verifier.principal(token)
    assert caught.value.status == 401
    assert caught.value.code == code
    assert token not in json.dumps(caught.value.to_body())


def test_expired_token_is_token_expired(verifier, signer_dir) -> None:
    _refused(verifier, _token(signer_dir, expires_in=-600), "token_expired")


def test_expiry_follows_the_clock_with_a_little_skew(signer_dir) -> None:
    now = time.time()
    token = _token(signer_dir, expires_in=3600, issued_at=int(now))
    clock = Clock(now + 3600 + 30)  # within the 60 s skew
    verifier, _ = _verifier(certs_document(signer_dir), clock=clock)
    assert verifier.principal(token).user_id == "uid-123"
    clock.now = now + 3600 + 120
    with pytest.raises(TokenExpiredError):
        verifier.principal(token)


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-elses-project"},
        {"aud": [PROJECT]},
        {"iss": "https://securetoken.google.com/someone-elses-project"},
        {"iss": "https://accounts.google.com"},
        {"sub": ""},
        {"sub": 42},
        {"sub": "x" * 129},
        {"iat": None},
        {"exp": "tomorrow"},
        {"exp": float("nan")},
        {"exp": float("inf")},
        {"auth_time": time.time() + 3600},
    ],
    ids=lambda c: ",".join(f"{k}={str(v)[:20]}" for k, v in c.items()),
)
def test_claims_that_are_not_ours_are_invalid(verifier, signer_dir, claims) -> None:
    _refused(verifier, _token(signer_dir, claims=claims))


def test_token_issued_in_the_future_is_invalid(verifier, signer_dir) -> None:
    _refused(verifier, _token(signer_dir, issued_at=int(time.time()) + 3600))


def test_token_signed_by_another_key_under_our_kid_is_invalid(signer_dir, other_dir) -> None:
    # The certificate published under the token's kid is not the key that signed it.
    (kid,) = certs_document(signer_dir)
    verifier, _ = _verifier({kid: next(iter(certs_document(other_dir).values()))})
    _refused(verifier, _token(signer_dir))


def test_token_with_a_kid_nobody_published_is_invalid(verifier, other_dir) -> None:
    _refused(verifier, _token(other_dir))


def test_tampered_claims_break_the_signature(verifier, signer_dir) -> None:
    header, claims, signature = _token(signer_dir, claims={"admin": False}).split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    forged = ".".join((header, _b64({**payload, "admin": True}), signature))
    _refused(verifier, forged)


@pytest.mark.parametrize("alg", ["HS256", "none", "ES256", None])
def test_only_rs256_is_accepted(verifier, signer_dir, alg) -> None:
    _refused(verifier, _token(signer_dir, header={"alg": alg}))


@pytest.mark.parametrize(
    "token",
    [
        "a.b.c",
        "..",
        "eyJhbGciOiJSUzI1NiJ9..",
        _b64({"alg": "RS256", "kid": "k"}) + ".not base64!." + "c2ln",
        _b64([1, 2]) + "." + _b64({"sub": "x"}) + ".c2ln",
        base64.urlsafe_b64encode(b"\xff\xfe").decode() + "." + _b64({}) + ".c2ln",
        base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=") + "." + _b64({}) + ".c2ln",
        "x" * 9000 + ".y.z",
    ],
    ids=[
        "garbage",
        "empty-parts",
        "no-claims",
        "bad-base64",
        "header-not-object",
        "not-utf8",
        "deeply-nested",
        "too-long",
    ],
)
def test_malformed_tokens_are_invalid(verifier, token) -> None:
    _refused(verifier, token)


def test_refusals_never_log_the_token(verifier, signer_dir, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for token in (_token(signer_dir, expires_in=-600), _token(signer_dir, claims={"aud": "x"})):
        with pytest.raises(AuthenticationError):
            verifier.principal(token)
        assert token not in caplog.text
        assert token.split(".")[2] not in caplog.text


# -- which credential is which -----------------------------------------------------------


class FakeKeys:
    def __init__(self, keys: dict[str, ApiKeyRecord]) -> None:
        self.keys = {hash_key(k): v for k, v in keys.items()}
        self.lookups = 0

    def get(self, key_hash: str) -> ApiKeyRecord | None:
        self.lookups += 1
        return self.keys.get(key_hash)


class NoTokens:
    def principal(self, token: str) -> Principal:
        raise AssertionError("an API key must not reach the token verifier")


def test_non_jwt_bearer_values_still_go_to_the_api_keys() -> None:
    keys = FakeKeys({"igk_abc-DEF_123": ApiKeyRecord("k1", "user-1", "user", False)})
    caller = authenticate(keys, "Bearer igk_abc-DEF_123", NoTokens())
    assert caller == Principal("user-1", "user", "k1")
    for value in ("igk_wrong", "a.b", "x" * 5000):
        with pytest.raises(AuthenticationError) as caught:
            authenticate(keys, f"Bearer {value}", NoTokens())
        assert caught.value.code == "invalid_credentials"


def test_a_jwt_goes_to_the_token_verifier_not_the_api_keys(verifier, signer_dir) -> None:
    keys = FakeKeys({})
    caller = authenticate(keys, f"Bearer {_token(signer_dir, 'fb-user')}", verifier)
    assert caller.user_id == "fb-user" and keys.lookups == 0
    with pytest.raises(InvalidTokenError):
        authenticate(keys, "Bearer a.b.c", verifier)
    assert keys.lookups == 0


# -- the certificate cache ---------------------------------------------------------------


def test_certificates_are_fetched_once_for_many_verifications(signer_dir) -> None:
    clock = Clock()
    verifier, fetch = _verifier(certs_document(signer_dir), certs_clock=clock)
    tokens = [_token(signer_dir, f"user-{i}") for i in range(5)]
    for _ in range(20):
        for token in tokens:
            verifier.principal(token)
        clock.now += 60  # 20 minutes in all, well inside max-age
    assert fetch.calls == 1


def test_certificates_are_fetched_once_by_many_threads(signer_dir) -> None:
    verifier, fetch = _verifier(certs_document(signer_dir))
    token = _token(signer_dir)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(10):
                verifier.principal(token)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and fetch.calls == 1


@pytest.mark.parametrize(
    ("max_age", "refetched_after"),
    [(600, 600), (86_400, MAX_CERTS_TTL_SECONDS), (0, 60), (None, 300)],
)
def test_cache_lifetime_follows_max_age_within_bounds(max_age, refetched_after) -> None:
    clock = Clock()
    fetch = Fetch({"k": "cert"}, max_age)
    cache = CertificateCache("u", fetch=fetch, clock=clock)
    cache.get("k")
    clock.now += refetched_after - 1
    cache.get("k")
    assert fetch.calls == 1
    clock.now += 1
    cache.get("k")
    assert fetch.calls == 2


def test_unknown_kid_refetches_at_most_every_five_minutes() -> None:
    clock = Clock()
    fetch = Fetch({"k": "cert"})
    cache = CertificateCache("u", fetch=fetch, clock=clock)
    assert cache.get("k") == "cert"
    clock.now += 301
    assert cache.get("new") is None and fetch.calls == 2  # maybe Google rotated
    for _ in range(50):
        assert cache.get("made-up") is None
    assert fetch.calls == 2
    fetch.certs = {"k": "cert", "new": "cert2"}
    clock.now += 301
    assert cache.get("new") == "cert2" and fetch.calls == 3


def test_no_certificates_at_all_is_a_503_not_a_401() -> None:
    fetch = Fetch({})
    fetch.error = OSError("unreachable")
    cache = CertificateCache("u", fetch=fetch, clock=Clock())
    with pytest.raises(CertificatesUnavailableError) as caught:
        cache.get("k")
    assert caught.value.status == 503


def test_a_stale_copy_is_served_while_the_endpoint_is_down() -> None:
    clock = Clock()
    fetch = Fetch({"k": "cert"}, 600)
    cache = CertificateCache("u", fetch=fetch, clock=clock)
    cache.get("k")
    fetch.error = OSError("unreachable")
    clock.now += 601
    assert cache.get("k") == "cert" and fetch.calls == 2
    for _ in range(10):
        assert cache.get("k") == "cert"
    assert fetch.calls == 2  # not retried on every request
    clock.now += 301
    fetch.error = None
    fetch.certs = {"k": "cert-2"}
    assert cache.get("k") == "cert-2" and fetch.calls == 3


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("public, max-age=19994, must-revalidate, no-transform", 19994),
        ("max-age=0", 0),
        ('max-age="60"', 60),
        ("public, s-maxage=10", None),
        ("no-cache", None),
        (None, None),
    ],
)
def test_max_age_parsing(header, seconds) -> None:
    assert max_age_seconds(header) == seconds


def test_settings_default_the_firebase_project_to_the_gcp_project(monkeypatch) -> None:
    monkeypatch.delenv("FIREBASE_PROJECT_ID", raising=False)
    monkeypatch.delenv("FIREBASE_CERTS_URL", raising=False)
    monkeypatch.setenv("GCP_PROJECT", "p1")
    assert Settings.from_environment().firebase_project == "p1"
    monkeypatch.setenv("FIREBASE_PROJECT_ID", "p2")
    assert Settings.from_environment().firebase_project == "p2"
    assert Settings.from_environment().firebase_certs_url.startswith(
        "https://www.googleapis.com/robot/v1/"
    )
