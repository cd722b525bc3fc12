"""Unit tests for the generation state machine (imagegen.lifecycle).

Every move of the diagram in lifecycle's docstring, allowed and refused, on records built
directly; then the properties the repository relies on: no move changes a terminal
generation, and random interleavings of duplicated, late and concurrent deliveries never
complete a part twice, record two submissions of one part or store too many images.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagegen import lifecycle
from imagegen.lifecycle import IngestClaim, Lease
from imagegen.models.records import (
    TERMINAL_STATUSES,
    ErrorInfo,
    Generation,
    GenerationPart,
    GenerationStatus,
    PartStatus,
    StoredImage,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LEASE = timedelta(seconds=90)
ERROR = ErrorInfo(code="fal_error", message="boom")
UNFINISHED = [PartStatus.PENDING, PartStatus.SUBMITTING, PartStatus.SUBMITTED, PartStatus.INGESTING]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def lease(claim_id: str, seconds: float = 0, duration: timedelta = LEASE) -> Lease:
    return Lease(claim_id, at(seconds), duration)


def make_generation(num_images: int = 5, per_request: int = 4) -> Generation:
    """A queued generation split like plan_parts does: 5 images are parts of 4 and 1."""
    parts: list[GenerationPart] = []
    first = 0
    while first < num_images:
        count = min(per_request, num_images - first)
        parts.append(
            GenerationPart(
                index=len(parts), num_images=count, first_image=first, seed=str(100 + len(parts))
            )
        )
        first += count
    return Generation(
        id="gen-1",
        user_id="user-a",
        prompt="a red fox",
        model="flux-dev",
        fal_app="fal-ai/flux/dev",
        parameters={"output_format": "jpeg"},
        num_images=num_images,
        width=1024,
        height=1024,
        parts=parts,
        created_at=T0,
        updated_at=T0,
    )


def images_for(part: GenerationPart, tag: str = "a") -> list[StoredImage]:
    """The part's images, deliberately in reverse order (complete_part sorts them)."""
    return [
        StoredImage(
            index=index,
            bucket="bucket",
            path=f"{tag}/{index}.jpg",
            width=1024,
            height=1024,
            content_type="image/jpeg",
            file_size=10,
            seed=part.seed,
        )
        for index in reversed(range(part.first_image, part.first_image + part.num_images))
    ]


def snapshot(generation: Generation) -> dict[str, Any]:
    return generation.model_dump()


def put(
    part: GenerationPart,
    status: PartStatus,
    claim_id: str | None = None,
    expires: datetime | None = None,
    fal_request_id: str | None = None,
) -> None:
    part.status = status
    part.claim_id = claim_id
    part.claim_expires_at = expires
    if fal_request_id is not None:
        part.fal_request_id = fal_request_id


def submitting(claim_id: str = "d1", index: int = 0, seconds: float = 0) -> Generation:
    generation = make_generation()
    assert lifecycle.claim_submission(generation, index, lease(claim_id, seconds))
    return generation


def submitted(index: int = 0, request: str = "req-0") -> Generation:
    generation = submitting("d1", index)
    assert lifecycle.record_submission(generation, index, "d1", request, at(1))
    return generation


def ingesting(claim_id: str = "w1", index: int = 0, seconds: float = 2) -> Generation:
    generation = submitted(index)
    claim = lifecycle.claim_ingest(generation, index, "req-0", lease(claim_id, seconds))
    assert claim is IngestClaim.CLAIMED
    return generation


def complete(generation: Generation, index: int, claim_id: str, now: datetime) -> bool:
    part = generation.part(index)
    return lifecycle.complete_part(
        generation, index, claim_id, images_for(part, claim_id), part.seed, {"t": 1}, now
    )


# --- the generation record ------------------------------------------------------------


def test_five_images_are_parts_of_four_and_one() -> None:
    generation = make_generation(5)
    assert [(p.index, p.first_image, p.num_images) for p in generation.parts] == [
        (0, 0, 4),
        (1, 4, 1),
    ]
    assert all(p.status is PartStatus.PENDING and p.submit_attempts == 0 for p in generation.parts)


# --- claim_submission -----------------------------------------------------------------


def test_claim_submission_from_pending() -> None:
    generation = make_generation()
    other_part = snapshot(generation)["parts"][1]
    assert lifecycle.claim_submission(generation, 0, lease("d1", 10))
    part = generation.part(0)
    assert part.status is PartStatus.SUBMITTING
    assert part.claim_id == "d1"
    assert part.claim_expires_at == at(10) + LEASE
    assert part.submit_attempts == 1
    assert generation.updated_at == at(10)
    # Claiming is not submitting: the generation stays queued until fal accepts.
    assert generation.status is GenerationStatus.QUEUED
    assert generation.submitted_at is None
    assert snapshot(generation)["parts"][1] == other_part


@pytest.mark.parametrize("seconds", [0, 1, 89.999])
def test_claim_submission_refused_while_the_submitters_lease_is_live(seconds: float) -> None:
    generation = submitting("d1")
    before = snapshot(generation)
    assert not lifecycle.claim_submission(generation, 0, lease("d2", seconds))
    assert snapshot(generation) == before


@pytest.mark.parametrize("seconds", [90, 91, 3600])
def test_claim_submission_takes_over_a_lapsed_submitter(seconds: float) -> None:
    generation = submitting("d1")
    assert lifecycle.claim_submission(generation, 0, lease("d2", seconds))
    part = generation.part(0)
    assert part.status is PartStatus.SUBMITTING
    assert part.claim_id == "d2"
    assert part.claim_expires_at == at(seconds) + LEASE
    assert part.submit_attempts == 2
    assert generation.updated_at == at(seconds)


