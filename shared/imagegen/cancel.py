"""Canceling and deleting generations.

Cancel: a generation nothing was sent to fal for yet is canceled at once (the dispatcher
skips terminal generations, so its message is dropped). Otherwise the record first notes
that a cancel is under way (`cancel_requested_at`: the error fal then reports for the
request cancels the generation instead of failing it), and every submitted part is
canceled at fal. When fal answers ALREADY_COMPLETED for every part still running (and
none is left to dispatch), the results exist and their webhooks are on the way: the note
is withdrawn, the generation completes normally and the cancel is a 409. Once canceled,
a webhook changes nothing and stores nothing (ingest ignores terminal generations, and
discards images a delivery racing the cancel had already copied).

Delete: a running generation is canceled first (best effort at fal, but always in the
record, so no delivery can add objects afterwards), then every object under the
generation's image and thumbnail prefixes is deleted (listing, not the record, so parts
that completed late go too), and finally the record is replaced by a tombstone, so a
repeated DELETE by its owner is still a 204 while anyone else keeps getting 404.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from datetime import UTC, datetime

from imagegen.auth import Principal
from imagegen.errors import ConflictError, ImageGenError, NotFoundError
from imagegen.fal_gateway import CancelOutcome, FalGateway
from imagegen.models.records import Generation, GenerationStatus, PartStatus
from imagegen.repository import GenerationRepository
from imagegen.storage import ImageStore, generation_prefixes

log = logging.getLogger(__name__)


def _not_found(generation_id: str) -> NotFoundError:
    return NotFoundError(f"Generation '{generation_id[:128]}' not found")


def owned(repo: GenerationRepository, generation_id: str, caller: Principal) -> Generation:
    """The caller's generation; another user's is indistinguishable from a missing one."""
    generation = repo.get(generation_id)
    if generation is None or generation.user_id != caller.user_id:
        raise _not_found(generation_id)
    return generation


def _ended(generation: Generation) -> ConflictError:
    return ConflictError(
        f"Generation '{generation.id}' is already {generation.status.value}",
        code="conflict",
        details={"status": generation.status.value},
    )


def _cancel_at_fal(generation: Generation, gateway: FalGateway) -> dict[int, CancelOutcome | None]:
    """fal's answer for each submitted part; None where fal could not be asked."""
    outcomes: dict[int, CancelOutcome | None] = {}
    for part in generation.parts:
        if part.status is not PartStatus.SUBMITTED or not part.fal_request_id:
            continue
        try:
            outcomes[part.index] = gateway.cancel(generation.fal_app, part.fal_request_id)
        except ImageGenError as exc:
            # Canceled in the record all the same: whatever fal then returns is ignored.
            log.warning(
                "fal cancel failed",
                extra={
                    "generationId": generation.id,
                    "part": part.index,
                    "falRequestId": part.fal_request_id,
                    "reason": exc.message,
                },
            )
            outcomes[part.index] = None
    return outcomes


def cancel(generation: Generation, repo: GenerationRepository, gateway: FalGateway) -> Generation:
    """Cancels a running generation; ConflictError if it ended or is about to complete."""
    if generation.is_terminal:
        raise _ended(generation)

    # Nothing at fal yet: cancel in the record alone, unless a dispatch got there first.
    def nothing_submitted(current: Generation) -> bool:
        return all(p.status is not PartStatus.SUBMITTED for p in current.parts)

    if nothing_submitted(generation):
        canceled = repo.cancel(generation.id, datetime.now(UTC), nothing_submitted)
        if canceled is not None:
            return canceled
        generation = repo.get(generation.id) or generation
        if generation.is_terminal:
            raise _ended(generation)

    requested = repo.request_cancel(generation.id, datetime.now(UTC))
    if requested is None:
        current = repo.get(generation.id)
        if current is None:
            raise _not_found(generation.id)
        raise _ended(current)
    outcomes = _cancel_at_fal(requested, gateway)
    too_late = {i for i, o in outcomes.items() if o is CancelOutcome.ALREADY_COMPLETED}

    def something_stopped(current: Generation) -> bool:
        # Cancel only if that stops work: a part not yet sent to fal, or one fal did not
        # report as already finished. Otherwise the generation is about to complete.
        return any(
            p.status is PartStatus.PENDING
            or (p.status is PartStatus.SUBMITTED and p.index not in too_late)
            for p in current.parts
        )

    canceled = repo.cancel(generation.id, datetime.now(UTC), something_stopped)
    if canceled is not None:
        log.info(
            "generation canceled",
            extra={
                "generationId": generation.id,
                "falOutcomes": {str(k): str(v) for k, v in outcomes.items()},
            },
        )
        return canceled
    current = repo.get(generation.id)
    if current is None:
        raise _not_found(generation.id)
    if current.status is GenerationStatus.CANCELED:
        return current  # fal's cancellation error arrived first and canceled it
    if current.is_terminal:
        raise _ended(current)
    repo.withdraw_cancel(generation.id, datetime.now(UTC))
    raise ConflictError(
        f"Generation '{generation.id}' has already finished at fal.ai and is completing",
        code="conflict",
        details={"status": current.status.value},
    )


def delete(
    generation_id: str,
    caller: Principal,
    repo: GenerationRepository,
    store: ImageStore,
    gateway: FalGateway,
) -> None:
    """Deletes the caller's generation, its images and thumbnails; NotFoundError if it is
    not theirs (or never existed). Deleting it again is a no-op while the tombstone lasts."""
    generation = repo.get(generation_id)
    if generation is None:
        if repo.deleted_by(generation_id) == caller.user_id:
            return
        raise _not_found(generation_id)
    if generation.user_id != caller.user_id:
        raise _not_found(generation_id)

    if not generation.is_terminal:
        with suppress(ConflictError):  # it finished meanwhile: deleted all the same
            cancel(generation, repo, gateway)
        # Whatever fal said, the record must be terminal before objects are listed, so
        # that no webhook can add objects the listing below would miss.
        repo.cancel(generation_id, datetime.now(UTC), lambda _: True)

    paths = [
        path
        for prefix in generation_prefixes(generation.user_id, generation.id)
        for path in store.list_paths(prefix)
    ]
    store.delete(paths)
    repo.delete(generation_id, caller.user_id, datetime.now(UTC))
    log.info(
        "generation deleted",
        extra={"generationId": generation_id, "objects": len(paths)},
    )
