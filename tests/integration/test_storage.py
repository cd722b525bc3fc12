"""The GCS store against the storage emulator: uploads, metadata and V4 signed URLs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from imagegen import clients, context

pytestmark = pytest.mark.integration


def test_upload_and_signed_url(stack_env) -> None:
    store = context.image_store()
    path = f"generations/u/{uuid.uuid4()}/0.png"
    store.upload(path, b"\x89PNG fake", "image/png", {"generationId": "g"})

    blob = clients.storage_client().bucket(store.bucket_name).get_blob(path)
    assert blob.content_type == "image/png"
    assert blob.metadata == {"generationId": "g"}

    url = store.signed_url(path)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == [str(24 * 3600)]
    signed_at = datetime.strptime(query["X-Goog-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs(signed_at - datetime.now(UTC)) < timedelta(minutes=1)
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"\x89PNG fake"


def test_signed_url_never_outlives_seven_days(stack_env) -> None:
    url = context.image_store().signed_url("generations/x.png", ttl_seconds=30 * 24 * 3600)
    assert parse_qs(urlsplit(url).query)["X-Goog-Expires"] == [str(7 * 24 * 3600)]


def test_reupload_overwrites_instead_of_duplicating(stack_env) -> None:
    store = context.image_store()
    prefix = f"generations/u/{uuid.uuid4()}/"
    store.upload(prefix + "0.jpg", b"one", "image/jpeg", {})
    store.upload(prefix + "0.jpg", b"two", "image/jpeg", {})
    assert store.list_paths(prefix) == [prefix + "0.jpg"]
