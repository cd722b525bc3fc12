"""Turning a verified fal result into stored images and a completed generation.

Delivery is at least once: a duplicate finds its part already completed and changes
nothing; object paths are deterministic, so even two deliveries racing past that check
overwrite the same objects rather than add copies, and only one of them commits.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
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


def _copy(
    c: Collaborators, generation: Generation, part: GenerationPart, output: FalOutput
) -> list[StoredImage]:
    seed = None if output.seed is None else str(output.seed)

    def copy_one(offset: int) -> StoredImage:
        fetched = c.fetcher.fetch(output.images[offset].url)
        index = part.first_image + offset
        path = image_path(generation.user_id, generation.id, index, fetched.extension)
        nsfw = offset < len(output.has_nsfw_concepts) and output.has_nsfw_concepts[offset]
        # From the bytes already in hand: the thumbnail costs no second download.
        thumbnail = make_thumbnail(fetched.data)
        thumb_path = thumbnail_path(generation.user_id, generation.id, index)
        metadata = {
            "generationId": generation.id,
            "userId": generation.user_id,
            "index": str(index),
            "seed": seed or "",
        }
        c.store.upload(path, fetched.data, fetched.content_type, metadata)
        c.store.upload(thumb_path, thumbnail.data, thumbnail.content_type, metadata)
        return StoredImage(
            index=index,
            bucket=c.store.bucket_name,
            path=path,
            width=fetched.width,
            height=fetched.height,
            content_type=fetched.content_type,
            file_size=len(fetched.data),
            seed=seed,
            nsfw=nsfw,
            thumbnail_path=thumb_path,
            thumbnail_content_type=thumbnail.content_type,
        )

    count = len(output.images)
    if count == 1:
        return [copy_one(0)]
    with ThreadPoolExecutor(max_workers=min(count, MAX_PARALLEL_COPIES)) as pool:
        return list(pool.map(copy_one, range(count)))


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


def ingest(webhook: FalWebhook, ref: PartRef | None, c: Collaborators) -> Outcome:
    """A fal result (from fal's webhook, or fetched by the watchdog: one code path)."""
    located = _locate(webhook, ref, c)
    generation = c.repo.get(located.generation_id) if located else None
    if located is None or generation is None or located.part_index >= len(generation.parts):
        log.warning(
            "webhook for an unknown fal request", extra={"falRequestId": webhook.request_id}
        )
        return Outcome.UNKNOWN
    index = located.part_index
    context = {"generationId": generation.id, "part": index, "falRequestId": webhook.request_id}
    part = generation.part(index)
    if generation.is_terminal or part.status is PartStatus.COMPLETED:
        log.info("duplicate fal result ignored", extra=context)
        return Outcome.DUPLICATE

    if webhook.status == "ERROR":
        return _fail(c, generation, "fal_error", error_message(webhook)[:1000])
    if webhook.payload_error:
        return _fail(c, generation, "fal_payload_error", webhook.payload_error[:1000])
    try:
        output = FalOutput.model_validate(webhook.payload or {})
    except pydantic.ValidationError:
        return _fail(c, generation, "invalid_output", "fal.ai returned an unreadable result")
    if not output.images:
        return _fail(c, generation, "no_images", "fal.ai returned no images")
    if len(output.images) != part.num_images:
        return _fail(
            c,
            generation,
            "wrong_image_count",
            f"fal.ai returned {len(output.images)} images, expected {part.num_images}",
        )

    lease = Lease(uuid.uuid4().hex, datetime.now(UTC), INGEST_LEASE)
    claim, claimed = c.repo.claim_ingest(generation.id, index, webhook.request_id, lease)
    if claim is IngestClaim.BUSY:
        # The holder copies; if it fails, fal redelivers the holder's copy.
        log.info("fal result already being copied", extra=context)
        return Outcome.IN_PROGRESS
    if claimed is None:
        log.info("duplicate fal result ignored", extra=context)
        return Outcome.DUPLICATE
    try:
        images = _copy(c, claimed, claimed.part(index), output)
    except UpstreamRejectedError as exc:
        return _fail(c, claimed, exc.code, exc.message)
    except Exception:
        c.repo.release_ingest(generation.id, index, lease.claim_id, datetime.now(UTC))
        raise
    try:
        updated = c.repo.complete_part(
            generation.id,
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
        c.repo.release_ingest(generation.id, index, lease.claim_id, datetime.now(UTC))
        raise
    if updated is None:
        _discard_orphans(c, generation.id, index, images)
        return Outcome.DUPLICATE
    log.info("part completed", extra={**context, "status": updated.status.value})
    return Outcome.COMPLETED_PART
