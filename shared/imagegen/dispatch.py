"""Submitting a queued generation to fal.ai, one fal request per pending part.

Retrying is a decision: a transient fal failure raises `RetryableError` out of the
function so Pub/Sub redelivers; a permanent refusal fails the generation and returns,
which acks the message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from imagegen import webhook_url
from imagegen.errors import UpstreamRejectedError
from imagegen.fal_gateway import FalGateway
from imagegen.loras import fetchable_url
from imagegen.models.records import ErrorInfo, PartStatus
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
        repo.record_submission(generation.id, part.index, submission.request_id, datetime.now(UTC))
        log.info(
            "part submitted to fal",
            extra={
                "generationId": generation_id,
                "part": part.index,
                "falRequestId": submission.request_id,
            },
        )
