"""Turning a verified fal result into stored images and a completed generation.

Delivery is at least once: a duplicate finds its part already completed and changes
nothing; object paths are deterministic, so even two deliveries racing past that check
overwrite the same objects rather than add copies, and only one of them commits.

A result with images goes straight to the part's ingest claim: the claim's own fresh read
refuses a terminal generation or a completed part, so no separate read comes first (error
deliveries, and a claim that finds no record to refuse, still read the record). Nothing is
stored before the claim is held. With `prefetch` (fal's webhook; the watchdog, unless the
record it read shows a copy under way) the images are downloaded and their thumbnails made
while the claim is being written, so the copy starts with the uploads; a delivery that then
does not get the claim stores nothing, and its downloads are dropped.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import pydantic

from imagegen.errors import UpstreamRejectedError
from imagegen.fal_gateway import describe_fal_detail
from imagegen.lifecycle import IngestClaim, Lease
from imagegen.models.events import FalOutput, FalWebhook
from imagegen.models.records import ErrorInfo, Generation, GenerationPart, PartStatus, StoredImage
from imagegen.repository import GenerationRepository
from imagegen.storage import ImageStore, image_path, thumbnail_path
from imagegen.thumbnails import make_thumbnail
from imagegen.webhook_url import PartRef

if TYPE_CHECKING:
    from imagegen.image_fetch import ImageFetcher

log = logging.getLogger(__name__)
MAX_PARALLEL_COPIES = 5


class Outcome(StrEnum):
    COMPLETED_PART = "completed_part"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    IN_PROGRESS = "in_progress"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Collaborators:
    repo: GenerationRepository
    store: ImageStore
    fetcher: ImageFetcher


def _locate(webhook: FalWebhook, ref: PartRef | None, c: Collaborators) -> PartRef | None:
    if ref is not None:
        return ref
    found = c.repo.find_fal_request(webhook.request_id)
    return PartRef(found.generation_id, found.part_index) if found else None


def _fail(c: Collaborators, generation: Generation, code: str, message: str) -> Outcome:
    c.repo.fail(generation.id, ErrorInfo(code=code, message=message), datetime.now(UTC))
    log.warning("generation failed", extra={"generationId": generation.id, "code": code})
    return Outcome.FAILED


class _PartCopy:
    """Copies one part's images, each on its own thread (up to MAX_PARALLEL_COPIES): an image
    is downloaded and its thumbnail made as soon as the copy is created, then waits for
    `store` (the claim is held: upload both) or `abandon` (it is not: nothing is stored)."""

    def __init__(self, c: Collaborators, output: FalOutput) -> None:
        self._c = c
        self._output = output
        self._seed = None if output.seed is None else str(output.seed)
        self._target: Future[tuple[Generation, GenerationPart] | None] = Future()
        count = len(output.images)
        self._pool = ThreadPoolExecutor(
            max_workers=min(count, MAX_PARALLEL_COPIES), thread_name_prefix="copy"
        )
        self._copies = [self._pool.submit(self._copy_one, offset) for offset in range(count)]

    def _copy_one(self, offset: int) -> StoredImage | None:
        output = self._output
        fetched = self._c.fetcher.fetch(output.images[offset].url)
        # From the bytes already in hand: the thumbnail costs no second download.
        thumbnail = make_thumbnail(fetched.data)
        target = self._target.result()
        if target is None:
            return None
        generation, part = target
        index = part.first_image + offset
        path = image_path(generation.user_id, generation.id, index, fetched.extension)
        thumb_path = thumbnail_path(generation.user_id, generation.id, index)
        nsfw = offset < len(output.has_nsfw_concepts) and output.has_nsfw_concepts[offset]
        metadata = {
            "generationId": generation.id,
            "userId": generation.user_id,
            "index": str(index),
            "seed": self._seed or "",
        }
        # One upload at a time per image: the copies of a part already run in parallel.
        store = self._c.store
        store.upload(path, fetched.data, fetched.content_type, metadata)
        store.upload(thumb_path, thumbnail.data, thumbnail.content_type, metadata)
        return StoredImage(
            index=index,
            bucket=store.bucket_name,
            path=path,
            width=fetched.width,
            height=fetched.height,
            content_type=fetched.content_type,
            file_size=len(fetched.data),
            seed=self._seed,
            nsfw=nsfw,
            thumbnail_path=thumb_path,
            thumbnail_content_type=thumbnail.content_type,
        )

    def store(self, generation: Generation, part: GenerationPart) -> list[StoredImage]:
        """The part's images, stored; raises the first failure, once every copy stopped."""
        self._target.set_result((generation, part))
        try:
            return [image for copy in self._copies if (image := copy.result()) is not None]
        finally:
            self._pool.shutdown(wait=True)

    def abandon(self) -> None:
        """Stores nothing. Downloads under way end on their own; the answer does not wait."""
        if not self._target.done():
            self._target.set_result(None)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _discard_orphans(
    c: Collaborators, generation_id: str, part_index: int, images: list[StoredImage]
) -> None:
    """Deletes what this delivery uploaded if no record will refer to it: the generation
    was deleted, or ended (canceled, failed) without this part, while the images were being
    copied. While the generation runs, whoever holds the part writes the same paths: kept."""
    current = c.repo.get(generation_id)
    if current is not None and not current.is_terminal:
        # Another delivery took the part over: it writes these same paths, and will own them.
        return
    if current is not None and current.part(part_index).status is PartStatus.COMPLETED:
        return
    paths = [image.path for image in images]
    paths += [image.thumbnail_path for image in images if image.thumbnail_path]
    c.store.delete(paths)
    log.info(
        "discarded images of an ended generation",
        extra={"generationId": generation_id, "part": part_index},
    )


