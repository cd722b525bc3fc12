"""Every bad input gets a clear 4xx JSON error, never a 5xx, and creates nothing."""

from __future__ import annotations

import pytest

from tests.support import Api, assert_error

pytestmark = pytest.mark.e2e
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b"[1, 2]", 400, "malformed_json"),
        (b'"prompt"', 400, "malformed_json"),
        (b'{"prompt": ""}', 422, "validation_error"),
        (b'{"prompt": "x", "numImages": 9}', 422, "validation_error"),
        (b'{"prompt": "x", "bogus": 1}', 422, "validation_error"),
        (b'{"prompt": "x", "model": "dall-e"}', 422, "validation_error"),
        (b'{"prompt": "x", "imageSize": {"width": 300, "height": 512}}', 422, "validation_error"),
        (b'{"prompt": "x", "model": "flux-schnell", "steps": 13}', 422, "validation_error"),
        (b'{"prompt": "x", "seed": -5}', 422, "validation_error"),
        (b'{"prompt": "\xff\xfe"}', 400, "malformed_json"),
        (b'{"prompt": "x", "numImages": 1e400}', 422, "validation_error"),
    ],
)
def test_bad_bodies(api: Api, raw: bytes, status: int, code: str) -> None:
    response = api.http.post("/v1/images/generations", content=raw, headers={**api.headers, **JSON})
    assert_error(response, status, code)


def test_validation_error_names_the_fields(api: Api) -> None:
    response = api.create({"prompt": "", "numImages": 0, "guidance_scale": 99})
    error = assert_error(response, 422, "validation_error")
    assert {d["field"] for d in error["details"]} == {"prompt", "numImages", "guidanceScale"}
    response = api.create({"prompt": "x", "guidance_scale": 99})
    assert [d["field"] for d in assert_error(response, 422)["details"]] == ["guidanceScale"]


def test_oversized_body_is_413(api: Api) -> None:
    body = b'{"prompt": "' + b"x" * 70_000 + b'"}'
    assert_error(
        api.http.post("/v1/images/generations", content=body, headers={**api.headers, **JSON}),
        413,
        "payload_too_large",
    )


def test_wrong_content_type_is_415(api: Api) -> None:
    response = api.http.post(
        "/v1/images/generations",
        content=b"prompt=x",
        headers={**api.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_credentials"),
        ("Basic abc", "invalid_credentials"),
        ("Bearer", "invalid_credentials"),
        ("Bearer igk_wrong", "invalid_credentials"),
        ("Bearer " + "x" * 5000, "invalid_credentials"),
    ],
)
def test_authentication_is_required(api: Api, authorization: str | None, code: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    assert_error(
        api.http.post("/v1/images/generations", json={"prompt": "x"}, headers=headers), 401, code
    )
    assert_error(api.http.get("/v1/images/generations/abc", headers=headers), 401, code)


@pytest.mark.parametrize("generation_id", ["does-not-exist", "..", "a" * 129, "__x__", "-x", "%00"])
def test_unknown_generation_is_404(api: Api, generation_id: str) -> None:
    assert_error(api.http.get(f"/v1/images/generations/{generation_id}", headers=api.headers), 404)


def test_an_encoded_slash_is_not_an_id(api: Api) -> None:
    assert_error(api.http.get("/v1/images/generations/%2F", headers=api.headers), 404)


def test_unknown_route_and_method(api: Api) -> None:
    assert_error(api.http.get("/v2/nothing", headers=api.headers), 404, "not_found")
    response = api.http.delete("/healthz")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"]


def test_health(api: Api) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
