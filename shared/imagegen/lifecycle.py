"""The generation state machine: every allowed move, and nothing else.

Pure functions over a `Generation` read inside a Firestore transaction: each returns
whether it changed anything, and the repository writes the record only then. Because every
delivery of every event runs through these rules against the freshly read record,
duplicated, late and concurrent deliveries cannot double a fal request or a set of images.

    part:  pending ──claim──▶ submitting ──recorded──▶ submitted ──claim──▶ ingesting ──▶ completed
              ▲                   │ (release / lease lapses)        ▲          │ (release / lapse)
              └───────────────────┘                                 └──────────┘
           any unfinished part ──▶ failed | canceled (with its generation)

    generation: queued ──▶ submitted ──▶ completed | failed | canceled   (terminal: final)

A webhook may reach a part before the dispatcher recorded fal's id (pending, or submitting
under a claim): the signed webhook URL proves which part it is (decision 0003), so ingest
may claim a part from pending, submitting or submitted.

The cleanup sweep's moves (`note_republished`, `fail_stale`) act only on a generation still
unchanged since the sweep's cutoff when re-read, so one that moved on is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from imagegen.models.records import (
    ErrorInfo,
    Generation,
    GenerationPart,
    GenerationStatus,
    PartStatus,
    StoredImage,
)

UNFINISHED_PARTS = frozenset(
    {PartStatus.PENDING, PartStatus.SUBMITTING, PartStatus.SUBMITTED, PartStatus.INGESTING}
)
INGESTIBLE = frozenset({PartStatus.PENDING, PartStatus.SUBMITTING, PartStatus.SUBMITTED})


class IngestClaim(StrEnum):
    CLAIMED = "claimed"
    BUSY = "busy"  # another delivery holds a live claim and is copying
    DONE = "done"  # the part already has its images
    ENDED = "ended"  # the generation is terminal: nothing may change


@dataclass(frozen=True)
class Lease:
    claim_id: str
    now: datetime
    duration: timedelta

    @property
    def expires_at(self) -> datetime:
        return self.now + self.duration


def _lapsed(part: GenerationPart, now: datetime) -> bool:
    return part.claim_expires_at is None or part.claim_expires_at <= now


def copy_under_way(part: GenerationPart, now: datetime) -> bool:
    """Another delivery holds the part's live ingest claim: a claim now would be BUSY."""
    return part.status is PartStatus.INGESTING and not _lapsed(part, now)


def _hold(part: GenerationPart, lease: Lease) -> None:
    part.claim_id = lease.claim_id
    part.claim_expires_at = lease.expires_at


def _drop_claim(part: GenerationPart) -> None:
    part.claim_id = None
    part.claim_expires_at = None


def _touch(generation: Generation, now: datetime) -> None:
    generation.updated_at = now


def claim_submission(generation: Generation, index: int, lease: Lease) -> bool:
    """The dispatcher may call fal for this part: it is pending, or its submitter's claim
    lapsed (that dispatcher crashed)."""
    part = generation.part(index)
    if generation.is_terminal:
        return False
    lapsed_submitter = part.status is PartStatus.SUBMITTING and _lapsed(part, lease.now)
    if part.status is not PartStatus.PENDING and not lapsed_submitter:
        return False
    part.status = PartStatus.SUBMITTING
    part.submit_attempts += 1
    _hold(part, lease)
    _touch(generation, lease.now)
    return True


def release_submission(generation: Generation, index: int, claim_id: str, now: datetime) -> bool:
    """fal could not be reached: the part is pending again for the next delivery."""
    part = generation.part(index)
    if generation.is_terminal or part.status is not PartStatus.SUBMITTING:
        return False
    if part.claim_id != claim_id:
        return False
    part.status = PartStatus.PENDING
    _drop_claim(part)
    _touch(generation, now)
    return True


def record_submission(
    generation: Generation, index: int, claim_id: str, fal_request_id: str, now: datetime
) -> bool:
    """fal accepted the part's request. Only the claim holder records it; if a webhook has
    already taken the part further, fal's id is kept for reference and nothing moves back."""
    part = generation.part(index)
    if generation.is_terminal:
        return False
    if part.status is PartStatus.SUBMITTING and part.claim_id == claim_id:
        part.status = PartStatus.SUBMITTED
        part.fal_request_id = fal_request_id
        part.submitted_at = now
        _drop_claim(part)
        if generation.status is GenerationStatus.QUEUED:
            generation.status = GenerationStatus.SUBMITTED
            generation.submitted_at = now
        _touch(generation, now)
        return True
    return False


