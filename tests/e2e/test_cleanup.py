"""The cleanup function over HTTP against the whole stack: retention, stuck generations,
orphaned objects, concurrent sweeps and the time budget.

Records and objects are made directly through the Firestore and Cloud Storage clients, with
timestamps in the past where a test needs them old. Objects cannot be back-dated (the
storage service sets their creation time), so the orphan tests also run a second instance of
the function with ORPHAN_MIN_AGE_MINUTES=0; the stack's own (60 minutes) shows that young
orphans are kept.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from imagegen import clients, context
from imagegen.accept import build_generation
from imagegen.auth import Principal
from imagegen.models.records import (
    Generation,
    GenerationStatus,
    PartStatus,
    StoredImage,
)
from imagegen.storage import image_path, thumbnail_path
from imagegen.validation import parse_generation_request
from infra.processes import Managed, free_port, http_ok, wait_until
from infra.stack import ROOT, LocalStack
from tests.support import Api

pytestmark = pytest.mark.e2e

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


# -- helpers ------------------------------------------------------------------------------


def sweep(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.post(url, json=body if body is not None else {}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def assert_no_errors(report: dict[str, Any]) -> None:
    for phase in ("retention", "stuck", "orphans"):
        assert report[phase]["errors"] == 0, report


def new_generation(
    user_id: str,
    *,
    created_at: datetime,
    status: GenerationStatus = GenerationStatus.COMPLETED,
    images: int = 0,
    prompt: str = "a red fox",
) -> Generation:
    body = f'{{"prompt": "{prompt}", "numImages": {max(images, 1)}, "model": "flux-schnell"}}'
    generation = build_generation(
        parse_generation_request(body.encode()), Principal(user_id, "user", "k"), created_at
    )
    generation.status = status
    part = generation.parts[0]
    if status is GenerationStatus.SUBMITTED:
        part.status = PartStatus.SUBMITTED
        part.fal_request_id = f"req-{uuid.uuid4()}"
        part.submitted_at = created_at
        generation.submitted_at = created_at
    elif status is GenerationStatus.COMPLETED:
        part.status = PartStatus.COMPLETED
        part.fal_request_id = f"req-{uuid.uuid4()}"
        generation.completed_at = created_at
        generation.images = [
            StoredImage(
                index=i,
                bucket="imagegen-images",
                path=image_path(user_id, generation.id, i, "jpg"),
                thumbnail_path=thumbnail_path(user_id, generation.id, i),
                width=64,
                height=64,
                content_type="image/jpeg",
                file_size=1,
            )
            for i in range(images)
        ]
    return generation


def store(generation: Generation, images_bucket=None) -> Generation:  # noqa: ANN001
    """Writes the record (and its fal lookups) as the services would, and uploads the
    objects its images name."""
    db = clients.firestore_client()
    db.collection("generations").document(generation.id).set(generation.model_dump(mode="python"))
    for part in generation.parts:
        if part.fal_request_id:
            db.collection("falRequests").document(part.fal_request_id).set(
                {"generation_id": generation.id, "part_index": part.index}
            )
    if images_bucket is not None:
        for image in generation.images:
            upload(images_bucket, image.path)
            upload(images_bucket, image.thumbnail_path)
    return generation


def upload(bucket, path: str) -> None:  # noqa: ANN001
    bucket.blob(path).upload_from_string(b"\xff\xd8 not really a jpeg", content_type="image/jpeg")


def exists(bucket, path: str) -> bool:  # noqa: ANN001
    return bucket.blob(path).exists()


def record(generation_id: str) -> Generation | None:
    return context.generations().get(generation_id)


def set_updated_at(generation_id: str, when: datetime) -> None:
    clients.firestore_client().collection("generations").document(generation_id).update(
        {"updated_at": when}
    )


def lookup_exists(request_id: str) -> bool:
    return clients.firestore_client().collection("falRequests").document(request_id).get().exists


def paths_of(generation: Generation) -> list[str]:
    return [p for i in generation.images for p in (i.path, i.thumbnail_path) if p]


@pytest.fixture
def user_id() -> str:
    return f"cleanup-{uuid.uuid4()}"


@pytest.fixture(scope="module")
def cleanup_url(stack: LocalStack, stack_env: dict[str, str]) -> str:
    return stack_env["CLEANUP_URL"]


@pytest.fixture(scope="module")
def eager_cleanup_url(stack: LocalStack, stack_env: dict[str, str]) -> Iterator[str]:
    """A second instance of the cleanup function for which every orphan is old enough."""
    port = free_port()
    argv = stack.function_argv("cleanup")
    argv[argv.index("--port") + 1] = str(port)
    env = {**os.environ, **stack.env, "ORPHAN_MIN_AGE_MINUTES": "0", "PYTHONUNBUFFERED": "1"}
    managed = Managed(
        "cleanup-eager", argv, env, stack.state_dir / "logs" / "cleanup-eager.log", ROOT
    )
    managed.start()
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, "cleanup", managed)
        yield f"http://127.0.0.1:{port}/"
    finally:
        managed.stop()


# -- retention ----------------------------------------------------------------------------


def test_retention_deletes_old_generations_with_their_objects_and_keeps_recent_ones(
    cleanup_url: str, images_bucket, user_id: str
) -> None:
    now = datetime.now(UTC)
    old = store(new_generation(user_id, created_at=now - 31 * DAY, images=2), images_bucket)
    old_running = store(
        new_generation(user_id, created_at=now - 45 * DAY, status=GenerationStatus.SUBMITTED)
    )
    # An object a late delivery left under the running one's prefix.
    upload(images_bucket, image_path(user_id, old_running.id, 0, "png"))
    recent = store(new_generation(user_id, created_at=now - 29 * DAY, images=1), images_bucket)

    report = sweep(cleanup_url)

    assert report["finished"] is True and report["stoppedIn"] is None, report
    assert_no_errors(report)
    assert report["retention"]["deleted"] >= 2 and report["retention"]["endedFirst"] >= 1
    assert record(old.id) is None and record(old_running.id) is None
    assert not any(exists(images_bucket, p) for p in paths_of(old))
    assert not exists(images_bucket, image_path(user_id, old_running.id, 0, "png"))
    for part in (*old.parts, *old_running.parts):
        assert not lookup_exists(part.fal_request_id)
    # Retention writes no tombstone: that is for a user's own repeated DELETE.
    db = clients.firestore_client()
    assert not db.collection("deletedGenerations").document(old.id).get().exists

    kept = record(recent.id)
    assert kept is not None and kept.status is GenerationStatus.COMPLETED
    assert all(exists(images_bucket, p) for p in paths_of(recent))
    assert lookup_exists(recent.parts[0].fal_request_id)


# -- stuck --------------------------------------------------------------------------------


def test_a_stuck_queued_generation_whose_message_was_lost_is_republished_and_completes(
    cleanup_url: str, user: Api
) -> None:
    # Accepted two hours ago, but its Pub/Sub message never arrived (decision 0001).
    generation = store(
        new_generation(
            user.user_id,
            created_at=datetime.now(UTC) - 2 * HOUR,
            status=GenerationStatus.QUEUED,
            prompt="a lost message",
        )
    )

    report = sweep(cleanup_url)
    assert report["stuck"]["republished"] >= 1, report
    assert_no_errors(report)

    done = user.wait(generation.id, {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done
    assert record(generation.id).republished_at is not None


def test_a_stuck_queued_generation_is_republished_then_failed_on_a_later_sweep(
    cleanup_url: str, stack: LocalStack, user_id: str
) -> None:
    # Eventarc is down: the re-published message does not get through either.
    stack.processes["relay"].stop()
    try:
        generation = store(
            new_generation(
                user_id, created_at=datetime.now(UTC) - 3 * HOUR, status=GenerationStatus.QUEUED
            )
        )
        first = sweep(cleanup_url)
        assert first["stuck"]["republished"] >= 1, first
        after_first = record(generation.id)
        assert after_first.status is GenerationStatus.QUEUED
        assert after_first.republished_at is not None

        # A sweep right after leaves it alone: the new message has a whole window.
        assert record(generation.id).updated_at == after_first.updated_at
        sweep(cleanup_url)
        assert record(generation.id).status is GenerationStatus.QUEUED

        # A window later it is still queued.
        set_updated_at(generation.id, datetime.now(UTC) - 2 * HOUR)
        later = sweep(cleanup_url)
        assert later["stuck"]["failed"] >= 1, later
        assert_no_errors(later)
        failed = record(generation.id)
        assert failed.status is GenerationStatus.FAILED
        assert failed.error.code == "stuck" and "minutes" in failed.error.message
        assert failed.parts[0].status is PartStatus.FAILED
    finally:
        stack.start_relay("relay")
    # The message finally delivered finds the generation ended and changes nothing.
    assert record(generation.id).status is GenerationStatus.FAILED


def test_a_stuck_submitted_generation_is_failed_with_fal_timeout(
    cleanup_url: str, user_id: str
) -> None:
    now = datetime.now(UTC)
    stuck = store(
        new_generation(user_id, created_at=now - 2 * HOUR, status=GenerationStatus.SUBMITTED)
    )
    moving = store(new_generation(user_id, created_at=now, status=GenerationStatus.SUBMITTED))

    report = sweep(cleanup_url)

    assert report["stuck"]["failed"] >= 1, report
    assert_no_errors(report)
    failed = record(stuck.id)
    assert failed.status is GenerationStatus.FAILED and failed.error.code == "fal_timeout"
    assert failed.parts[0].status is PartStatus.FAILED
    assert record(moving.id).status is GenerationStatus.SUBMITTED


# -- orphans ------------------------------------------------------------------------------


def test_orphaned_objects_are_deleted_once_old_enough_and_referenced_ones_kept(
    cleanup_url: str, eager_cleanup_url: str, images_bucket, user_id: str
) -> None:
    referenced = store(
        new_generation(user_id, created_at=datetime.now(UTC), images=1), images_bucket
    )
    running = store(
        new_generation(user_id, created_at=datetime.now(UTC), status=GenerationStatus.SUBMITTED)
    )
    gone = str(uuid.uuid4())
    orphans = [
        image_path(user_id, gone, 0, "jpg"),  # its record was deleted
        thumbnail_path(user_id, gone, 0),
        image_path(user_id, referenced.id, 5, "jpg"),  # an ended record does not name it
    ]
    kept = [
        *paths_of(referenced),
        image_path(user_id, running.id, 0, "jpg"),  # a running generation's: may be recorded
        f"generations/{user_id}/stray.jpg",  # outside the layout: not ours to judge
        f"generations/{user_id}/{gone}/nested/0.jpg",
    ]
    for path in orphans + kept:
        if not exists(images_bucket, path):
            upload(images_bucket, path)

    # The stack's function waits an hour: every one of these is young.
    young = sweep(cleanup_url)
    assert young["finished"] is True and young["orphans"]["young"] >= len(orphans)
    assert all(exists(images_bucket, p) for p in orphans + kept)

    # For this one every object is old enough.
    report = sweep(eager_cleanup_url)
    assert report["finished"] is True, report
    assert_no_errors(report)
    assert report["orphans"]["deleted"] >= len(orphans)
    assert report["orphans"]["malformed"] >= 2
    assert not any(exists(images_bucket, p) for p in orphans)
    assert all(exists(images_bucket, p) for p in kept)
    # A full pass leaves no cursor: the next sweep starts from the beginning.
    state = clients.firestore_client().collection("cleanupState").document("orphans").get()
    assert not state.exists


# -- concurrency and the time budget ------------------------------------------------------


def test_two_concurrent_sweeps_reach_the_same_end_state_without_errors(
    cleanup_url: str, eager_cleanup_url: str, images_bucket, user_id: str
) -> None:
    now = datetime.now(UTC)
    expired = [
        store(new_generation(user_id, created_at=now - (60 + i) * DAY, images=1), images_bucket)
        for i in range(4)
    ]
    stuck = [
        store(new_generation(user_id, created_at=now - 2 * HOUR, status=GenerationStatus.SUBMITTED))
        for _ in range(3)
    ]
    orphan = image_path(user_id, str(uuid.uuid4()), 0, "jpg")
    upload(images_bucket, orphan)

    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(sweep, [cleanup_url, eager_cleanup_url]))

    for report in reports:
        assert_no_errors(report)
        assert report["finished"] or report["skipped"], report
    assert all(record(g.id) is None for g in expired)
    assert not any(exists(images_bucket, p) for g in expired for p in paths_of(g))
    for generation in stuck:
        assert record(generation.id).error.code == "fal_timeout"
    # Whichever ran the orphan phase: run the eager one again to settle it, then nothing
    # is left for anyone.
    sweep(eager_cleanup_url)
    assert not exists(images_bucket, orphan)
    again = sweep(eager_cleanup_url)
    assert again["retention"]["deleted"] == again["stuck"]["failed"] == 0, again
    assert again["orphans"]["deleted"] == 0, again
    lease = clients.firestore_client().collection("cleanupState").document("lease").get()
    assert not lease.exists


def test_a_tiny_time_budget_stops_early_and_the_next_sweep_finishes(
    cleanup_url: str, images_bucket, user_id: str
) -> None:
    now = datetime.now(UTC)
    # Older than anything else in the stack, so they come first in the retention order.
    expired = [
        store(new_generation(user_id, created_at=now - (900 + i) * DAY, images=1), images_bucket)
        for i in range(3)
    ]

    first = sweep(cleanup_url, {"timeBudgetSeconds": 0, "batchSize": 1})
    assert first["finished"] is False and first["stoppedIn"] == "retention", first
    assert first["retention"]["deleted"] == 1 and first["retention"]["left"] >= 2
    remaining = [g for g in expired if record(g.id) is not None]
    assert [g.id for g in remaining] == [g.id for g in expired[:2]]  # the oldest went first

    second = sweep(cleanup_url)
    assert second["finished"] is True, second
    assert_no_errors(second)
    assert all(record(g.id) is None for g in expired)
    assert not any(exists(images_bucket, p) for g in expired for p in paths_of(g))


def test_the_cleanup_function_refuses_what_it_cannot_use(cleanup_url: str) -> None:
    response = httpx.post(cleanup_url, json={"batchSize": 0, "unknown": 1}, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    response = httpx.post(cleanup_url, content=b"{not json", timeout=30)
    assert response.status_code == 400
    assert httpx.get(cleanup_url.rstrip("/") + "/healthz", timeout=10).status_code == 200


def test_an_empty_body_runs_a_default_sweep(cleanup_url: str) -> None:
    # Cloud Scheduler sends no body (or an application/octet-stream one) unless told to.
    response = httpx.post(
        cleanup_url, content=b"", headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["finished"] is True