def test_claim_submission_of_a_submitting_part_without_expiry_is_lapsed() -> None:
    generation = make_generation()
    put(generation.part(0), PartStatus.SUBMITTING, "d1", None)
    assert lifecycle.claim_submission(generation, 0, lease("d2"))
    assert generation.part(0).claim_id == "d2"


@pytest.mark.parametrize(
    "status", [PartStatus.SUBMITTED, PartStatus.INGESTING, PartStatus.COMPLETED]
)
@pytest.mark.parametrize("claim_lapsed", [False, True])
def test_claim_submission_refused_once_fal_has_the_request(
    status: PartStatus, claim_lapsed: bool
) -> None:
    """A part fal already accepted (or whose result is in) is never submitted again."""
    generation = make_generation()
    holder = "w1" if status is PartStatus.INGESTING else None
    expires = (at(-1) if claim_lapsed else at(100)) if holder else None
    put(generation.part(0), status, holder, expires, "req-0")
    before = snapshot(generation)
    assert not lifecycle.claim_submission(generation, 0, lease("d2", 10))
    assert snapshot(generation) == before


def test_claim_submission_concerns_one_part_only() -> None:
    generation = submitting("d1", index=0)
    assert lifecycle.claim_submission(generation, 1, lease("d2", 1))
    assert [p.claim_id for p in generation.parts] == ["d1", "d2"]
    assert [p.submit_attempts for p in generation.parts] == [1, 1]


# --- release_submission ---------------------------------------------------------------


def test_release_submission_by_the_holder_makes_the_part_pending_again() -> None:
    generation = submitting("d1")
    assert lifecycle.release_submission(generation, 0, "d1", at(5))
    part = generation.part(0)
    assert part.status is PartStatus.PENDING
    assert part.claim_id is None and part.claim_expires_at is None
    assert part.submit_attempts == 1  # attempts are counted, not undone
    assert generation.updated_at == at(5)
    # ... and the next delivery may claim it at once, without waiting for the lease.
    assert lifecycle.claim_submission(generation, 0, lease("d2", 6))
    assert generation.part(0).submit_attempts == 2


def test_release_submission_by_a_holder_whose_lease_lapsed_untaken() -> None:
    generation = submitting("d1")
    assert lifecycle.release_submission(generation, 0, "d1", at(500))
    assert generation.part(0).status is PartStatus.PENDING


@pytest.mark.parametrize("claim_id", ["d2", "", "w1"])
def test_release_submission_refused_for_a_non_holder(claim_id: str) -> None:
    generation = submitting("d1")
    before = snapshot(generation)
    assert not lifecycle.release_submission(generation, 0, claim_id, at(5))
    assert snapshot(generation) == before


def test_release_submission_refused_for_a_holder_taken_over() -> None:
    generation = submitting("d1")
    assert lifecycle.claim_submission(generation, 0, lease("d2", 100))
    before = snapshot(generation)
    assert not lifecycle.release_submission(generation, 0, "d1", at(101))
    assert snapshot(generation) == before


@pytest.mark.parametrize(
    "status", [PartStatus.PENDING, PartStatus.SUBMITTED, PartStatus.INGESTING, PartStatus.COMPLETED]
)
def test_release_submission_refused_unless_submitting(status: PartStatus) -> None:
    """Even with the right claim id: an ingest claim is not a submission claim."""
    generation = make_generation()
    put(generation.part(0), status, "d1", at(100))
    before = snapshot(generation)
    assert not lifecycle.release_submission(generation, 0, "d1", at(5))
    assert snapshot(generation) == before


# --- record_submission ----------------------------------------------------------------


def test_record_submission_by_the_holder() -> None:
    generation = submitting("d1")
    assert lifecycle.record_submission(generation, 0, "d1", "req-0", at(3))
    part = generation.part(0)
    assert part.status is PartStatus.SUBMITTED
    assert part.fal_request_id == "req-0"
    assert part.submitted_at == at(3)
    assert part.claim_id is None and part.claim_expires_at is None
    assert generation.status is GenerationStatus.SUBMITTED
    assert generation.submitted_at == at(3)
    assert generation.updated_at == at(3)


def test_record_submission_of_a_second_part_keeps_the_generations_submitted_at() -> None:
    generation = submitted(0)
    assert lifecycle.claim_submission(generation, 1, lease("d2", 5))
    assert lifecycle.record_submission(generation, 1, "d2", "req-1", at(6))
    assert generation.submitted_at == at(1)
    assert generation.part(1).submitted_at == at(6)
    assert [p.status for p in generation.parts] == [PartStatus.SUBMITTED] * 2


def test_record_submission_by_a_holder_whose_lease_lapsed_untaken() -> None:
    """fal accepted the request late: it is still the only one, so it is recorded."""
    generation = submitting("d1")
    assert lifecycle.record_submission(generation, 0, "d1", "req-0", at(500))
    assert generation.part(0).status is PartStatus.SUBMITTED


@pytest.mark.parametrize("claim_id", ["d2", "", "w1"])
def test_record_submission_refused_for_a_non_holder(claim_id: str) -> None:
    generation = submitting("d1")
    before = snapshot(generation)
    assert not lifecycle.record_submission(generation, 0, claim_id, "req-x", at(3))
    assert snapshot(generation) == before