def error_message(webhook: FalWebhook) -> str:
    """fal's `error` is often generic ("Invalid status code: 422"); the reason, when there
    is one, is in `payload.detail` in the shape of a 422 body."""
    detail = (webhook.payload or {}).get("detail")
    reason = describe_fal_detail(detail) if detail else ""
    summary = webhook.error or "fal.ai reported an error"
    return f"{summary}: {reason}" if reason and reason not in summary else summary


# Longer than the slowest copy of a part (5 images with thumbnails); a delivery that dies
# mid-copy is taken over by fal's redelivery or the watchdog once it lapses.
INGEST_LEASE = timedelta(seconds=120)


def ingest(
    webhook: FalWebhook, ref: PartRef | None, c: Collaborators, *, prefetch: bool = False
) -> Outcome:
    """A fal result (from fal's webhook, or fetched by the watchdog: one code path).

    `prefetch`: download the images while the claim is being written, so the copy starts
    with the uploads. Its callers prefetch unless they know the claim will be refused: a
    delivery that does not get the claim drops its downloads."""
    located = _locate(webhook, ref, c)
    if located is None:
        return _unknown(webhook)
    output = _images_of(webhook)
    if isinstance(output, ErrorInfo):
        return _refuse(webhook, located, output, c)
    return _copy(webhook, located, output, c, prefetch)


def _log_context(webhook: FalWebhook, located: PartRef) -> dict[str, object]:
    return {
        "generationId": located.generation_id,
        "part": located.part_index,
        "falRequestId": webhook.request_id,
    }


def _unknown(webhook: FalWebhook) -> Outcome:
    log.warning("webhook for an unknown fal request", extra={"falRequestId": webhook.request_id})
    return Outcome.UNKNOWN


def _images_of(webhook: FalWebhook) -> FalOutput | ErrorInfo:
    """The result's output if it has images to copy, else why the generation fails."""
    if webhook.status == "ERROR":
        return ErrorInfo(code="fal_error", message=error_message(webhook)[:1000])
    if webhook.payload_error:
        return ErrorInfo(code="fal_payload_error", message=webhook.payload_error[:1000])
    try:
        output = FalOutput.model_validate(webhook.payload or {})
    except pydantic.ValidationError:
        return ErrorInfo(code="invalid_output", message="fal.ai returned an unreadable result")
    if not output.images:
        return ErrorInfo(code="no_images", message="fal.ai returned no images")
    return output


