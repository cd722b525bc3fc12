"""The Firestore repository against the real emulator and client."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from imagegen import context
from imagegen.accept import build_generation
from imagegen.auth import Principal, authenticate, issue_api_key
from imagegen.errors import AuthenticationError
from imagegen.models.records import (
    ErrorInfo,
    GenerationStatus,
    PartStatus,
    StoredImage,
)
from imagegen.validation import parse_generation_request

pytestmark = pytest.mark.integration
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _new_generation(body: bytes = b'{"prompt": "a red fox", "numImages": 2}'):
    generation = build_generation(
        parse_generation_request(body), Principal("user-a", "user", "k"), NOW
    )
    context.generations().create(generation)
    return generation


def _image(generation, index: int) -> StoredImage:
    return StoredImage(
        index=index,
        bucket="b",
        path=f"p/{index}.jpg",
        width=64,
        height=64,
        content_type="image/jpeg",
        file_size=10,
        seed="7",
    )


def test_create_and_get_round_trip(stack_env) -> None:
    generation = _new_generation(b'{"prompt": "a red fox", "seed": 123456789012345678901234567890}')
    loaded = context.generations().get(generation.id)
    assert loaded == generation
    assert loaded.parameters["seed"] == "123456789012345678901234567890"
    assert loaded.parts[0].seed == "123456789012345678901234567890"


def test_missing_generation_is_none(stack_env) -> None:
    assert context.generations().get(str(uuid.uuid4())) is None


def test_submission_then_completion(stack_env) -> None:
    repo = context.generations()
    generation = _new_generation()
    submitted = repo.record_submission(generation.id, 0, f"req-{generation.id}", NOW)
    assert submitted.status is GenerationStatus.SUBMITTED
    assert repo.find_fal_request(f"req-{generation.id}").generation_id == generation.id
    # A second submission of the same part is refused: exactly one fal request per part.
    assert repo.record_submission(generation.id, 0, "another", NOW) is None

    done = repo.complete_part(
        generation.id,
        0,
        f"req-{generation.id}",
        [_image(generation, 1), _image(generation, 0)],
        "7",
        {"inference": 1},
        NOW,
    )
    assert done.status is GenerationStatus.COMPLETED
    assert [image.index for image in done.images] == [0, 1]
    assert done.parts[0].status is PartStatus.COMPLETED
    assert done.seed == "7"
    # A duplicate completion changes nothing.
    assert repo.complete_part(generation.id, 0, "x", [_image(generation, 5)], "9", {}, NOW) is None
    assert repo.get(generation.id) == done


def test_fail_is_terminal(stack_env) -> None:
    repo = context.generations()
    generation = _new_generation()
    failed = repo.fail(generation.id, ErrorInfo(code="fal_rejected", message="no"), NOW)
    assert failed.status is GenerationStatus.FAILED
    assert failed.error.code == "fal_rejected"
    assert repo.fail(generation.id, ErrorInfo(code="again", message="x"), NOW) is None
    assert repo.complete_part(generation.id, 0, "r", [_image(generation, 0)], None, {}, NOW) is None
    assert repo.get(generation.id).error.code == "fal_rejected"


def test_api_keys_are_stored_hashed(stack_env) -> None:
    keys = context.api_keys()
    api_key, record = issue_api_key(keys, "user-k", "user", NOW)
    principal = authenticate(keys, f"Bearer {api_key}")
    assert principal.user_id == "user-k" and principal.key_id == record.key_id
    from google.cloud import firestore

    stored = [
        d.id
        for d in firestore.Client(project=stack_env["GCP_PROJECT"]).collection("apiKeys").stream()
    ]
    assert api_key not in stored
    with pytest.raises(AuthenticationError):
        authenticate(keys, f"Bearer {api_key}x")
