"""`imagegen.ingest` against the Firestore emulator and the real repository, with images
served by a fake fetcher and stored in a fake store (so every upload is counted).

What ingest guarantees: a part's images are stored by one delivery only, and only while it
holds the part's claim; duplicates, busy parts, unknown and ended generations store nothing;
a failed copy or record frees the claim; the normal path reads the record only through the
claim (no read before it).
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from PIL import Image

from imagegen import context
from imagegen.accept import build_generation
from imagegen.auth import Principal
from imagegen.errors import RetryableError, UpstreamRejectedError
from imagegen.image_fetch import FetchedImage, ImageFetcher
from imagegen.ingest import Collaborators, Outcome, ingest
from imagegen.models.events import FalWebhook
from imagegen.models.records import Generation, GenerationStatus, PartStatus
from imagegen.repository import GenerationRepository
from imagegen.storage import ImageStore
from imagegen.validation import parse_generation_request
from imagegen.webhook_url import PartRef

pytestmark = pytest.mark.integration


def _jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = _jpeg()


class FakeFetcher:
    """Serves JPEG for any URL; `fail` maps a URL to the error its fetch raises; while
    `gate` is clear, every fetch waits for it."""

    def __init__(self) -> None:
        self.fetched: list[str] = []
        self.fail: dict[str, Exception] = {}
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def fetch(self, url: str) -> FetchedImage:
        assert self.gate.wait(30)
        with self._lock:
            self.fetched.append(url)
        if url in self.fail:
            raise self.fail[url]
        return FetchedImage(JPEG, "image/jpeg", 64, 48)


class FakeStore:
    bucket_name = "images"

    def __init__(self) -> None:
        self.uploads: Counter[str] = Counter()
        self.content_types: dict[str, str] = {}
        self.deleted: list[str] = []
        self._lock = threading.Lock()

    def upload(self, path: str, data: bytes, content_type: str, metadata: dict[str, str]) -> None:
        assert data and metadata["userId"] == "user-a"
        with self._lock:
            self.uploads[path] += 1
            self.content_types[path] = content_type

    def delete(self, paths: list[str]) -> None:
        with self._lock:
            self.deleted += paths


class CountingRepo:
    """The real repository, counting plain reads; `fail_complete` makes the next
    complete_part raise."""

    def __init__(self, repo: GenerationRepository) -> None:
        self._repo = repo
        self.gets = 0
        self.fail_complete = False

    def get(self, generation_id: str) -> Generation | None:
        self.gets += 1
        return self._repo.get(generation_id)

    def complete_part(self, *args: Any, **kwargs: Any) -> Generation | None:
        if self.fail_complete:
            self.fail_complete = False
            raise RetryableError("Busy: please retry", code="contention")
        return self._repo.complete_part(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)


class Harness:
    def __init__(self) -> None:
        self.repo = CountingRepo(context.generations())
        self.store = FakeStore()
        self.fetcher = FakeFetcher()
        self.collaborators = Collaborators(
            cast(GenerationRepository, self.repo),
            cast(ImageStore, self.store),
            cast(ImageFetcher, self.fetcher),
        )

    def generation(self, num_images: int = 5) -> Generation:
        body = f'{{"prompt": "a red fox", "numImages": {num_images}}}'.encode()
        generation = build_generation(
            parse_generation_request(body), Principal("user-a", "user", "k"), datetime.now(UTC)
        )
        context.generations().create(generation)
        return generation

    def deliver(
        self,
        generation_id: str,
        part: int,
        images: int,
        *,
        prefetch: bool = True,
        **webhook: Any,
    ) -> Outcome:
        payload = {
            "images": [
                {"url": f"https://fal.example/{generation_id}/{part}/{i}.jpg"}
                for i in range(images)
            ],
            "seed": 7,
        }
        fields: dict[str, Any] = {"request_id": f"req-{generation_id}-{part}", "status": "OK"}
        fields["payload"] = payload
        fields.update(webhook)
        return ingest(
            FalWebhook(**fields),
            PartRef(generation_id, part),
            self.collaborators,
            prefetch=prefetch,
        )

    def record(self, generation_id: str) -> Generation:
        found = context.generations().get(generation_id)
        assert found is not None
        return found


@pytest.fixture
def h(stack_env) -> Harness:
    return Harness()


def _wait_for(check, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("prefetch", [True, False])
def test_both_parts_at_once_store_every_image_once_without_a_read_first(
    h: Harness, prefetch: bool
) -> None:
    generation = h.generation(5)
    assert [(p.first_image, p.num_images) for p in generation.parts] == [(0, 4), (4, 1)]
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(
            pool.map(
                lambda part: h.deliver(generation.id, part[0], part[1], prefetch=prefetch),
                [(0, 4), (1, 1)],
            )
        )
    assert outcomes == [Outcome.COMPLETED_PART, Outcome.COMPLETED_PART]
    done = h.record(generation.id)
    assert done.status is GenerationStatus.COMPLETED
    assert [image.index for image in done.images] == [0, 1, 2, 3, 4]
    stored = {image.path for image in done.images} | {i.thumbnail_path for i in done.images}
    assert set(h.store.uploads) == stored and set(h.store.uploads.values()) == {1}
    assert all(h.store.content_types[i.thumbnail_path] == "image/webp" for i in done.images)
    assert done.parts[0].fal_request_id == f"req-{generation.id}-0"
    # The claim's own read refuses what must be refused: no read of the record before it.
    assert h.repo.gets == 0


def test_a_duplicate_of_a_completed_part_stores_nothing(h: Harness) -> None:
    generation = h.generation(1)
    assert h.deliver(generation.id, 0, 1) is Outcome.COMPLETED_PART
    done = h.record(generation.id)
    uploads = h.store.uploads.copy()
    assert h.deliver(generation.id, 0, 1) is Outcome.DUPLICATE
    assert h.store.uploads == uploads
    assert h.record(generation.id) == done


def test_a_second_delivery_of_a_part_being_copied_stores_nothing(h: Harness) -> None:
    generation = h.generation(3)
    h.fetcher.gate.clear()  # the first delivery claims the part, then waits in its downloads
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(h.deliver, generation.id, 0, 3)
        _wait_for(lambda: h.record(generation.id).parts[0].status is PartStatus.INGESTING)
        # Its own downloads are held too: it answers at once, and never uploads.
        assert h.deliver(generation.id, 0, 3) is Outcome.IN_PROGRESS
        assert h.deliver(generation.id, 0, 3, prefetch=False) is Outcome.IN_PROGRESS
        h.fetcher.gate.set()
        assert first.result(30) is Outcome.COMPLETED_PART
    done = h.record(generation.id)
    assert len(h.store.uploads) == 6 and set(h.store.uploads.values()) == {1}
    time.sleep(0.2)  # the abandoned downloads end on their own: still nothing stored
    assert len(h.store.uploads) == 6 and set(h.store.uploads.values()) == {1}
    assert h.record(generation.id) == done


def test_two_deliveries_of_one_part_at_once_store_it_once(h: Harness) -> None:
    generation = h.generation(4)
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: h.deliver(generation.id, 0, 4), range(4)))
    assert outcomes.count(Outcome.COMPLETED_PART) == 1
    assert set(outcomes) <= {Outcome.COMPLETED_PART, Outcome.IN_PROGRESS, Outcome.DUPLICATE}
    assert len(h.store.uploads) == 8 and set(h.store.uploads.values()) == {1}
    assert h.record(generation.id).status is GenerationStatus.COMPLETED


def test_an_unknown_generation_or_part_stores_nothing(h: Harness) -> None:
    assert h.deliver(str(uuid.uuid4()), 0, 1) is Outcome.UNKNOWN
    generation = h.generation(1)
    assert h.deliver(generation.id, 3, 1) is Outcome.UNKNOWN
    assert not h.store.uploads
    assert h.record(generation.id) == generation


def test_an_ended_generation_takes_no_images(h: Harness) -> None:
    generation = h.generation(2)
    canceled = context.generations().cancel(generation.id, datetime.now(UTC), lambda g: True)
    assert canceled is not None
    assert h.deliver(generation.id, 0, 2) is Outcome.DUPLICATE
    assert not h.store.uploads
    assert h.record(generation.id) == canceled


def test_the_wrong_number_of_images_fails_the_generation(h: Harness) -> None:
    generation = h.generation(2)
    assert h.deliver(generation.id, 0, 3) is Outcome.FAILED
    failed = h.record(generation.id)
    assert failed.status is GenerationStatus.FAILED
    assert failed.error is not None and failed.error.code == "wrong_image_count"
    assert not h.store.uploads


def test_an_unreadable_image_fails_the_generation(h: Harness) -> None:
    generation = h.generation(2)
    bad = f"https://fal.example/{generation.id}/0/1.jpg"
    h.fetcher.fail[bad] = UpstreamRejectedError("unreadable", code="invalid_image")
    assert h.deliver(generation.id, 0, 2) is Outcome.FAILED
    failed = h.record(generation.id)
    assert failed.status is GenerationStatus.FAILED
    assert failed.error is not None and failed.error.code == "invalid_image"


@pytest.mark.parametrize("prefetch", [True, False])
def test_a_failed_download_frees_the_part_for_the_next_delivery(h: Harness, prefetch: bool) -> None:
    generation = h.generation(2)
    bad = f"https://fal.example/{generation.id}/0/1.jpg"
    h.fetcher.fail[bad] = RetryableError("image download failed", code="image_unavailable")
    with pytest.raises(RetryableError):
        h.deliver(generation.id, 0, 2, prefetch=prefetch)
    part = h.record(generation.id).parts[0]
    assert part.status is PartStatus.SUBMITTED and part.claim_id is None
    del h.fetcher.fail[bad]
    assert h.deliver(generation.id, 0, 2, prefetch=prefetch) is Outcome.COMPLETED_PART
    done = h.record(generation.id)
    assert done.status is GenerationStatus.COMPLETED and len(done.images) == 2


def test_a_failed_record_frees_the_part_for_the_next_delivery(h: Harness) -> None:
    generation = h.generation(1)
    h.repo.fail_complete = True
    with pytest.raises(RetryableError):
        h.deliver(generation.id, 0, 1)
    part = h.record(generation.id).parts[0]
    assert part.status is PartStatus.SUBMITTED and part.claim_id is None
    assert h.deliver(generation.id, 0, 1) is Outcome.COMPLETED_PART
    assert h.record(generation.id).status is GenerationStatus.COMPLETED


def test_error_deliveries_fail_a_running_generation_and_not_a_completed_one(h: Harness) -> None:
    generation = h.generation(1)
    assert h.deliver(generation.id, 0, 0, status="ERROR", error="boom") is Outcome.FAILED
    failed = h.record(generation.id)
    assert failed.error is not None and failed.error.code == "fal_error"

    done = h.generation(1)
    assert h.deliver(done.id, 0, 1) is Outcome.COMPLETED_PART
    assert h.deliver(done.id, 0, 0, status="ERROR", error="late") is Outcome.DUPLICATE
    assert h.deliver(done.id, 0, 0) is Outcome.DUPLICATE  # a result without images
    assert h.record(done.id).status is GenerationStatus.COMPLETED

    empty = h.generation(1)
    assert h.deliver(empty.id, 0, 0) is Outcome.FAILED
    no_images = h.record(empty.id)
    assert no_images.error is not None and no_images.error.code == "no_images"
    assert h.deliver(str(uuid.uuid4()), 0, 0, status="ERROR") is Outcome.UNKNOWN
