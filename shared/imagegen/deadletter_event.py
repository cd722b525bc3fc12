"""The dead-letter handler: a generation whose message Pub/Sub gave up on.

After the subscription's last delivery attempt the message lands on the dead-letter topic;
this marks its generation failed (`dispatch_failed`) so the user sees a terminal state
instead of a generation queued forever. Idempotent: an ended generation is left alone.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pydantic

from imagegen import context
from imagegen.models.events import generation_id_of
from imagegen.models.records import ErrorInfo

log = logging.getLogger(__name__)


def handle(data: Any, event_id: str | None = None) -> None:
    try:
        generation_id = generation_id_of(data)
    except pydantic.ValidationError as exc:
        log.error("dropping malformed dead letter %s: %s", event_id, exc.errors()[:3])
        return
    failed = context.generations().fail(
        generation_id,
        ErrorInfo(
            code="dispatch_failed",
            message="The generation could not be submitted to fal.ai; please retry",
        ),
        datetime.now(UTC),
    )
    log.warning(
        "dead-lettered generation %s",
        "failed" if failed else "had already ended",
        extra={"generationId": generation_id},
    )
