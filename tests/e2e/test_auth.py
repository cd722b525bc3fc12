"""Authentication through the running stack: Firebase ID tokens signed by the stack's local
identity (infra/identity.py), and the admin endpoints that issue and revoke API keys."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from infra.identity import mint_token
from infra.stack import PROJECT, LocalStack
from tests.support import Api, assert_error

pytestmark = pytest.mark.e2e
KEYS_PATH = "/v1/admin/apiKeys"
PROMPT = {"prompt": "a lighthouse at dusk", "imageSize": "square"}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.fixture(scope="module")
def http(api: Api) -> httpx.Client:
    return api.http


@pytest.fixture(scope="module")
def admin_headers(stack: LocalStack) -> dict[str, str]:
    return _bearer(stack.env["DEV_API_KEY"])  # the dev key is an admin's


@pytest.fixture(scope="module")
def user_key(stack: LocalStack) -> str:
    return stack.create_api_key(_unique("plain"), "user")


# -- Firebase ID tokens ------------------------------------------------------------------


def test_firebase_user_creates_and_reads_its_own_generation(stack: LocalStack, http) -> None:
    uid = _unique("fb-user")
    token = stack.mint_token(uid)
    created = http.post("/v1/images/generations", json=PROMPT, headers=_bearer(token))
    assert created.status_code == 202, created.text
    generation_id = created.json()["id"]

    record = http.get(f"/v1/images/generations/{generation_id}", headers=_bearer(token))
    assert record.status_code == 200, record.text
    assert record.json()["id"] == generation_id

    # Another Firebase user (a fresh token for another uid) cannot see it.
    stranger = _bearer(stack.mint_token(_unique("fb-other")))
    assert_error(http.get(f"/v1/images/generations/{generation_id}", headers=stranger), 404)


def test_forged_and_stale_tokens_are_refused(stack: LocalStack, http, tmp_path: Path) -> None:
    def status_of(token: str) -> httpx.Response:
        return http.post("/v1/images/generations", json=PROMPT, headers=_bearer(token))

    forged = mint_token(tmp_path / "not-the-stacks-key", _unique("mallory"), project=PROJECT)
    assert_error(status_of(forged), 401, "invalid_token")

    header, claims, _ = stack.mint_token(_unique("u")).split(".")
    _, _, other_signature = stack.mint_token(_unique("u"), {"admin": True}).split(".")
    assert_error(status_of(f"{header}.{claims}.{other_signature}"), 401, "invalid_token")

    assert_error(status_of(stack.mint_token(_unique("u"), expires_in=-600)), 401, "token_expired")
    wrong_audience = stack.mint_token(_unique("u"), {"aud": "another-project"})
    assert_error(status_of(wrong_audience), 401, "invalid_token")
    wrong_issuer = stack.mint_token(
        _unique("u"), {"iss": "https://securetoken.google.com/another-project"}
    )
    assert_error(status_of(wrong_issuer), 401, "invalid_token")
    assert_error(status_of("not.a.jwt"), 401, "invalid_token")


def test_token_admin_claim_opens_the_admin_endpoints(stack: LocalStack, http) -> None:
    admin_token = stack.mint_token(_unique("fb-admin"), {"admin": True})
    created = http.post(
        KEYS_PATH, json={"userId": _unique("issued-by-token")}, headers=_bearer(admin_token)
    )
    assert created.status_code == 201, created.text

    plain_token = stack.mint_token(_unique("fb-plain"))
    assert_error(
        http.post(KEYS_PATH, json={"userId": "x"}, headers=_bearer(plain_token)), 403, "forbidden"
    )


# -- the admin endpoints -----------------------------------------------------------------


def test_admin_issues_a_key_that_works_and_revokes_it(http, admin_headers) -> None:
    user_id = _unique("new-user")
    created = http.post(KEYS_PATH, json={"userId": user_id, "role": "user"}, headers=admin_headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"apiKey", "keyId", "userId", "role", "createdAt"}
    assert body["userId"] == user_id and body["role"] == "user"
    assert body["apiKey"].startswith("igk_")
    assert created.headers["Location"] == f"{KEYS_PATH}/{body['keyId']}"
    new_key = _bearer(body["apiKey"])

    generation = http.post("/v1/images/generations", json=PROMPT, headers=new_key)
    assert generation.status_code == 202, generation.text

    # Listed without the secret.
    listed = http.get(KEYS_PATH, params={"userId": user_id}, headers=admin_headers)
    assert listed.status_code == 200, listed.text
    (entry,) = listed.json()["apiKeys"]
    assert entry["keyId"] == body["keyId"] and entry["revoked"] is False
    assert body["apiKey"] not in listed.text

    revoke_path = f"{KEYS_PATH}/{body['keyId']}"
    revoked = http.delete(revoke_path, headers=admin_headers)
    assert revoked.status_code == 204 and revoked.content == b""
    # At once: no cache stands between revocation and authentication.
    assert_error(http.post("/v1/images/generations", json=PROMPT, headers=new_key), 401)
    assert_error(
        http.get(f"/v1/images/generations/{generation.json()['id']}", headers=new_key), 401
    )

    assert http.delete(revoke_path, headers=admin_headers).status_code == 204  # idempotent
    listed = http.get(KEYS_PATH, params={"user_id": user_id}, headers=admin_headers)
    (entry,) = listed.json()["apiKeys"]
    assert entry["revoked"] is True and entry["revokedAt"]


def test_admin_can_issue_an_admin_key_in_snake_case(http, admin_headers) -> None:
    created = http.post(
        KEYS_PATH,
        json={"user_id": _unique("ops@example.com"), "role": "admin"},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "admin"
    # The new admin key reaches the admin endpoints.
    listed = http.get(
        KEYS_PATH, params={"userId": "nobody"}, headers=_bearer(created.json()["apiKey"])
    )
    assert listed.status_code == 200 and listed.json() == {"apiKeys": []}


def test_unknown_key_id_is_404(http, admin_headers) -> None:
    assert_error(
        http.delete(f"{KEYS_PATH}/0123456789abcdef", headers=admin_headers), 404, "not_found"
    )
    assert_error(http.delete(f"{KEYS_PATH}/not%20an%20id", headers=admin_headers), 404, "not_found")


def test_plain_user_gets_403_from_every_admin_endpoint(http, user_key) -> None:
    headers = _bearer(user_key)
    assert_error(http.post(KEYS_PATH, json={"userId": "me", "role": "admin"}, headers=headers), 403)
    assert_error(http.post(KEYS_PATH, content=b"{bad", headers=headers), 403)  # before the body
    assert_error(http.get(KEYS_PATH, params={"userId": "me"}, headers=headers), 403)
    assert_error(http.delete(f"{KEYS_PATH}/0123456789abcdef", headers=headers), 403)


def test_admin_endpoints_need_credentials(http) -> None:
    assert_error(http.post(KEYS_PATH, json={"userId": "x"}), 401, "missing_credentials")
    assert_error(http.delete(f"{KEYS_PATH}/0123456789abcdef"), 401, "missing_credentials")


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"userId": "has space", "role": "root"}, {"userId", "role"}),
        ({"role": "user"}, {"userId"}),
        ({"userId": ""}, {"userId"}),
        ({"userId": "x" * 129}, {"userId"}),
        ({"userId": 42}, {"userId"}),
        ({"userId": "ok", "scopes": ["all"]}, {"scopes"}),
    ],
)
def test_bad_bodies_are_422_naming_the_field(http, admin_headers, body, fields) -> None:
    error = assert_error(
        http.post(KEYS_PATH, json=body, headers=admin_headers), 422, "validation_error"
    )
    assert {d["field"] for d in error["details"]} == fields


def test_malformed_body_and_missing_user_id_query(http, admin_headers) -> None:
    json_type = {"Content-Type": "application/json"}
    assert_error(
        http.post(KEYS_PATH, content=b"{bad", headers={**admin_headers, **json_type}),
        400,
        "malformed_json",
    )
    error = assert_error(http.get(KEYS_PATH, headers=admin_headers), 422)
    assert [d["field"] for d in error["details"]] == ["userId"]