def test_record_submission_refused_for_a_stale_claim() -> None:
    """A dispatcher whose lease lapsed and was taken over does not record its request: the
    part has one submission, the taker's."""
    generation = submitting("d1")
    assert lifecycle.claim_submission(generation, 0, lease("d2", 100))
    before = snapshot(generation)
    assert not lifecycle.record_submission(generation, 0, "d1", "req-old", at(101))
    assert snapshot(generation) == before
    assert lifecycle.record_submission(generation, 0, "d2", "req-new", at(102))
    assert generation.part(0).fal_request_id == "req-new"


def test_record_submission_only_once() -> None:
    generation = submitted(0, "req-0")
    before = snapshot(generation)
    assert not lifecycle.record_submission(generation, 0, "d1", "req-again", at(4))
    assert snapshot(generation) == before


def test_record_submission_refused_after_release() -> None:
    generation = submitting("d1")
    assert lifecycle.release_submission(generation, 0, "d1", at(1))
    before = snapshot(generation)
    assert not lifecycle.record_submission(generation, 0, "d1", "req-0", at(2))
    assert snapshot(generation) == before


@pytest.mark.parametrize("then_complete", [False, True])
def test_record_submission_does_not_move_back_a_part_the_webhook_took(
    then_complete: bool,
) -> None:
    """The early webhook race: fal's webhook claims the part while the dispatcher still
    holds its submission claim; the dispatcher's late record moves nothing back."""
    generation = submitting("d1")
    assert lifecycle.claim_ingest(generation, 0, "req-0", lease("w1", 1)) is IngestClaim.CLAIMED
    if then_complete:
        assert complete(generation, 0, "w1", at(2))
    before = snapshot(generation)
    assert not lifecycle.record_submission(generation, 0, "d1", "req-0", at(3))
    assert not lifecycle.release_submission(generation, 0, "d1", at(3))
    assert not lifecycle.claim_submission(generation, 0, lease("d2", 500))
    assert snapshot(generation) == before
    assert generation.part(0).fal_request_id == "req-0"
    expected = PartStatus.COMPLETED if then_complete else PartStatus.INGESTING
    assert generation.part(0).status is expected


# --- claim_ingest ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "prepare",
    [
        pytest.param(make_generation, id="pending"),
        pytest.param(lambda: submitting("d1"), id="submitting-live"),
        pytest.param(lambda: submitting("d1", seconds=-500), id="submitting-lapsed"),
        pytest.param(lambda: submitted(0, "req-0"), id="submitted"),
    ],
)
def test_claim_ingest_from_an_ingestible_part(prepare: Callable[[], Generation]) -> None:
    """The signed webhook URL names the part, so its result may come before fal's id was
    recorded (decision 0003): ingest claims from pending, submitting or submitted."""
    generation = prepare()
    was_queued = generation.status is GenerationStatus.QUEUED
    submitted_at = generation.submitted_at
    claim = lifecycle.claim_ingest(generation, 0, "req-0", lease("w1", 10))
    assert claim is IngestClaim.CLAIMED
    part = generation.part(0)
    assert part.status is PartStatus.INGESTING
    assert part.claim_id == "w1"
    assert part.claim_expires_at == at(10) + LEASE
    assert part.fal_request_id == "req-0"
    assert generation.status is GenerationStatus.SUBMITTED
    assert generation.submitted_at == (at(10) if was_queued else submitted_at)
    assert generation.updated_at == at(10)


def test_claim_ingest_takes_the_request_whose_result_it_copies() -> None:
    """Two fal requests for one part (a crashed dispatcher): the result that claims the
    part becomes its request."""
    generation = submitted(0, "req-0")
    assert lifecycle.claim_ingest(generation, 0, "req-other", lease("w1", 5)) is IngestClaim.CLAIMED
    assert generation.part(0).fal_request_id == "req-other"


@pytest.mark.parametrize("seconds", [2, 50, 91.999])
@pytest.mark.parametrize("request_id", ["req-0", "req-other"])
def test_claim_ingest_busy_while_another_claim_is_live(seconds: float, request_id: str) -> None:
    generation = ingesting("w1", seconds=2)
    before = snapshot(generation)
    assert lifecycle.claim_ingest(generation, 0, request_id, lease("w2", seconds)) is (
        IngestClaim.BUSY
    )
    assert snapshot(generation) == before


@pytest.mark.parametrize("seconds", [92, 93, 3600])
def test_claim_ingest_takes_over_a_lapsed_claim(seconds: float) -> None:
    generation = ingesting("w1", seconds=2)
    assert lifecycle.claim_ingest(generation, 0, "req-0", lease("w2", seconds)) is (
        IngestClaim.CLAIMED
    )
    part = generation.part(0)
    assert part.status is PartStatus.INGESTING
    assert part.claim_id == "w2"
    assert part.claim_expires_at == at(seconds) + LEASE
    assert generation.updated_at == at(seconds)


def test_claim_ingest_done_after_completion() -> None:
    generation = ingesting("w1")
    assert complete(generation, 0, "w1", at(3))
    before = snapshot(generation)
    for claim_id, seconds in [("w1", 4), ("w2", 4), ("w3", 10_000)]:
        claim = lifecycle.claim_ingest(generation, 0, "req-0", lease(claim_id, seconds))
        assert claim is IngestClaim.DONE
    assert snapshot(generation) == before


