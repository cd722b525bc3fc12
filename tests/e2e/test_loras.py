"""LoRAs through the running stack: admins add them (by URL or by a signed resumable
upload to the LoRA bucket), everyone lists them, generations name them, and fal gets a
fresh 15-minute signed URL that the simulator really downloads."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support import LORAS, TERMINAL, Api, MakeUser, wait_sim_requests_for

pytestmark = pytest.mark.e2e

WEIGHTS = b"\x00safetensors-test-weights" * 100


@pytest.fixture(scope="module")
def admin(make_user: MakeUser) -> Api:
    return make_user("admin")


def put_weights(lora_bucket, name: str | None = None) -> str:
    """A weights file in the LoRA bucket; its path relative to the bucket."""
    path = name or f"people/{uuid.uuid4()}.safetensors"
    lora_bucket.blob(path).upload_from_string(WEIGHTS, content_type="application/octet-stream")
    return path


@pytest.fixture(scope="module")
def ada(admin: Api, lora_bucket) -> dict[str, Any]:
    """A ready LoRA by a path relative to LORA_BUCKET, with a trigger word."""
    response = admin.add_lora(
        {
            "personId": 7,
            "firstName": "Ada",
            "lastName": "Lovelace",
            "trigger": "adalora",
            "url": put_weights(lora_bucket),
            "defaultScale": 0.7,
        }
    )
    assert response.status_code == 201, response.text
    return response.json()


def assert_signed(url: str, bucket: str, path: str, ttl: int = 900) -> None:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == f"/{bucket}/{path}", url
    assert query["X-Goog-Expires"] == [str(ttl)], url
    assert query["X-Goog-Signature"][0], url
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"], url


# -- metadata: add, read, list, delete ----------------------------------------------------


def test_added_lora_is_ready_with_a_15_minute_signed_url(
    admin: Api, ada: dict[str, Any], stack_env: dict[str, str]
) -> None:
    assert ada["status"] == "ready"
    assert (ada["firstName"], ada["lastName"], ada["trigger"]) == ("Ada", "Lovelace", "adalora")
    assert ada["personId"] == 7
    assert ada["model"] == "flux-lora"
    assert ada["defaultScale"] == 0.7
    assert ada["url"].startswith("people/")
    assert_signed(ada["signedUrl"], stack_env["LORA_BUCKET"], ada["url"])
    downloaded = httpx.get(ada["signedUrl"])
    assert downloaded.status_code == 200 and downloaded.content == WEIGHTS

    fetched = admin.lora(ada["id"])
    assert fetched.status_code == 200
    volatile = ("signedUrl", "upload")
    assert {k: v for k, v in fetched.json().items() if k not in volatile} == {
        k: v for k, v in ada.items() if k not in volatile
    }


def test_plain_users_read_loras_but_cannot_add_or_delete(
    user: Api, ada: dict[str, Any], lora_bucket
) -> None:
    listed = user.http.get(LORAS, headers=user.headers)
    assert listed.status_code == 200
    assert ada["id"] in [lora["id"] for lora in listed.json()["loras"]]
    assert user.lora(ada["id"]).json()["trigger"] == "adalora"

    added = user.add_lora({"firstName": "Eve", "url": put_weights(lora_bucket)})
    assert added.status_code == 403, added.text
    assert added.json()["error"]["code"] == "forbidden"
    deleted = user.delete_lora(ada["id"])
    assert deleted.status_code == 403, deleted.text
    assert user.lora(ada["id"]).status_code == 200


def test_loras_need_an_api_key(api: Api, ada: dict[str, Any]) -> None:
    assert api.http.get(LORAS).status_code == 401
    assert api.http.get(f"{LORAS}/{ada['id']}").status_code == 401
    assert api.http.post(LORAS, json={"url": "a.safetensors"}).status_code == 401


def test_unknown_lora_is_404(admin: Api) -> None:
    for lora_id in (str(uuid.uuid4()), "not a valid id"):
        response = admin.lora(lora_id)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("url_of", "signed_path"),
    [
        (lambda bucket, path: f"gs://{bucket}/{path}", True),
        (lambda bucket, path: f"/{path}", True),
        (lambda bucket, path: "https://weights.example.test/ada.safetensors", False),
    ],
    ids=["gs-url", "leading-slash-path", "https-url"],
)
def test_the_three_url_forms(
    admin: Api, lora_bucket, stack_env: dict[str, str], url_of, signed_path: bool
) -> None:
    path = put_weights(lora_bucket)
    url = url_of(stack_env["LORA_BUCKET"], path)
    response = admin.add_lora({"firstName": "Form", "url": url})
    assert response.status_code == 201, response.text
    lora = response.json()
    assert response.headers["Location"] == f"{LORAS}/{lora['id']}"
    assert lora["url"] == url and lora["status"] == "ready"
    if signed_path:
        assert_signed(lora["signedUrl"], stack_env["LORA_BUCKET"], path)
        assert httpx.get(lora["signedUrl"]).content == WEIGHTS
    else:
        assert lora["signedUrl"] == url  # a full http(s) URL is used as is


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://host/a.safetensors"}, "url"),
        ({"url": "../other-bucket/a.safetensors"}, "url"),
        ({"url": "gs://bucket-only"}, "url"),
        ({"url": "https://"}, "url"),
        ({}, "body"),
        ({"url": "a.safetensors", "upload": {"fileName": "a.safetensors", "fileSize": 9}}, "body"),
        ({"upload": {"fileName": "a.ckpt", "fileSize": 10}}, "upload.fileName"),
        ({"upload": {"fileName": "a.safetensors", "fileSize": 2 * 1024**4}}, "upload.fileSize"),
        ({"upload": {"fileName": "a.safetensors", "fileSize": 0}}, "upload.fileSize"),
        ({"url": "a.safetensors", "model": "flux-dev"}, "model"),
        ({"url": "a.safetensors", "defaultScale": 5}, "defaultScale"),
        ({"url": "a.safetensors", "colour": "red"}, "colour"),
    ],
)
def test_bad_lora_bodies_are_422(admin: Api, body: dict[str, Any], field: str) -> None:
    before = len(admin.http.get(LORAS, headers=admin.headers).json()["loras"])
    response = admin.add_lora({"firstName": "Bad", **body})
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert field in fields, fields
    assert len(admin.http.get(LORAS, headers=admin.headers).json()["loras"]) == before


def test_delete_removes_the_lora_and_only_files_it_uploaded(
    admin: Api, user: Api, lora_bucket, stack_env: dict[str, str]
) -> None:
    outside = put_weights(lora_bucket)
    linked = admin.add_lora({"firstName": "Linked", "url": outside}).json()
    assert admin.delete_lora(linked["id"]).status_code == 204
    assert admin.lora(linked["id"]).status_code == 404
    assert admin.delete_lora(linked["id"]).status_code == 204  # again: still 204
    # A LoRA pointing at a file it did not upload leaves that file alone.
    assert lora_bucket.get_blob(outside) is not None

    uploaded = admin.add_lora(
        {"firstName": "Uploaded", "upload": {"fileName": "u.safetensors", "fileSize": 10}}
    ).json()
    put_weights(lora_bucket, uploaded["url"])  # as if uploaded
    assert admin.delete_lora(uploaded["id"]).status_code == 204
    assert lora_bucket.get_blob(uploaded["url"]) is None
    response = user.create(
        {"prompt": "gone", "model": "flux-lora", "loras": [{"id": uploaded["id"]}]}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "loras.0.id"


# -- upload ------------------------------------------------------------------------------


def _start_upload(admin: Api, name: str, size: int = len(WEIGHTS)) -> dict[str, Any]:
    response = admin.add_lora(
        {
            "firstName": name,
            "trigger": f"{name.lower()}lora",
            "upload": {"fileName": f"{name.lower()}.safetensors", "fileSize": size},
        }
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_upload_answer_carries_a_resumable_upload_session(
    admin: Api, user: Api, stack_env: dict[str, str]
) -> None:
    lora = _start_upload(admin, "Grace")
    assert lora["status"] == "pending_upload"
    assert lora["signedUrl"] is None
    assert lora["url"] == f"loras/{lora['id']}.safetensors"
    upload = lora["upload"]
    assert upload["method"] == "PUT"
    assert upload["fileSize"] == len(WEIGHTS)
    assert upload["expiresInSeconds"] > 0
    assert upload["maxBytes"] >= len(WEIGHTS)
    # A session for this object in the LoRA bucket (the session URI is the capability).
    session = urlsplit(upload["url"])
    query = parse_qs(session.query)
    assert query["uploadType"] == ["resumable"]
    assert query["upload_id"][0]
    assert f"/b/{stack_env['LORA_BUCKET']}/o" in session.path
    assert admin.lora(lora["id"]).json()["upload"] is None  # shown once, on creation

    # Not usable until its file is there.
    refused = user.create({"prompt": "x", "model": "flux-lora", "loras": [{"id": lora["id"]}]})
    assert refused.status_code == 422, refused.text
    [detail] = refused.json()["error"]["details"]
    assert (detail["field"], detail["type"]) == ("loras.0.id", "lora_not_ready")


def test_pending_upload_becomes_ready_once_its_object_exists(admin: Api, lora_bucket) -> None:
    lora = admin.add_lora(
        {"firstName": "Pending", "upload": {"fileName": "p.safetensors", "fileSize": 10}}
    ).json()
    assert admin.lora(lora["id"]).json()["status"] == "pending_upload"
    put_weights(lora_bucket, lora["url"])
    ready = admin.lora(lora["id"]).json()
    assert ready["status"] == "ready"
    assert httpx.get(ready["signedUrl"]).content == WEIGHTS


def test_uploaded_lora_is_ready_and_fal_downloads_it(
    admin: Api, user: Api, fal_sim: httpx.Client, lora_bucket, stack_env: dict[str, str]
) -> None:
    """The documented flow against the storage emulator: PUT the file to the session URL
    with the returned headers; the LoRA is then ready, and a generation naming it runs
    with the uploaded bytes."""
    lora = _start_upload(admin, "Upload")
    upload = lora["upload"]
    put = httpx.request(upload["method"], upload["url"], headers=upload["headers"], content=WEIGHTS)
    assert put.status_code in (200, 201), put.text
    assert lora_bucket.blob(lora["url"]).download_as_bytes() == WEIGHTS

    ready = admin.lora(lora["id"]).json()
    assert ready["status"] == "ready"
    assert_signed(ready["signedUrl"], stack_env["LORA_BUCKET"], lora["url"])
    assert httpx.get(ready["signedUrl"]).content == WEIGHTS
    listed = user.http.get(LORAS, headers=user.headers).json()["loras"]
    assert [entry["status"] for entry in listed if entry["id"] == lora["id"]] == ["ready"]

    generation = user.create(
        {"prompt": "a portrait", "model": "flux-lora", "loras": [{"id": lora["id"]}]}
    )
    assert generation.status_code == 202, generation.text
    record = user.wait(generation.json()["id"], TERMINAL)
    assert record["status"] == "completed", record
    assert record["effectivePrompt"] == "uploadlora, a portrait"
    [request] = wait_sim_requests_for(fal_sim, record["id"])
    assert_signed(request["arguments"]["loras"][0]["path"], stack_env["LORA_BUCKET"], lora["url"])
    assert [(f["status"], f["bytes"]) for f in request["input_fetches"]] == [(200, len(WEIGHTS))]


def test_upload_in_chunks_with_content_range(admin: Api, lora_bucket) -> None:
    lora = _start_upload(admin, "Chunked")
    upload = lora["upload"]
    half = len(WEIGHTS) // 2
    headers = dict(upload["headers"])
    first = httpx.put(
        upload["url"],
        headers={**headers, "Content-Range": f"bytes 0-{half - 1}/{len(WEIGHTS)}"},
        content=WEIGHTS[:half],
    )
    assert first.status_code == 308, first.text  # "resume incomplete"
    assert admin.lora(lora["id"]).json()["status"] == "pending_upload"
    rest = httpx.put(
        upload["url"],
        headers={**headers, "Content-Range": f"bytes {half}-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"},
        content=WEIGHTS[half:],
    )
    assert rest.status_code in (200, 201), rest.text
    assert lora_bucket.blob(lora["url"]).download_as_bytes() == WEIGHTS
    assert admin.lora(lora["id"]).json()["status"] == "ready"


# -- generations naming LoRAs ---------------------------------------------------------------


def test_generation_with_a_lora_gets_a_fresh_signed_url_that_fal_downloads(
    user: Api, ada: dict[str, Any], fal_sim: httpx.Client, stack_env: dict[str, str]
) -> None:
    accepted = user.create(
        {"prompt": "a portrait in oils", "model": "flux-lora", "loras": [{"id": ada["id"]}]}
    )
    assert accepted.status_code == 202, accepted.text
    generation_id = accepted.json()["id"]
    record = user.wait(generation_id, TERMINAL)
    assert record["status"] == "completed", record
    assert record["prompt"] == "a portrait in oils"
    assert record["effectivePrompt"] == "adalora, a portrait in oils"
    assert record["loras"] == [{"id": ada["id"], "scale": 0.7}]  # the LoRA's default scale
    assert len(record["images"]) == 1

    [request] = wait_sim_requests_for(fal_sim, generation_id)
    assert request["app"] == "fal-ai/flux-lora"
    arguments = request["arguments"]
    assert arguments["prompt"] == "adalora, a portrait in oils"
    [lora] = arguments["loras"]
    assert lora["scale"] == 0.7
    assert_signed(lora["path"], stack_env["LORA_BUCKET"], ada["url"])
    # Minted by the dispatcher, not the one GET /v1/loras showed earlier.
    assert lora["path"] != ada["signedUrl"]
    assert [(f["kind"], f["status"], f["bytes"]) for f in request["input_fetches"]] == [
        ("lora", 200, len(WEIGHTS))
    ]
    assert request["input_fetches"][0]["url"].endswith(f"/{stack_env['LORA_BUCKET']}/{ada['url']}")


def test_seed_000_lora_id_and_a_prompt_that_has_the_trigger(
    user: Api, ada: dict[str, Any], fal_sim: httpx.Client
) -> None:
    accepted = user.create(
        {"prompt": "AdaLora riding a bike", "model": "flux-lora", "loraId": ada["id"]}
    )
    assert accepted.status_code == 202, accepted.text
    generation_id = accepted.json()["id"]
    record = user.wait(generation_id, TERMINAL)
    assert record["status"] == "completed", record
    assert record["effectivePrompt"] == record["prompt"] == "AdaLora riding a bike"
    assert record["loras"] == [{"id": ada["id"], "scale": 0.7}]
    [request] = wait_sim_requests_for(fal_sim, generation_id)
    assert request["arguments"]["prompt"] == "AdaLora riding a bike"
    assert [f["status"] for f in request["input_fetches"]] == [200]


def test_two_loras_with_scales_and_a_plain_https_one(
    admin: Api, user: Api, ada: dict[str, Any], lora_bucket, fal_sim, stack_env
) -> None:
    # A full http(s) URL is handed to fal as is: here the emulator's public object URL.
    path = put_weights(lora_bucket)
    direct_url = f"{stack_env['STORAGE_EMULATOR_HOST']}/{stack_env['LORA_BUCKET']}/{path}"
    direct = admin.add_lora({"firstName": "Direct", "trigger": "directlora", "url": direct_url})
    assert direct.status_code == 201, direct.text
    direct_id = direct.json()["id"]

    accepted = user.create(
        {
            "prompt": "two people",
            "model": "flux-lora",
            "loras": [{"id": ada["id"], "scale": 1.2}, {"id": direct_id, "scale": 0.4}],
        }
    )
    assert accepted.status_code == 202, accepted.text
    generation_id = accepted.json()["id"]
    record = user.wait(generation_id, TERMINAL)
    assert record["status"] == "completed", record
    assert record["effectivePrompt"] == "adalora, directlora, two people"
    [request] = wait_sim_requests_for(fal_sim, generation_id)
    first, second = request["arguments"]["loras"]
    assert_signed(first["path"], stack_env["LORA_BUCKET"], ada["url"])
    assert (first["scale"], second["scale"]) == (1.2, 0.4)
    assert second["path"] == direct_url
    assert [f["status"] for f in request["input_fetches"]] == [200, 200]


def test_sdxl_takes_an_optional_lora(
    admin: Api, user: Api, lora_bucket, fal_sim, stack_env
) -> None:
    created = admin.add_lora({"firstName": "Xl", "model": "sdxl", "url": put_weights(lora_bucket)})
    assert created.status_code == 201, created.text
    lora = created.json()
    accepted = user.create({"prompt": "xl", "model": "sdxl", "loras": [{"id": lora["id"]}]})
    assert accepted.status_code == 202, accepted.text
    record = user.wait(accepted.json()["id"], TERMINAL)
    assert record["status"] == "completed", record
    [request] = wait_sim_requests_for(fal_sim, record["id"])
    assert request["app"] == "fal-ai/fast-sdxl"
    assert_signed(request["arguments"]["loras"][0]["path"], stack_env["LORA_BUCKET"], lora["url"])
    assert [f["status"] for f in request["input_fetches"]] == [200]

    # ...and a LoRA made for sdxl is refused by flux-lora.
    refused = user.create({"prompt": "x", "model": "flux-lora", "loras": [{"id": lora["id"]}]})
    assert refused.status_code == 422
    [detail] = refused.json()["error"]["details"]
    assert (detail["field"], detail["type"]) == ("loras.0.id", "incompatible_lora")


@pytest.mark.parametrize(
    ("extra", "field", "kind"),
    [
        ({"loras": [{"id": "no-such-lora"}]}, "loras.0.id", "unknown_lora"),
        ({"loraId": "no-such-lora"}, "loras.0.id", "unknown_lora"),
        ({"loraId": 12345}, "loras.0.id", "unknown_lora"),
        ({"loras": [{"id": "<ada>", "scale": 4.5}]}, "loras.0.scale", "out_of_range"),
        ({"loras": [{"id": "<ada>"}], "loraId": "<ada>"}, "loraId", "conflict"),
    ],
)
def test_unusable_lora_choices_are_422(
    user: Api, ada: dict[str, Any], extra: dict[str, Any], field: str, kind: str
) -> None:
    body: dict[str, Any] = {"prompt": "x", "model": "flux-lora", **extra}
    if "loras" in body:
        body["loras"] = [
            {**c, "id": ada["id"] if c["id"] == "<ada>" else c["id"]} for c in body["loras"]
        ]
    if body.get("loraId") == "<ada>":
        body["loraId"] = ada["id"]
    response = user.create(body)
    assert response.status_code == 422, response.text
    details = {d["field"]: d["type"] for d in response.json()["error"]["details"]}
    assert details.get(field) == kind, details
    assert field in response.json()["error"]["message"]
    assert user.history_total() == 0