def _refuse(webhook: FalWebhook, located: PartRef, error: ErrorInfo, c: Collaborators) -> Outcome:
    """A result without images fails the generation, unless it ended or has that part."""
    generation = c.repo.get(located.generation_id)
    if generation is None or located.part_index >= len(generation.parts):
        return _unknown(webhook)
    index = located.part_index
    if generation.is_terminal or generation.part(index).status is PartStatus.COMPLETED:
        log.info("duplicate fal result ignored", extra=_log_context(webhook, located))
        return Outcome.DUPLICATE
    return _fail(c, generation, error.code, error.message)


def _claim(
    webhook: FalWebhook, located: PartRef, lease: Lease, c: Collaborators
) -> Generation | Outcome:
    """The generation as claimed for this delivery, or why this delivery copies nothing."""
    generation_id, index = located.generation_id, located.part_index
    context = _log_context(webhook, located)
    try:
        claim, claimed = c.repo.claim_ingest(generation_id, index, webhook.request_id, lease)
    except IndexError:  # the record has fewer parts than the reference names
        return _unknown(webhook)
    if claim is IngestClaim.BUSY:
        # The holder copies; if it fails, fal redelivers the holder's copy.
        log.info("fal result already being copied", extra=context)
        return Outcome.IN_PROGRESS
    if claimed is None:
        # The part is done, or the generation ended, or there is no such record (which
        # the claim reports as ended too).
        if claim is IngestClaim.ENDED and c.repo.get(generation_id) is None:
            return _unknown(webhook)
        log.info("duplicate fal result ignored", extra=context)
        return Outcome.DUPLICATE
    return claimed


def _copy(
    webhook: FalWebhook, located: PartRef, output: FalOutput, c: Collaborators, prefetch: bool
) -> Outcome:
    """Claims the part, stores its images and records them."""
    generation_id, index = located.generation_id, located.part_index
    lease = Lease(uuid.uuid4().hex, datetime.now(UTC), INGEST_LEASE)
    early = _PartCopy(c, output) if prefetch else None
    claimed: Generation | Outcome = Outcome.UNKNOWN
    try:
        claimed = _claim(webhook, located, lease, c)
    finally:
        if early is not None and not isinstance(claimed, Generation):
            early.abandon()
    if not isinstance(claimed, Generation):
        return claimed
    part = claimed.part(index)
    if len(output.images) != part.num_images:
        if early is not None:
            early.abandon()
        return _fail(
            c,
            claimed,
            "wrong_image_count",
            f"fal.ai returned {len(output.images)} images, expected {part.num_images}",
        )
    try:
        images = (early or _PartCopy(c, output)).store(claimed, part)
    except UpstreamRejectedError as exc:
        return _fail(c, claimed, exc.code, exc.message)
    except Exception:
        c.repo.release_ingest(generation_id, index, lease.claim_id, datetime.now(UTC))
        raise
    try:
        updated = c.repo.complete_part(
            generation_id,
            index,
            lease.claim_id,
            images,
            None if output.seed is None else str(output.seed),
            output.timings,
            datetime.now(UTC),
        )
    except Exception:
        # The images are stored but not recorded: free the part so the next delivery (or
        # the watchdog) records them at once rather than after the lease.
        c.repo.release_ingest(generation_id, index, lease.claim_id, datetime.now(UTC))
        raise
    if updated is None:
        _discard_orphans(c, generation_id, index, images)
        return Outcome.DUPLICATE
    log.info(
        "part completed",
        extra={**_log_context(webhook, located), "status": updated.status.value},
    )
    return Outcome.COMPLETED_PART