def test_claim_ingest_of_a_completed_generation_is_ended() -> None:
    generation = ingesting("w1")
    assert lifecycle.claim_submission(generation, 1, lease("d2", 3))
    assert lifecycle.record_submission(generation, 1, "d2", "req-1", at(3))
    assert lifecycle.claim_ingest(generation, 1, "req-1", lease("w2", 3)) is IngestClaim.CLAIMED
    assert complete(generation, 0, "w1", at(4))
    assert complete(generation, 1, "w2", at(4))
    assert generation.status is GenerationStatus.COMPLETED
    before = snapshot(generation)
    assert lifecycle.claim_ingest(generation, 0, "req-0", lease("w3", 5)) is IngestClaim.ENDED
    assert snapshot(generation) == before


# --- requeue_lost ---------------------------------------------------------------------


def test_requeue_lost_makes_a_submitted_part_pending_for_one_resubmit() -> None:
    generation = submitted(0, "req-0")
    assert lifecycle.requeue_lost(generation, 0, "req-0", at(200))
    part = generation.part(0)
    assert part.status is PartStatus.PENDING
    assert part.fal_request_id is None
    assert part.claim_id is None and part.claim_expires_at is None
    assert generation.updated_at == at(200)
    assert lifecycle.claim_submission(generation, 0, lease("d2", 201))
    assert part.submit_attempts == 2


def test_requeue_lost_refused_for_another_request() -> None:
    """A check for a request the part no longer has (it was resubmitted) moves nothing."""
    generation = submitted(0, "req-0")
    before = snapshot(generation)
    assert not lifecycle.requeue_lost(generation, 0, "req-old", at(200))
    assert snapshot(generation) == before


@pytest.mark.parametrize(
    "status",
    [PartStatus.PENDING, PartStatus.SUBMITTING, PartStatus.INGESTING, PartStatus.COMPLETED],
)
def test_requeue_lost_refused_unless_submitted(status: PartStatus) -> None:
    generation = make_generation()
    held = status in (PartStatus.SUBMITTING, PartStatus.INGESTING)
    put(generation.part(0), status, "c1" if held else None, at(-1) if held else None, "req-0")
    before = snapshot(generation)
    assert not lifecycle.requeue_lost(generation, 0, "req-0", at(200))
    assert snapshot(generation) == before


# --- release_ingest -------------------------------------------------------------------


def test_release_ingest_by_the_holder() -> None:
    generation = ingesting("w1")
    assert lifecycle.release_ingest(generation, 0, "w1", at(5))
    part = generation.part(0)
    assert part.status is PartStatus.SUBMITTED
    assert part.claim_id is None and part.claim_expires_at is None
    assert part.fal_request_id == "req-0"
    assert generation.updated_at == at(5)
    # The next delivery may claim at once; the dispatcher may not submit again.
    assert not lifecycle.claim_submission(generation, 0, lease("d9", 6))
    assert lifecycle.claim_ingest(generation, 0, "req-0", lease("w2", 6)) is IngestClaim.CLAIMED


def test_release_ingest_of_an_early_claim_leaves_the_part_submitted() -> None:
    """A webhook that claimed from pending and failed to copy: fal has the request, so
    the part must not become pending (that would submit it twice)."""
    generation = make_generation()
    assert lifecycle.claim_ingest(generation, 0, "req-0", lease("w1")) is IngestClaim.CLAIMED
    assert lifecycle.release_ingest(generation, 0, "w1", at(1))
    assert generation.part(0).status is PartStatus.SUBMITTED
    assert not lifecycle.claim_submission(generation, 0, lease("d1", 2))


@pytest.mark.parametrize("claim_id", ["w2", "", "d1"])
def test_release_ingest_refused_for_a_non_holder(claim_id: str) -> None:
    generation = ingesting("w1")
    before = snapshot(generation)
    assert not lifecycle.release_ingest(generation, 0, claim_id, at(5))
    assert snapshot(generation) == before


def test_release_ingest_refused_for_a_holder_taken_over() -> None:
    generation = ingesting("w1", seconds=2)
    assert lifecycle.claim_ingest(generation, 0, "req-0", lease("w2", 200)) is IngestClaim.CLAIMED
    before = snapshot(generation)
    assert not lifecycle.release_ingest(generation, 0, "w1", at(201))
    assert snapshot(generation) == before


@pytest.mark.parametrize(
    "status",
    [PartStatus.PENDING, PartStatus.SUBMITTING, PartStatus.SUBMITTED, PartStatus.COMPLETED],
)
def test_release_ingest_refused_unless_ingesting(status: PartStatus) -> None:
    generation = make_generation()
    put(generation.part(0), status, "w1", at(100))
    before = snapshot(generation)
    assert not lifecycle.release_ingest(generation, 0, "w1", at(5))
    assert snapshot(generation) == before


# --- complete_part --------------------------------------------------------------------


def test_complete_part_by_the_holder() -> None:
    generation = ingesting("w1", index=1)
    part = generation.part(1)
    assert lifecycle.complete_part(
        generation, 1, "w1", images_for(part, "w1"), "77", {"inference": 1.5}, at(5)
    )
    assert part.status is PartStatus.COMPLETED
    assert part.completed_at == at(5)
    assert part.seed == "77"
    assert part.timings == {"inference": 1.5}
    assert part.claim_id is None and part.claim_expires_at is None
    assert [i.index for i in generation.images] == [4]
    # One part of two: the generation goes on.
    assert generation.status is GenerationStatus.SUBMITTED
    assert generation.completed_at is None
    assert generation.seed is None
    assert generation.updated_at == at(5)


@pytest.mark.parametrize("claim_id", ["w2", "", "d1"])
def test_complete_part_refused_for_a_non_holder_while_the_lease_is_live(claim_id: str) -> None:
    generation = ingesting("w1", seconds=2)
    before = snapshot(generation)
    assert not complete(generation, 0, claim_id, at(91))
    assert snapshot(generation) == before


