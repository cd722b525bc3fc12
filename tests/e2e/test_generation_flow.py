"""Through HTTP on the running stack: request in, images in Cloud Storage out."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.support import Api

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("body", "size", "content_type", "fmt"),
    [
        (
            {"prompt": "a lighthouse at dusk", "numImages": 2, "imageSize": "square"},
            (512, 512),
            "image/jpeg",
            "JPEG",
        ),
        (
            {
                "prompt": "a red fox",
                "model": "flux-schnell",
                "image_size": {"width": 512, "height": 768},
                "output_format": "png",
                "seed": 42,
            },
            (512, 768),
            "image/png",
            "PNG",
        ),
    ],
)
def test_generation_completes_with_images_in_storage(
    api: Api, images_bucket, body, size, content_type, fmt
) -> None:
    accepted = api.create(body)
    assert accepted.status_code == 202, accepted.text
    created = accepted.json()
    assert created["status"] == "queued"
    assert accepted.headers["Location"] == f"/v1/images/generations/{created['id']}"

    record = api.wait(created["id"], {"completed", "failed"})
    assert record["status"] == "completed", record
    assert len(record["images"]) == body.get("numImages", 1)
    assert record["generationTime"] > 0
    assert record["completedAt"] >= record["createdAt"]

    for index, image in enumerate(record["images"]):
        assert image["path"].startswith(f"generations/{api.user_id}/{created['id']}/{index}.")
        assert (image["width"], image["height"], image["contentType"]) == (*size, content_type)
        blob = images_bucket.get_blob(image["path"])
        assert blob is not None and blob.content_type == content_type
        assert blob.size == image["fileSize"]
        downloaded = httpx.get(image["url"])
        assert downloaded.status_code == 200
        with Image.open(io.BytesIO(downloaded.content)) as decoded:
            assert decoded.format == fmt and decoded.size == size
    if "seed" in body:
        assert record["seed"] == body["seed"]
        assert record["parameters"]["seed"] == body["seed"]


def test_other_users_cannot_see_a_generation(api: Api, user: Api) -> None:
    created = api.create({"prompt": "private"}).json()
    response = user.get(created["id"])  # a fresh plain user, not the dev user who made it
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_fal_422_fails_the_generation_with_fals_reason(api: Api) -> None:
    # A per-request fault (a prompt marker): no other test's submit can consume it.
    created = api.create({"prompt": "rejected by fal [fault:submit_422]"}).json()
    record = api.wait(created["id"], {"completed", "failed"})
    assert record["status"] == "failed"
    assert record["error"]["code"] == "fal_rejected"
    assert "prompt" in record["error"]["message"]


def test_transient_fal_errors_are_retried(api: Api) -> None:
    created = api.create({"prompt": "fal hiccups [fault:submit_500=2]"}).json()
    record = api.wait(created["id"], {"completed", "failed"}, timeout=90)
    assert record["status"] == "completed", record
