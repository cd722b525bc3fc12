"""Submitting a queued generation to fal.ai, one fal request per pending part.

Retrying is a decision: a transient fal failure raises `RetryableError` out of the
function so Pub/Sub redelivers; a permanent refusal fails the generation and returns,
which acks the message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from imagegen import webhook_url
from imagegen.errors import ImageGenError, RetryableError, UpstreamRejectedError
from imagegen.fal_gateway import FalGateway
from imagegen.lifecycle import Lease
from imagegen.loras import fetchable_url
from imagegen.models.records import ErrorInfo, GenerationStatus, PartStatus
from imagegen.planning import fal_arguments
from imagegen.repository import GenerationRepository
from imagegen.settings import Settings
from imagegen.url_signing import UrlSigner

if TYPE_CHECKING:
    from imagegen.watchdog import Watchdog

log = logging.getLogger(__name__)


def dispatch(
    generation_id: str,
    repo: GenerationRepository,
    gateway: FalGateway,
    signer: Callable[[], UrlSigner],
    settings: Settings,
    watchdog: Watchdog | None = None,
) -> None:
    """Submits every part not yet submitted, each under a claim, so a duplicated message
    (or the same generation published twice) makes exactly one fal request per part."""
    generation = repo.get(generation_id)
    if generation is None:
        log.warning(
            "dropping message for unknown generation", extra={"generationId": generation_id}
        )
        return
    if generation.is_terminal:
        log.info("generation already ended", extra={"generationId": generation_id})
        return
    hmac_key = settings.webhook_hmac_key_bytes()
    # Signed now, not at accept: a generation may wait in the queue longer than 15 minutes.
    # `signer` is built only when a LoRA needs it: the Storage client is not loaded otherwise.
    lora_urls = [
        fetchable_url(lora.url, settings.lora_bucket, signer(), settings.lora_url_ttl_seconds)
        for lora in generation.loras
    ]
    held_elsewhere = False
    for part in generation.parts:
        if part.status not in (PartStatus.PENDING, PartStatus.SUBMITTING):
            continue
        lease = Lease(
            uuid.uuid4().hex, datetime.now(UTC), timedelta(seconds=settings.submit_lease_seconds)
        )
        claimed = repo.claim_submission(generation.id, part.index, lease)
        if claimed is None:
            current = repo.get(generation.id)
            if current is not None and current.part(part.index).status is PartStatus.SUBMITTING:
                held_elsewhere = True
            if current is None or current.is_terminal:
                return
            continue
        callback = webhook_url.build(settings.webhook_url, hmac_key, generation.id, part.index)
        try:
            submission = gateway.submit(
                generation.fal_app, fal_arguments(claimed, part, lora_urls), callback
            )
        except UpstreamRejectedError as exc:
            log.warning(
                "fal rejected generation",
                extra={"generationId": generation_id, "reason": exc.message},
            )
            repo.fail(
                generation.id, ErrorInfo(code=exc.code, message=exc.message), datetime.now(UTC)
            )
            return
        except RetryableError:
            # Pending again at once: the redelivery need not wait for the lease to lapse.
            repo.release_submission(generation.id, part.index, lease.claim_id, datetime.now(UTC))
            raise
        recorded = repo.record_submission(
            generation.id, part.index, lease.claim_id, submission.request_id, datetime.now(UTC)
        )
        if recorded is None:
            _withdraw_if_canceled(
                generation.id, generation.fal_app, submission.request_id, repo, gateway
            )
            continue
        log.info(
            "part submitted to fal",
            extra={
                "generationId": generation_id,
                "part": part.index,
                "falRequestId": submission.request_id,
            },
        )
        if watchdog is not None:
            watchdog.schedule(recorded, part.index, submission.request_id)
    if held_elsewhere:
        # Another delivery is submitting a part right now. Acknowledging would lose the
        # message if that dispatcher crashed; redelivery costs one cheap read.
        raise RetryableError("a part is being submitted by another delivery", code="in_progress")


def _withdraw_if_canceled(
    generation_id: str,
    app: str,
    request_id: str,
    repo: GenerationRepository,
    gateway: FalGateway,
) -> None:
    """The generation was canceled while fal was accepting this request: stop the work that
    nobody will collect. (A part completed by an early webhook is left alone.)"""
    current = repo.get(generation_id)
    if current is None or current.status is GenerationStatus.CANCELED:
        try:
            gateway.cancel(app, request_id)
        except ImageGenError as exc:
            log.warning(
                "could not cancel an orphaned fal request: %s",
                exc.message,
                extra={"generationId": generation_id, "falRequestId": request_id},
            )