def test_complete_part_by_a_holder_whose_own_lease_lapsed_untaken() -> None:
    generation = ingesting("w1", seconds=2)
    assert complete(generation, 0, "w1", at(1000))
    assert generation.part(0).status is PartStatus.COMPLETED


def test_complete_part_by_a_previous_holder_once_the_takers_lease_lapsed_too() -> None:
    generation = ingesting("w1", seconds=2)
    assert lifecycle.claim_ingest(generation, 0, "req-0", lease("w2", 100)) is IngestClaim.CLAIMED
    assert complete(generation, 0, "w1", at(190))
    part = generation.part(0)
    assert part.status is PartStatus.COMPLETED
    assert part.claim_id is None
    assert {i.path.split("/")[0] for i in generation.images} == {"w1"}
    # The taker finishing later is a duplicate.
    before = snapshot(generation)
    assert not complete(generation, 0, "w2", at(191))
    assert snapshot(generation) == before


def test_complete_part_refuses_a_taken_over_holder_while_the_takers_lease_is_live() -> None:
    """What the code does today. NB: complete_part's docstring says "A holder whose claim
    lapsed and was taken over may still finish first", which this contradicts (see the
    report: with ingest._discard_orphans the refused holder then deletes the objects the
    live taker is writing, at the same deterministic paths)."""
    generation = ingesting("w1", seconds=2)
    assert lifecycle.claim_ingest(generation, 0, "req-0", lease("w2", 100)) is IngestClaim.CLAIMED
    before = snapshot(generation)
    assert not complete(generation, 0, "w1", at(101))
    assert snapshot(generation) == before
    assert complete(generation, 0, "w2", at(102))


@pytest.mark.parametrize(
    "status", [PartStatus.PENDING, PartStatus.SUBMITTING, PartStatus.SUBMITTED]
)
def test_complete_part_refused_without_an_ingest_claim(status: PartStatus) -> None:
    generation = make_generation()
    put(generation.part(0), status, "w1", at(100), "req-0")
    before = snapshot(generation)
    assert not complete(generation, 0, "w1", at(5))
    assert snapshot(generation) == before


def test_a_duplicate_completion_changes_nothing() -> None:
    generation = ingesting("w1")
    assert complete(generation, 0, "w1", at(5))
    before = snapshot(generation)
    for claim_id, seconds in [("w1", 6), ("w2", 6), ("w1", 10_000)]:
        assert not complete(generation, 0, claim_id, at(seconds))
    assert snapshot(generation) == before


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_the_generation_completes_only_when_every_part_has(order: list[int]) -> None:
    generation = make_generation(5)
    for index in (0, 1):
        assert lifecycle.claim_submission(generation, index, lease(f"d{index}"))
        assert lifecycle.record_submission(generation, index, f"d{index}", f"req-{index}", at(1))
        claim = lifecycle.claim_ingest(generation, index, f"req-{index}", lease(f"w{index}", 2))
        assert claim is IngestClaim.CLAIMED
    first, last = order
    assert complete(generation, first, f"w{first}", at(3))
    assert generation.status is GenerationStatus.SUBMITTED
    assert generation.completed_at is None
    assert complete(generation, last, f"w{last}", at(4))
    assert generation.status is GenerationStatus.COMPLETED
    assert generation.completed_at == at(4)
    assert generation.seed == generation.parts[0].seed == "100"
    assert [i.index for i in generation.images] == [0, 1, 2, 3, 4]
    assert [i.path for i in generation.images] == [
        "w0/0.jpg",
        "w0/1.jpg",
        "w0/2.jpg",
        "w0/3.jpg",
        "w1/4.jpg",
    ]
    assert generation.is_terminal


def test_a_parts_images_are_replaced_not_duplicated() -> None:
    generation = ingesting("w1", index=1)
    generation.images = [
        *images_for(generation.part(0), "p0"),
        *images_for(generation.part(1), "old"),
    ]
    assert complete(generation, 1, "w1", at(5))
    assert [i.index for i in generation.images] == [0, 1, 2, 3, 4]
    assert generation.images[4].path == "w1/4.jpg"
    assert [i.path for i in generation.images[:4]] == [f"p0/{i}.jpg" for i in range(4)]


def test_complete_part_after_withdraw_cancel_completes_normally() -> None:
    generation = ingesting("w1")
    assert lifecycle.request_cancel(generation, at(3))
    assert lifecycle.withdraw_cancel(generation, at(4))
    assert complete(generation, 0, "w1", at(5))
    assert generation.part(0).status is PartStatus.COMPLETED


# --- fail, cancel, request_cancel, withdraw_cancel ------------------------------------


def mixed_generation() -> Generation:
    """17 images, 5 parts: completed, pending, submitting, submitted, ingesting."""
    generation = make_generation(17)
    assert lifecycle.claim_ingest(generation, 0, "req-0", lease("w0")) is IngestClaim.CLAIMED
    assert complete(generation, 0, "w0", at(1))
    assert lifecycle.claim_submission(generation, 2, lease("d2"))
    assert lifecycle.claim_submission(generation, 3, lease("d3"))
    assert lifecycle.record_submission(generation, 3, "d3", "req-3", at(1))
    assert lifecycle.claim_ingest(generation, 4, "req-4", lease("w4")) is IngestClaim.CLAIMED
    assert [p.status for p in generation.parts] == [PartStatus.COMPLETED, *UNFINISHED]
    return generation