def claim_ingest(
    generation: Generation, index: int, fal_request_id: str, lease: Lease
) -> IngestClaim:
    """A fal result arrived for this part: the first delivery copies it; the rest see BUSY
    (and answer 200: the holder's own failure makes fal redeliver *its* copy) or DONE."""
    part = generation.part(index)
    if generation.is_terminal:
        return IngestClaim.ENDED
    if part.status is PartStatus.COMPLETED:
        return IngestClaim.DONE
    if copy_under_way(part, lease.now):
        return IngestClaim.BUSY
    if part.status not in INGESTIBLE and part.status is not PartStatus.INGESTING:
        return IngestClaim.ENDED
    part.status = PartStatus.INGESTING
    # The request whose result is copied becomes the part's request: if a crashed dispatcher
    # left two fal requests for one part, the first result in wins and the other is discarded.
    part.fal_request_id = fal_request_id
    _hold(part, lease)
    if generation.status is GenerationStatus.QUEUED:
        generation.status = GenerationStatus.SUBMITTED
        generation.submitted_at = lease.now
    _touch(generation, lease.now)
    return IngestClaim.CLAIMED


def requeue_lost(generation: Generation, index: int, fal_request_id: str, now: datetime) -> bool:
    """fal has no such request any more: the part goes back to pending for one resubmit."""
    part = generation.part(index)
    if generation.is_terminal or part.status is not PartStatus.SUBMITTED:
        return False
    if part.fal_request_id != fal_request_id:
        return False
    part.status = PartStatus.PENDING
    part.fal_request_id = None
    _drop_claim(part)
    _touch(generation, now)
    return True


def release_ingest(generation: Generation, index: int, claim_id: str, now: datetime) -> bool:
    """Copying failed for a transient reason: the next delivery may try again."""
    part = generation.part(index)
    if generation.is_terminal or part.status is not PartStatus.INGESTING:
        return False
    if part.claim_id != claim_id:
        return False
    part.status = PartStatus.SUBMITTED
    _drop_claim(part)
    _touch(generation, now)
    return True


def complete_part(
    generation: Generation,
    index: int,
    claim_id: str,
    images: list[StoredImage],
    seed: str | None,
    timings: dict[str, Any],
    now: datetime,
) -> bool:
    """The claim holder stored the part's images. A holder whose claim lapsed and was taken
    over is refused while the taker's lease is live (the taker completes: its objects are
    the same paths); once no live claim remains, a late holder may finish."""
    part = generation.part(index)
    if generation.is_terminal or part.status is not PartStatus.INGESTING:
        return False
    if part.claim_id != claim_id and not _lapsed(part, now):
        return False
    part.status = PartStatus.COMPLETED
    part.completed_at = now
    part.timings = timings
    part.seed = seed
    _drop_claim(part)
    generation.images = sorted(
        [
            i
            for i in generation.images
            if not part.first_image <= i.index < part.first_image + part.num_images
        ]
        + images,
        key=lambda image: image.index,
    )
    if all(p.status is PartStatus.COMPLETED for p in generation.parts):
        generation.status = GenerationStatus.COMPLETED
        generation.completed_at = now
        generation.seed = generation.parts[0].seed
    _touch(generation, now)
    return True


def _end_parts(generation: Generation, status: PartStatus) -> None:
    for part in generation.parts:
        if part.status in UNFINISHED_PARTS:
            part.status = status
            _drop_claim(part)


def fail(generation: Generation, error: ErrorInfo, now: datetime) -> bool:
    if generation.is_terminal:
        return False
    if generation.cancel_requested_at is not None:
        # The user asked fal to cancel: fal's error is that cancellation.
        return cancel(generation, now)
    generation.status = GenerationStatus.FAILED
    generation.error = error
    generation.completed_at = now
    _end_parts(generation, PartStatus.FAILED)
    _touch(generation, now)
    return True


def cancel(generation: Generation, now: datetime) -> bool:
    """Parts still running become canceled; completed parts keep their images."""
    if generation.is_terminal:
        return False
    generation.status = GenerationStatus.CANCELED
    generation.canceled_at = now
    _end_parts(generation, PartStatus.CANCELED)
    _touch(generation, now)
    return True


def request_cancel(generation: Generation, now: datetime) -> bool:
    if generation.is_terminal:
        return False
    generation.cancel_requested_at = now
    _touch(generation, now)
    return True


def withdraw_cancel(generation: Generation, now: datetime) -> bool:
    if generation.is_terminal or generation.cancel_requested_at is None:
        return False
    generation.cancel_requested_at = None
    _touch(generation, now)
    return True


def _is_stale(generation: Generation, stale_before: datetime) -> bool:
    """Not ended, and unchanged since `stale_before` (the cleanup sweep's idea of stuck)."""
    if generation.is_terminal:
        return False
    last_change = generation.updated_at or generation.created_at
    return last_change < stale_before


def note_republished(generation: Generation, stale_before: datetime, now: datetime) -> bool:
    """A generation stuck in `queued` (its message may be lost) is re-published once: only
    one sweep may claim that, and the fresh message gets a whole stuck window again."""
    if generation.status is not GenerationStatus.QUEUED or generation.republished_at is not None:
        return False
    if not _is_stale(generation, stale_before):
        return False
    generation.republished_at = now
    _touch(generation, now)
    return True


def fail_stale(
    generation: Generation, error: ErrorInfo, stale_before: datetime, now: datetime
) -> bool:
    """Fails a generation only if it is still stuck on the fresh read: one that moved on
    since the sweep's query (a webhook, a dispatcher) is left alone."""
    if not _is_stale(generation, stale_before):
        return False
    return fail(generation, error, now)
