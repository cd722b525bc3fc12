"""The watchdog: what happens to a fal request whose webhook never comes.

fal's webhook can be lost, late, or refused (a bad signature). When a fal request is
submitted, a Cloud Task is scheduled at the model's deadline; its handler asks fal:

- finished, and no result recorded → fetch the result and ingest it through the webhook's
  own code path (`imagegen.ingest`), so there is one way a result becomes images;
- still queued or running → check again later, a bounded number of times, then fail;
- fal does not know the request → resubmit the part once, else fail with a reason.

A webhook arriving meanwhile wins the ingest claim and the check finds the part done.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field

from imagegen import lifecycle
from imagegen.errors import UpstreamRejectedError
from imagegen.fal_gateway import FalGateway, FalState
from imagegen.models.base import Model
from imagegen.models.events import FalWebhook
from imagegen.models.records import ErrorInfo, Generation, PartStatus
from imagegen.registry import get_model
from imagegen.settings import Settings
from imagegen.task_queue import TaskQueue, task_id
from imagegen.webhook_url import PartRef

if TYPE_CHECKING:
    from imagegen.ingest import Collaborators

log = logging.getLogger(__name__)
MAX_SUBMIT_ATTEMPTS = 2  # the first submit and one resubmit after fal lost the request


class WatchdogCheck(Model):
    """The body of a watchdog task."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    generation_id: str = Field(alias="generationId", min_length=1, max_length=128)
    part: int = Field(ge=0, le=64)
    fal_request_id: str = Field(alias="falRequestId", min_length=1, max_length=256)
    check: int = Field(1, ge=1, le=1000)


class Verdict(StrEnum):
    ENDED = "ended"
    DONE = "done"
    SUPERSEDED = "superseded"
    RESCHEDULED = "rescheduled"
    INGESTED = "ingested"
    RESUBMITTED = "resubmitted"
    FAILED = "failed"


class Watchdog:
    def __init__(self, queue: TaskQueue, settings: Settings) -> None:
        self._queue = queue
        self._settings = settings

    def schedule(
        self,
        generation: Generation,
        part: int,
        fal_request_id: str,
        check: int = 1,
        *,
        delay: float | None = None,
        kind: str = "check",
    ) -> bool:
        """Schedules check number `check` (`delay` seconds from now, else the model's or the
        recheck interval); False if it was already scheduled. `kind` keeps a hand-off from
        the webhook apart from the regular checks of the same request."""
        if delay is not None:
            pass
        elif check == 1:
            spec = get_model(generation.model)
            delay = self._settings.watchdog_first_check_seconds
            if delay is None:
                delay = spec.watchdog_seconds if spec else 120.0
        else:
            delay = self._settings.watchdog_recheck_seconds
        body = WatchdogCheck(
            generation_id=generation.id, part=part, fal_request_id=fal_request_id, check=check
        )
        return self._queue.enqueue(
            task_id("watchdog", kind, generation.id, part, fal_request_id, check),
            self._settings.watchdog_url,
            body.model_dump(by_alias=True),
            delay,
        )


def run_check(
    check: WatchdogCheck,
    collaborators: Collaborators,
    gateway: FalGateway,
    watchdog: Watchdog,
    settings: Settings,
) -> Verdict:
    repo = collaborators.repo
    generation = repo.get(check.generation_id)
    if generation is None or generation.is_terminal or check.part >= len(generation.parts):
        return Verdict.ENDED
    part = generation.part(check.part)
    if part.status is PartStatus.COMPLETED:
        return Verdict.DONE
    if part.fal_request_id not in (None, check.fal_request_id):
        return Verdict.SUPERSEDED  # the part was resubmitted: that request has its own check
    context = {
        "generationId": generation.id,
        "part": check.part,
        "falRequestId": check.fal_request_id,
        "check": check.check,
    }
    status = gateway.status(generation.fal_app, check.fal_request_id)

    if status.state is FalState.LOST:
        if part.submit_attempts < MAX_SUBMIT_ATTEMPTS and repo.requeue_lost(
            generation.id, check.part, check.fal_request_id, datetime.now(UTC)
        ):
            from imagegen.accept import publish_generation

            publish_generation(settings, generation.id)
            log.warning("fal lost the request: resubmitting", extra=context)
            return Verdict.RESUBMITTED
        repo.fail(
            generation.id,
            ErrorInfo(code="fal_lost_request", message="fal.ai lost the request"),
            datetime.now(UTC),
        )
        return Verdict.FAILED

    if status.state in (FalState.QUEUED, FalState.RUNNING):
        if check.check >= settings.watchdog_max_checks:
            repo.fail(
                generation.id,
                ErrorInfo(
                    code="fal_timeout", message=f"fal.ai did not finish after {check.check} checks"
                ),
                datetime.now(UTC),
            )
            return Verdict.FAILED
        watchdog.schedule(generation, check.part, check.fal_request_id, check.check + 1)
        return Verdict.RESCHEDULED

    # Completed at fal, but no result recorded here: the webhook was lost or refused.
    log.warning("fal finished but no webhook was processed: ingesting", extra=context)
    try:
        payload = gateway.result(generation.fal_app, check.fal_request_id)
        webhook = FalWebhook(request_id=check.fal_request_id, status="OK", payload=payload)
    except UpstreamRejectedError as exc:
        webhook = FalWebhook(
            request_id=check.fal_request_id, status="ERROR", error=status.error or exc.message
        )
    # Imported here: the dispatcher, which only schedules checks, never loads ingest.
    from imagegen.ingest import Outcome, ingest

    # The images download while the part is being claimed, as for fal's webhook, unless the
    # record already showed a copy under way: that claim would be refused, check after check.
    prefetch = not lifecycle.copy_under_way(part, datetime.now(UTC))
    outcome = ingest(webhook, PartRef(generation.id, check.part), collaborators, prefetch=prefetch)
    if outcome is Outcome.IN_PROGRESS:
        # Someone holds the copy (a webhook past its budget, or one that died mid-copy). Its
        # claim lapses within INGEST_LEASE, so look again until then, whatever the count of
        # checks: the check after the lapse takes the part over. Stopping earlier would
        # strand a part whose holder died.
        current = repo.get(generation.id)
        expires = current.part(check.part).claim_expires_at if current else None
        wait = settings.watchdog_recheck_seconds
        if expires is not None:
            wait = max(wait, (expires - datetime.now(UTC)).total_seconds() + 1)
        watchdog.schedule(generation, check.part, check.fal_request_id, check.check + 1, delay=wait)
        return Verdict.RESCHEDULED
    return Verdict.INGESTED