def test_fail_ends_every_unfinished_part_and_keeps_completed_images() -> None:
    generation = mixed_generation()
    kept = snapshot(generation)["images"]
    assert lifecycle.fail(generation, ERROR, at(10))
    assert generation.status is GenerationStatus.FAILED
    assert generation.error == ERROR
    assert generation.completed_at == at(10)
    assert generation.canceled_at is None
    assert generation.updated_at == at(10)
    assert [p.status for p in generation.parts] == [PartStatus.COMPLETED] + [PartStatus.FAILED] * 4
    assert all(p.claim_id is None and p.claim_expires_at is None for p in generation.parts)
    assert snapshot(generation)["images"] == kept
    assert [i.index for i in generation.images] == [0, 1, 2, 3]


def test_cancel_ends_every_unfinished_part_and_keeps_completed_images() -> None:
    generation = mixed_generation()
    kept = snapshot(generation)["images"]
    assert lifecycle.cancel(generation, at(10))
    assert generation.status is GenerationStatus.CANCELED
    assert generation.canceled_at == at(10)
    assert generation.error is None
    assert generation.updated_at == at(10)
    assert [p.status for p in generation.parts] == [PartStatus.COMPLETED] + [
        PartStatus.CANCELED
    ] * 4
    assert all(p.claim_id is None and p.claim_expires_at is None for p in generation.parts)
    assert snapshot(generation)["images"] == kept


@pytest.mark.parametrize("move", ["fail", "cancel"])
def test_holders_cannot_move_an_ended_part(move: str) -> None:
    generation = mixed_generation()
    if move == "fail":
        assert lifecycle.fail(generation, ERROR, at(10))
    else:
        assert lifecycle.cancel(generation, at(10))
    before = snapshot(generation)
    assert not lifecycle.record_submission(generation, 2, "d2", "req-2", at(11))
    assert not complete(generation, 4, "w4", at(11))
    assert lifecycle.claim_ingest(generation, 3, "req-3", lease("w9", 11)) is IngestClaim.ENDED
    assert snapshot(generation) == before


def test_fail_after_request_cancel_is_a_cancel() -> None:
    generation = mixed_generation()
    assert lifecycle.request_cancel(generation, at(5))
    assert generation.cancel_requested_at == at(5)
    assert generation.status is GenerationStatus.SUBMITTED
    assert lifecycle.fail(generation, ERROR, at(6))
    assert generation.status is GenerationStatus.CANCELED
    assert generation.canceled_at == at(6)
    assert generation.error is None
    assert [p.status for p in generation.parts][1:] == [PartStatus.CANCELED] * 4


def test_fail_after_a_withdrawn_cancel_is_a_failure() -> None:
    generation = mixed_generation()
    assert lifecycle.request_cancel(generation, at(5))
    assert lifecycle.withdraw_cancel(generation, at(6))
    assert generation.cancel_requested_at is None
    assert generation.updated_at == at(6)
    assert lifecycle.fail(generation, ERROR, at(7))
    assert generation.status is GenerationStatus.FAILED
    assert generation.error == ERROR


def test_request_cancel_changes_no_part() -> None:
    generation = mixed_generation()
    parts = snapshot(generation)["parts"]
    assert lifecycle.request_cancel(generation, at(5))
    assert snapshot(generation)["parts"] == parts
    assert generation.updated_at == at(5)


def test_withdraw_cancel_refused_without_a_request() -> None:
    generation = mixed_generation()
    before = snapshot(generation)
    assert not lifecycle.withdraw_cancel(generation, at(5))
    assert snapshot(generation) == before


def test_cancel_of_a_queued_generation() -> None:
    generation = make_generation(5)
    assert lifecycle.cancel(generation, at(1))
    assert generation.status is GenerationStatus.CANCELED
    assert [p.status for p in generation.parts] == [PartStatus.CANCELED] * 2
    assert generation.images == []


# --- no move changes a terminal generation --------------------------------------------


def terminal_generation(status: GenerationStatus, odd: bool) -> Generation:
    """A realistic terminal record, or (odd) one whose parts were left in every state with
    live and lapsed claims, as a record from an older version or a bug might be: even
    then, nothing may move it."""
    generation = make_generation(17)
    generation.status = status
    generation.completed_at = at(50)
    generation.cancel_requested_at = at(40)
    generation.error = ERROR if status is GenerationStatus.FAILED else None
    generation.canceled_at = at(50) if status is GenerationStatus.CANCELED else None
    ended = {
        GenerationStatus.COMPLETED: PartStatus.COMPLETED,
        GenerationStatus.FAILED: PartStatus.FAILED,
        GenerationStatus.CANCELED: PartStatus.CANCELED,
    }[status]
    images: list[StoredImage] = []
    for part in generation.parts:
        if part.index == 0 or status is GenerationStatus.COMPLETED:
            put(part, PartStatus.COMPLETED, fal_request_id=f"req-{part.index}")
            images += images_for(part, "done")
        else:
            put(part, ended, fal_request_id=f"req-{part.index}")
    if odd:
        put(generation.part(1), PartStatus.PENDING)
        put(generation.part(2), PartStatus.SUBMITTING, "holder", at(10_000))
        put(generation.part(3), PartStatus.SUBMITTED, fal_request_id="req-3")
        put(generation.part(4), PartStatus.INGESTING, "holder", at(-10))
    generation.images = sorted(images, key=lambda image: image.index)
    generation.seed = "100"
    return generation


