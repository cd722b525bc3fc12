"""The seeds' own endpoints keep working, as thin aliases over the v1 API."""

from __future__ import annotations

import uuid

import pytest

from tests.support import Api

pytestmark = pytest.mark.e2e


@pytest.fixture
def lora(api: Api, lora_bucket) -> dict:
    """A LoRA whose file is in the LoRA bucket, named by a path relative to it (seed 000)."""
    path = f"test/{uuid.uuid4()}.safetensors"
    lora_bucket.blob(path).upload_from_string(
        b"fake lora weights", content_type="application/octet-stream"
    )
    response = api.add_lora(
        {
            "firstName": "John",
            "lastName": "Doe",
            "trigger": "johndoe",
            "url": path,
            "personId": 101,
            "modelVersion": "v1.0",
        }
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_get_lora_models_is_seed_000s_list(api: Api, lora: dict) -> None:
    response = api.http.get("/api/get-lora-models", headers=api.headers)
    assert response.status_code == 200
    listed = {item["id"]: item for item in response.json()}
    item = listed[lora["id"]]
    for key in (
        "id",
        "personId",
        "url",
        "signedUrl",
        "firstName",
        "lastName",
        "trigger",
        "model",
        "modelVersion",
    ):
        assert key in item
    assert item["personId"] == 101 and item["model"] == "flux-lora"
    assert "X-Goog-Signature" in item["signedUrl"] and "X-Goog-Expires=900" in item["signedUrl"]


def test_generate_image_waits_and_answers_in_seed_000s_shape(api: Api, lora: dict) -> None:
    response = api.http.post(
        "/api/generate-image",
        headers=api.headers,
        json={
            "prompt": "A portrait in a haunted house.",
            "loraId": lora["id"],
            "num_images": 2,
            "image_size": {"width": 512, "height": 768},
            "guidance_scale": 4,
        },
        timeout=90,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"images", "seed", "prompt"}
    assert body["prompt"] == "A portrait in a haunted house."
    assert len(body["images"]) == 2
    for image in body["images"]:
        assert set(image) == {"url", "fullUrl", "bucket", "path", "width", "height", "content_type"}
        assert (image["width"], image["height"], image["content_type"]) == (512, 768, "image/jpeg")
        assert image["fullUrl"] == f"{image['bucket']}/{image['path']}"
    record = api.get(body["id"]).json()
    assert record["effectivePrompt"] == "johndoe, A portrait in a haunted house."
    assert record["model"] == "flux-lora"


def test_seed_001_history_get_and_delete(user: Api) -> None:
    created = user.create(
        {
            "prompt": "A beautiful sunset over mountains",
            "negative_prompt": "blurry, low quality",
            "model": "sdxl",
            "width": 1024,
            "height": 1024,
            "steps": 30,
            "cfg_scale": 7.5,
            "seed": -1,
            "num_images": 1,
        }
    )
    assert created.status_code == 202, created.text
    generation_id = created.json()["id"]
    user.wait(generation_id, {"completed"})

    history = user.http.get("/api/images/history/", headers=user.headers).json()
    assert (history["total"], history["page"], history["perPage"]) == (1, 1, 20)
    item = history["images"][0]
    assert set(item) == {"id", "prompt", "imageUrl", "thumbnailUrl", "modelUsed", "createdAt"}
    assert item["id"] == generation_id and item["modelUsed"] == "sdxl"
    assert item["imageUrl"] and item["thumbnailUrl"]

    one = user.http.get(f"/api/images/{generation_id}/", headers=user.headers).json()
    assert one["parameters"]["steps"] == 30 and one["parameters"]["cfgScale"] == 7.5
    assert one["negativePrompt"] == "blurry, low quality"
    # fal's random seed; past 2**53 - 1 it travels as a decimal string.
    assert str(one["parameters"]["seed"]).isdigit()
    assert (one["width"], one["height"]) == (1024, 1024) and one["generationTime"] > 0

    assert (
        user.http.delete(f"/api/images/{generation_id}/", headers=user.headers).status_code == 204
    )
    assert user.http.get(f"/api/images/{generation_id}/", headers=user.headers).status_code == 404
    assert user.http.get("/api/images/history/", headers=user.headers).json()["total"] == 0


def test_seed_001_sampler_is_refused_by_name(api: Api) -> None:
    response = api.create({"prompt": "x", "model": "sdxl", "sampler": "Euler"})
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["error"]["details"]] == ["sampler"]


def test_openapi_document_is_served(api: Api) -> None:
    response = api.http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert "/v1/images/generations" in document["paths"]
    assert "/api/generate-image" in document["paths"]
