"""Submitting a queued generation to fal.ai, one fal request per pending part.

Retrying is a decision: a transient fal failure raises `RetryableError` out of the
function so Pub/Sub redelivers; a permanent refusal fails the generation and returns,
which acks the message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from imagegen import webhook_url
from imagegen.errors import ImageGenError, UpstreamRejectedError
from imagegen.fal_gateway import FalGateway
from imagegen.loras import fetchable_url
from imagegen.models.records import ErrorInfo, GenerationStatus, PartStatus
from imagegen.planning import fal_arguments
from imagegen.repository import GenerationRepository
from imagegen.settings import Settings
from imagegen.url_signing import UrlSigner

log = logging.getLogger(__name__)


def dispatch(
    generation_id: str,
    repo: GenerationRepository,
    gateway: FalGateway,
    signer: UrlSigner,
    settings: Settings,
) -> None:
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
    lora_urls = [
        fetchable_url(lora.url, settings.lora_bucket, signer, settings.lora_url_ttl_seconds)
        for lora in generation.loras
    ]
    for part in generation.parts:
        if part.status is not PartStatus.PENDING:
            continue
        callback = webhook_url.build(settings.webhook_url, hmac_key, generation.id, part.index)
        try:
            submission = gateway.submit(
                generation.fal_app, fal_arguments(generation, part, lora_urls), callback
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
        recorded = repo.record_submission(
            generation.id, part.index, submission.request_id, datetime.now(UTC)
        )
        if recorded is None:
            _withdraw_if_canceled(
                generation.id, generation.fal_app, submission.request_id, repo, gateway
            )
            return
        log.info(
            "part submitted to fal",
            extra={
                "generationId": generation_id,
                "part": part.index,
                "falRequestId": submission.request_id,
            },
        )


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