MoveFn = Callable[[Generation, int, str, datetime], Any]
MOVES: dict[str, MoveFn] = {
    "claim_submission": lambda g, i, c, now: lifecycle.claim_submission(g, i, Lease(c, now, LEASE)),
    "release_submission": lambda g, i, c, now: lifecycle.release_submission(g, i, c, now),
    "record_submission": lambda g, i, c, now: lifecycle.record_submission(g, i, c, "req-n", now),
    "claim_ingest": lambda g, i, c, now: lifecycle.claim_ingest(
        g, i, f"req-{i}", Lease(c, now, LEASE)
    ),
    "requeue_lost": lambda g, i, c, now: lifecycle.requeue_lost(g, i, f"req-{i}", now),
    "release_ingest": lambda g, i, c, now: lifecycle.release_ingest(g, i, c, now),
    "complete_part": lambda g, i, c, now: complete(g, i, c, now),
    "fail": lambda g, i, c, now: lifecycle.fail(g, ERROR, now),
    "cancel": lambda g, i, c, now: lifecycle.cancel(g, now),
    "request_cancel": lambda g, i, c, now: lifecycle.request_cancel(g, now),
    "withdraw_cancel": lambda g, i, c, now: lifecycle.withdraw_cancel(g, now),
    # The cleanup sweep's moves, with `now` as the staleness cutoff.
    "note_republished": lambda g, i, c, now: lifecycle.note_republished(g, now, now),
    "fail_stale": lambda g, i, c, now: lifecycle.fail_stale(g, ERROR, now, now),
}


@pytest.mark.parametrize("odd", [False, True], ids=["realistic", "odd-parts"])
@pytest.mark.parametrize("move", sorted(MOVES))
@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_no_move_changes_a_terminal_generation(
    status: GenerationStatus, move: str, odd: bool
) -> None:
    generation = terminal_generation(status, odd)
    before = snapshot(generation)
    before_json = generation.model_dump_json()
    refused = IngestClaim.ENDED if move == "claim_ingest" else False
    for index in range(len(generation.parts)):
        for claim_id in ("holder", "someone-else"):
            for now in (at(0), at(60), at(100_000)):
                assert MOVES[move](generation, index, claim_id, now) == refused
                assert snapshot(generation) == before
    assert generation.model_dump_json() == before_json


def test_every_move_is_covered_by_the_terminal_test() -> None:
    public = {
        name
        for name in vars(lifecycle)
        if not name.startswith("_")
        and callable(getattr(lifecycle, name))
        and getattr(getattr(lifecycle, name), "__module__", None) == lifecycle.__name__
        # copy_under_way asks, it does not move: tested on its own.
        and name not in {"Lease", "IngestClaim", "copy_under_way"}
    }
    assert public == set(MOVES)


# --- random interleavings of deliveries -----------------------------------------------


# How often each move is tried: the ending moves rarely, so parts get somewhere first.
WEIGHTS = {name: 6.0 for name in MOVES} | {
    "release_submission": 2.0,
    "release_ingest": 2.0,
    "requeue_lost": 1.0,
    "fail": 0.3,
    "cancel": 0.3,
    "request_cancel": 0.5,
    "withdraw_cancel": 0.5,
    "note_republished": 0.5,
    "fail_stale": 0.3,
}


