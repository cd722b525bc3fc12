"""Accepting a generation: validate, persist as queued, then publish its id.

The record is written before the message is published, so the dispatcher can never
receive an id it cannot load. If publishing fails the record is failed at once and the
caller gets a 503: the client knows to retry, and nothing stays queued with no message.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime

from imagegen import clients
from imagegen.auth import Principal
from imagegen.errors import RetryableError
from imagegen.models.records import ErrorInfo, Generation
from imagegen.planning import plan_parts
from imagegen.repository import GenerationRepository
from imagegen.settings import Settings
from imagegen.validation import ValidatedGeneration

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_SECONDS = 10.0


def build_generation(
    validated: ValidatedGeneration, principal: Principal, now: datetime
) -> Generation:
    request = validated.request
    return Generation(
        id=str(uuid.uuid4()),
        user_id=principal.user_id,
        prompt=request.prompt,
        model=validated.spec.id,
        fal_app=validated.spec.fal_app,
        parameters=validated.parameters,
        num_images=request.num_images,
        width=validated.width,
        height=validated.height,
        parts=plan_parts(request.num_images, validated.spec, request.seed),
        created_at=now,
        updated_at=now,
    )


def publish_generation(settings: Settings, generation_id: str) -> None:
    publisher = clients.publisher_client()
    topic = publisher.topic_path(settings.gcp_project, settings.generations_topic)
    data = json.dumps({"generationId": generation_id}).encode()
    publisher.publish(topic, data, generationId=generation_id).result(
        timeout=PUBLISH_TIMEOUT_SECONDS
    )


def accept(
    validated: ValidatedGeneration,
    principal: Principal,
    repo: GenerationRepository,
    settings: Settings,
) -> Generation:
    now = datetime.now(UTC)
    generation = build_generation(validated, principal, now)
    repo.create(generation)
    log.info("generation queued", extra={"generationId": generation.id, "model": generation.model})
    try:
        publish_generation(settings, generation.id)
    except Exception as exc:
        log.exception("publish failed", extra={"generationId": generation.id})
        repo.fail(
            generation.id,
            ErrorInfo(code="publish_failed", message="The generation could not be queued"),
            datetime.now(UTC),
        )
        raise RetryableError(
            "The generation could not be queued; retry the request", code="queue_unavailable"
        ) from exc
    return generation