class Run:
    """Random moves from several dispatcher and webhook deliveries against one record,
    checking the invariants after every move."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.generation = make_generation(self.rng.choice([1, 4, 5, 8, 9, 13]))
        self.now = T0
        self.claims: list[str] = []
        self.completions = [0] * len(self.generation.parts)
        self.records = [0] * len(self.generation.parts)
        self.requeues = [0] * len(self.generation.parts)
        self.fal_known = [False] * len(self.generation.parts)
        self.terminal: dict[str, Any] | None = None

    def claim_id(self) -> str:
        """A fresh claim, or a stale/current one from an earlier delivery (duplicates)."""
        if self.claims and self.rng.random() < 0.6:
            return self.rng.choice(self.claims)
        self.claims.append(f"c{len(self.claims)}")
        return self.claims[-1]

    def step(self) -> None:
        rng, generation = self.rng, self.generation
        self.now += timedelta(seconds=rng.choice([0, 0, 1, 5, 30, 60, 120]))
        index = rng.randrange(len(generation.parts))
        part = generation.part(index)
        duration = timedelta(seconds=rng.choice([1, 30, 90, 120]))
        before_status = part.status
        before = snapshot(generation)
        move = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        claim_id = self.claim_id()
        if move == "claim_submission":
            result = lifecycle.claim_submission(
                generation, index, Lease(claim_id, self.now, duration)
            )
            if result:
                # Never a second fal request once fal's id or result is known.
                assert not self.fal_known[index]
        elif move == "record_submission":
            result = lifecycle.record_submission(
                generation, index, claim_id, f"req-{index}-{claim_id}", self.now
            )
            if result:
                self.records[index] += 1
                self.fal_known[index] = True
        elif move == "requeue_lost":
            known = part.fal_request_id or "req-none"
            request_id = known if rng.random() < 0.7 else "req-unknown"
            result = lifecycle.requeue_lost(generation, index, request_id, self.now)
            if result:
                # The one sanctioned resubmit: fal no longer has the part's request.
                assert before_status is PartStatus.SUBMITTED
                assert request_id == known
                self.requeues[index] += 1
                self.fal_known[index] = False
        elif move == "claim_ingest":
            result = lifecycle.claim_ingest(
                generation, index, f"req-{index}-x", Lease(claim_id, self.now, duration)
            )
            if result is IngestClaim.CLAIMED:
                self.fal_known[index] = True
            else:
                assert snapshot(generation) == before
        elif move == "complete_part":
            result = complete(generation, index, claim_id, self.now)
            if result:
                self.completions[index] += 1
        else:
            result = MOVES[move](generation, index, claim_id, self.now)
        if result is False:
            assert snapshot(generation) == before, move
        holder = before["parts"][index]["claim_id"]
        holder_lapsed = self.now >= (before["parts"][index]["claim_expires_at"] or self.now)
        if result is True and move in ("release_submission", "record_submission", "release_ingest"):
            assert claim_id == holder, move  # only the holder
        if result is True and move == "complete_part":
            assert claim_id == holder or holder_lapsed
        if before_status is PartStatus.COMPLETED:
            assert part.status is PartStatus.COMPLETED
        if before_status in (PartStatus.SUBMITTED, PartStatus.INGESTING) and move != "requeue_lost":
            assert part.status not in (PartStatus.PENDING, PartStatus.SUBMITTING)
        self.check(move, before, result)

    def check(self, move: str, before: dict[str, Any], result: Any) -> None:
        generation = self.generation
        if self.terminal is not None:
            assert result in (False, IngestClaim.ENDED), move
            assert snapshot(generation) == self.terminal, move
        elif generation.is_terminal:
            self.terminal = snapshot(generation)
        assert all(n <= 1 for n in self.completions)
        # One recorded fal request per part, plus one per sanctioned resubmit.
        assert all(n <= 1 + r for n, r in zip(self.records, self.requeues, strict=True))
        indexes = [image.index for image in generation.images]
        assert len(indexes) <= generation.num_images
        assert indexes == sorted(set(indexes))
        completed = [p for p in generation.parts if p.status is PartStatus.COMPLETED]
        expected = sorted(
            i for p in completed for i in range(p.first_image, p.first_image + p.num_images)
        )
        assert indexes == expected
        assert [p.index for p in completed] == [i for i, n in enumerate(self.completions) if n == 1]
        all_done = len(completed) == len(generation.parts)
        assert (generation.status is GenerationStatus.COMPLETED) == all_done
        if not generation.is_terminal:
            assert all(p.status in (*UNFINISHED, PartStatus.COMPLETED) for p in generation.parts)
        for part in generation.parts:
            held = part.status in (PartStatus.SUBMITTING, PartStatus.INGESTING)
            assert (part.claim_id is not None) == held
            assert (part.claim_expires_at is not None) == held


@pytest.mark.parametrize("seed", range(60))
def test_random_deliveries_keep_the_invariants(seed: int) -> None:
    run = Run(seed)
    for _ in range(300):
        run.step()


def test_random_deliveries_reach_every_ending() -> None:
    """The random runs are not vacuous: they complete parts and end generations every way."""
    endings: set[GenerationStatus] = set()
    completions = 0
    for seed in range(60):
        run = Run(seed)
        for _ in range(300):
            run.step()
        endings.add(run.generation.status)
        completions += sum(run.completions)
    assert endings >= set(TERMINAL_STATUSES)
    assert completions > 60


# --- known bug: a taken-over ingest deletes the taker's objects -----------------------


def test_a_refused_taken_over_ingest_does_not_delete_the_takers_objects() -> None:
    """A webhook delivery W1 claims a part and copies for longer than INGEST_LEASE; fal's
    redelivery (or the watchdog) W2 takes the lapsed claim over and copies the same result
    to the same deterministic paths. W1 finishes first and complete_part refuses it (W2's
    lease is live): W1 must not then delete the objects W2 owns."""
    from types import SimpleNamespace

    from imagegen import ingest
    from imagegen.storage import image_path

    generation = ingesting("w1", seconds=2)  # W1's lease runs to t=92
    claim = lifecycle.claim_ingest(generation, 0, "req-0", lease("w2", 100))
    assert claim is IngestClaim.CLAIMED
    part = generation.part(0)
    paths = [image_path(generation.user_id, generation.id, i, "jpg") for i in range(4)]
    same_objects = [
        image.model_copy(update={"path": p})
        for image, p in zip(
            sorted(images_for(part), key=lambda image: image.index), paths, strict=True
        )
    ]

    # W1 finishes at t=101: refused, so ingest discards what it wrote.
    assert not lifecycle.complete_part(generation, 0, "w1", same_objects, "1", {}, at(101))
    deleted: list[str] = []
    collaborators = SimpleNamespace(
        repo=SimpleNamespace(get=lambda _id: generation.model_copy(deep=True)),
        store=SimpleNamespace(delete=deleted.extend),
    )
    ingest._discard_orphans(collaborators, generation.id, 0, same_objects)

    # W2 finishes at t=102 with the same paths: the generation completes on them.
    assert lifecycle.complete_part(generation, 0, "w2", same_objects, "1", {}, at(102))
    assert {image.path for image in generation.images} >= set(paths)
    assert not set(deleted) & set(paths), "W1 deleted the objects of the completed part"


def test_a_copy_is_under_way_while_an_ingest_claim_is_live() -> None:
    part = ingesting("w1", seconds=2).part(0)
    assert lifecycle.copy_under_way(part, at(2))
    assert lifecycle.copy_under_way(part, at(91.999))
    assert not lifecycle.copy_under_way(part, at(92))  # lapsed: the next claim takes over
    assert not lifecycle.copy_under_way(submitted().part(0), at(2))
    released = ingesting("w1", seconds=2)
    assert lifecycle.release_ingest(released, 0, "w1", at(3))
    assert not lifecycle.copy_under_way(released.part(0), at(3))
