"""The Firestore repository against the real emulator and client."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from imagegen import clients, context, transactions
from imagegen.accept import build_generation
from imagegen.auth import Principal, authenticate, issue_api_key
from imagegen.errors import AuthenticationError, RetryableError
from imagegen.lifecycle import IngestClaim, Lease
from imagegen.models.records import (
    ErrorInfo,
    GenerationStatus,
    PartStatus,
    StoredImage,
)
from imagegen.repository import FalRequestRef, GenerationRepository
from imagegen.validation import parse_generation_request

pytestmark = pytest.mark.integration
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LEASE = timedelta(seconds=90)
LATER = NOW + timedelta(hours=1)


def _new_generation(body: bytes = b'{"prompt": "a red fox", "numImages": 2}'):
    generation = build_generation(
        parse_generation_request(body), Principal("user-a", "user", "k"), NOW
    )
    context.generations().create(generation)
    return generation


def _image(generation, index: int) -> StoredImage:
    return StoredImage(
        index=index,
        bucket="b",
        path=f"p/{index}.jpg",
        width=64,
        height=64,
        content_type="image/jpeg",
        file_size=10,
        seed="7",
    )


def test_create_and_get_round_trip(stack_env) -> None:
    generation = _new_generation(b'{"prompt": "a red fox", "seed": 123456789012345678901234567890}')
    loaded = context.generations().get(generation.id)
    assert loaded == generation
    assert loaded.parameters["seed"] == "123456789012345678901234567890"
    assert loaded.parts[0].seed == "123456789012345678901234567890"


def test_missing_generation_is_none(stack_env) -> None:
    assert context.generations().get(str(uuid.uuid4())) is None


def test_submission_then_completion(stack_env) -> None:
    repo = context.generations()
    generation = _new_generation()
    request = f"req-{generation.id}"
    claimed = repo.claim_submission(generation.id, 0, Lease("d1", NOW, LEASE))
    assert claimed.parts[0].status is PartStatus.SUBMITTING
    assert (claimed.parts[0].claim_id, claimed.parts[0].submit_attempts) == ("d1", 1)
    assert claimed.status is GenerationStatus.QUEUED
    # A second delivery cannot claim the part while the first holds it: one fal request.
    assert repo.claim_submission(generation.id, 0, Lease("d2", NOW, LEASE)) is None
    # Only the holder records fal's id.
    assert repo.record_submission(generation.id, 0, "d2", "another", NOW) is None
    assert repo.find_fal_request("another") is None

    submitted = repo.record_submission(generation.id, 0, "d1", request, NOW)
    assert submitted.status is GenerationStatus.SUBMITTED
    assert submitted.parts[0].status is PartStatus.SUBMITTED
    assert submitted.parts[0].fal_request_id == request
    assert submitted.parts[0].claim_id is None
    assert repo.find_fal_request(request) == FalRequestRef(generation.id, 0)
    # Exactly one submission per part: not recorded twice, not claimed again (even later).
    assert repo.record_submission(generation.id, 0, "d1", "another", NOW) is None
    assert repo.claim_submission(generation.id, 0, Lease("d3", LATER, LEASE)) is None
    assert repo.find_fal_request("another") is None
    assert repo.get(generation.id) == submitted

    claim, ingesting = repo.claim_ingest(generation.id, 0, request, Lease("w1", NOW, LEASE))
    assert claim is IngestClaim.CLAIMED
    assert ingesting.parts[0].status is PartStatus.INGESTING
    assert ingesting.parts[0].claim_id == "w1"
    # A second delivery of the webhook meanwhile: the holder is copying.
    assert repo.claim_ingest(generation.id, 0, request, Lease("w2", NOW, LEASE)) == (
        IngestClaim.BUSY,
        None,
    )
    # ... and cannot complete the part in the holder's place.
    assert repo.complete_part(generation.id, 0, "w2", [_image(generation, 0)], "9", {}, NOW) is None

    done = repo.complete_part(
        generation.id,
        0,
        "w1",
        [_image(generation, 1), _image(generation, 0)],
        "7",
        {"inference": 1},
        NOW,
    )
    assert done.status is GenerationStatus.COMPLETED
    assert [image.index for image in done.images] == [0, 1]
    assert done.parts[0].status is PartStatus.COMPLETED
    assert done.parts[0].claim_id is None
    assert done.seed == "7"
    # A duplicate completion changes nothing, by the holder or anyone else, even later.
    for claim_id, now in (("w1", NOW), ("w2", NOW), ("x", LATER)):
        assert (
            repo.complete_part(generation.id, 0, claim_id, [_image(generation, 5)], "9", {}, now)
            is None
        )
    assert repo.claim_ingest(generation.id, 0, request, Lease("w3", LATER, LEASE)) == (
        IngestClaim.ENDED,
        None,
    )
    assert repo.get(generation.id) == done


def test_parts_complete_in_any_order_with_images_in_order(stack_env) -> None:
    """5 images are two parts (4 + 1), each with its own fal request and lookup."""
    repo = context.generations()
    generation = _new_generation(b'{"prompt": "a red fox", "numImages": 5}')
    assert [(p.first_image, p.num_images) for p in generation.parts] == [(0, 4), (4, 1)]
    for index in (0, 1):
        assert repo.claim_submission(generation.id, index, Lease(f"d{index}", NOW, LEASE))
        assert repo.record_submission(generation.id, index, f"d{index}", f"r{index}", NOW)
        assert repo.find_fal_request(f"r{index}") == FalRequestRef(generation.id, index)
        claim, _ = repo.claim_ingest(
            generation.id, index, f"r{index}", Lease(f"w{index}", NOW, LEASE)
        )
        assert claim is IngestClaim.CLAIMED

    first = repo.complete_part(generation.id, 1, "w1", [_image(generation, 4)], "2", {}, NOW)
    assert first.status is GenerationStatus.SUBMITTED
    assert [image.index for image in first.images] == [4]
    images = [_image(generation, i) for i in (3, 0, 2, 1)]
    done = repo.complete_part(generation.id, 0, "w0", images, "1", {}, NOW)
    assert done.status is GenerationStatus.COMPLETED
    assert [image.index for image in done.images] == [0, 1, 2, 3, 4]
    assert done.seed == "1"
    assert repo.get(generation.id) == done


def test_an_early_webhook_wins_over_the_dispatchers_record(stack_env) -> None:
    """Decision 0003: the webhook may claim a part the dispatcher still holds; the late
    record then moves nothing back (and writes no lookup)."""
    repo = context.generations()
    generation = _new_generation()
    assert repo.claim_submission(generation.id, 0, Lease("d1", NOW, LEASE))
    claim, ingesting = repo.claim_ingest(generation.id, 0, "r-early", Lease("w1", NOW, LEASE))
    assert claim is IngestClaim.CLAIMED
    assert ingesting.status is GenerationStatus.SUBMITTED
    assert repo.record_submission(generation.id, 0, "d1", "r-early", NOW) is None
    assert repo.release_submission(generation.id, 0, "d1", NOW) is None
    assert repo.find_fal_request("r-early") is None
    assert repo.get(generation.id) == ingesting
    done = repo.complete_part(
        generation.id, 0, "w1", [_image(generation, 0), _image(generation, 1)], None, {}, NOW
    )
    assert done.status is GenerationStatus.COMPLETED


def test_released_claims_can_be_taken_again(stack_env) -> None:
    repo = context.generations()
    generation = _new_generation()
    assert repo.claim_submission(generation.id, 0, Lease("d1", NOW, LEASE))
    assert repo.release_submission(generation.id, 0, "other", NOW) is None
    released = repo.release_submission(generation.id, 0, "d1", NOW)
    assert released.parts[0].status is PartStatus.PENDING
    again = repo.claim_submission(generation.id, 0, Lease("d2", NOW, LEASE))
    assert again.parts[0].submit_attempts == 2
    assert repo.record_submission(generation.id, 0, "d2", f"r-{generation.id}", NOW)

    assert repo.claim_ingest(generation.id, 0, f"r-{generation.id}", Lease("w1", NOW, LEASE))[
        0
    ] is (IngestClaim.CLAIMED)
    assert repo.release_ingest(generation.id, 0, "other", NOW) is None
    assert repo.release_ingest(generation.id, 0, "w1", NOW).parts[0].status is PartStatus.SUBMITTED
    claim, _ = repo.claim_ingest(generation.id, 0, f"r-{generation.id}", Lease("w2", NOW, LEASE))
    assert claim is IngestClaim.CLAIMED


def test_a_lapsed_claim_is_taken_over(stack_env) -> None:
    """Leases survive the Firestore round trip (timestamps compare with `now`)."""
    repo = context.generations()
    generation = _new_generation()
    assert repo.claim_submission(generation.id, 0, Lease("d1", NOW, LEASE))
    assert repo.claim_submission(generation.id, 0, Lease("d2", NOW + LEASE / 2, LEASE)) is None
    taken = repo.claim_submission(generation.id, 0, Lease("d2", NOW + LEASE, LEASE))
    assert (taken.parts[0].claim_id, taken.parts[0].submit_attempts) == ("d2", 2)
    assert repo.record_submission(generation.id, 0, "d1", "r-stale", NOW + LEASE) is None


def test_claim_ingest_of_a_missing_generation(stack_env) -> None:
    missing = str(uuid.uuid4())
    assert context.generations().claim_ingest(missing, 0, "r", Lease("w", NOW, LEASE)) == (
        IngestClaim.ENDED,
        None,
    )


def _race(calls: list[Callable[[], object]]) -> list[object]:
    """Runs the calls at once from threads; a contention error is retried, as a redelivery
    would be."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait()
        for _ in range(5):
            try:
                return call()
            except RetryableError:
                continue
        raise AssertionError("still contended after 5 deliveries")

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_submission_claims_have_one_winner(stack_env) -> None:
    repo = context.generations()
    generation = _new_generation()
    claims = ["d1", "d2"]
    results = _race(
        [lambda c=c: repo.claim_submission(generation.id, 0, Lease(c, NOW, LEASE)) for c in claims]
    )
    winners = [c for c, r in zip(claims, results, strict=True) if r is not None]
    assert len(winners) == 1
    stored = repo.get(generation.id).parts[0]
    assert stored.status is PartStatus.SUBMITTING
    assert (stored.claim_id, stored.submit_attempts) == (winners[0], 1)


def test_concurrent_ingest_claims_have_one_winner(stack_env) -> None:
    repo = context.generations()
    generation = _new_generation()
    claims = ["w1", "w2"]
    results = _race(
        [lambda c=c: repo.claim_ingest(generation.id, 0, "r", Lease(c, NOW, LEASE)) for c in claims]
    )
    assert sorted(claim for claim, _ in results) == [IngestClaim.BUSY, IngestClaim.CLAIMED]
    winner = next(
        c for c, (claim, _) in zip(claims, results, strict=True) if claim is IngestClaim.CLAIMED
    )
    assert repo.get(generation.id).parts[0].claim_id == winner


def test_concurrent_completions_of_different_parts_are_all_kept(stack_env) -> None:
    """The parts of one generation completed at once (two webhook deliveries) each land:
    the loser of a write re-reads and applies its part to the winner's result."""
    repo = context.generations()
    for _ in range(5):
        generation = _new_generation(b'{"prompt": "a red fox", "numImages": 5}')
        for index in (0, 1):
            repo.claim_submission(generation.id, index, Lease(f"d{index}", NOW, LEASE))
            repo.record_submission(
                generation.id, index, f"d{index}", f"r{generation.id}{index}", NOW
            )
            repo.claim_ingest(
                generation.id, index, f"r{generation.id}{index}", Lease(f"w{index}", NOW, LEASE)
            )
        images = {0: [_image(generation, i) for i in range(4)], 1: [_image(generation, 4)]}
        results = _race(
            [
                lambda i=i, g=generation.id, parts=images: repo.complete_part(
                    g, i, f"w{i}", parts[i], "1", {}, NOW
                )
                for i in (0, 1)
            ]
        )
        assert all(r is not None for r in results)
        stored = repo.get(generation.id)
        assert stored.status is GenerationStatus.COMPLETED
        assert [image.index for image in stored.images] == [0, 1, 2, 3, 4]


def test_fail_is_terminal(stack_env) -> None:
    repo = context.generations()
    generation = _new_generation()
    failed = repo.fail(generation.id, ErrorInfo(code="fal_rejected", message="no"), NOW)
    assert failed.status is GenerationStatus.FAILED
    assert failed.error.code == "fal_rejected"
    assert repo.fail(generation.id, ErrorInfo(code="again", message="x"), NOW) is None
    assert repo.complete_part(generation.id, 0, "r", [_image(generation, 0)], None, {}, NOW) is None
    assert repo.get(generation.id).error.code == "fal_rejected"


def test_cancel_is_asked_of_the_fresh_record(stack_env) -> None:
    repo = context.generations()
    generation = _new_generation()
    assert repo.cancel(generation.id, NOW, lambda g: False) is None
    assert repo.get(generation.id).status is GenerationStatus.QUEUED
    seen: list[GenerationStatus] = []
    canceled = repo.cancel(generation.id, NOW, lambda g: seen.append(g.status) or True)
    assert seen[-1] is GenerationStatus.QUEUED
    assert canceled.status is GenerationStatus.CANCELED
    assert canceled.parts[0].status is PartStatus.CANCELED
    assert repo.cancel(generation.id, NOW, lambda g: True) is None
    assert repo.request_cancel(generation.id, NOW) is None


def test_fail_after_request_cancel_is_a_cancel(stack_env) -> None:
    repo = context.generations()
    generation = _new_generation()
    assert repo.withdraw_cancel(generation.id, NOW) is None
    assert repo.request_cancel(generation.id, NOW).cancel_requested_at == NOW
    assert repo.withdraw_cancel(generation.id, NOW).cancel_requested_at is None
    assert repo.request_cancel(generation.id, NOW)
    ended = repo.fail(generation.id, ErrorInfo(code="fal_error", message="canceled"), NOW)
    assert ended.status is GenerationStatus.CANCELED
    assert ended.error is None
    assert repo.get(generation.id) == ended


def test_api_keys_are_stored_hashed(stack_env) -> None:
    keys = context.api_keys()
    api_key, record = issue_api_key(keys, "user-k", "user", NOW)
    principal = authenticate(keys, f"Bearer {api_key}")
    assert principal.user_id == "user-k" and principal.key_id == record.key_id
    from google.cloud import firestore

    stored = [
        d.id
        for d in firestore.Client(project=stack_env["GCP_PROJECT"]).collection("apiKeys").stream()
    ]
    assert api_key not in stored
    with pytest.raises(AuthenticationError):
        authenticate(keys, f"Bearer {api_key}x")


def _counting_reads(repo: GenerationRepository) -> list[int]:
    """How many documents the repository's client reads with get_all, call by call."""
    calls: list[int] = []
    real = repo._db.get_all

    def get_all(refs, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        refs = list(refs)
        calls.append(len(refs))
        return real(refs, *args, **kwargs)

    repo._db.get_all = get_all  # type: ignore[method-assign]
    return calls


def test_a_change_after_this_instances_own_write_commits_without_reading(stack_env) -> None:
    """The dispatcher's claim then record, the webhook's claim then completion: the second
    change of each run starts from the version the first one wrote."""
    repo = GenerationRepository(clients.firestore_client())
    generation = build_generation(
        parse_generation_request(b'{"prompt": "a red fox"}'), Principal("user-a", "user", "k"), NOW
    )
    repo.create(generation)
    reads = _counting_reads(repo)
    assert repo.claim_submission(generation.id, 0, Lease("d1", NOW, LEASE)) is not None
    assert repo.record_submission(generation.id, 0, "d1", f"r-{generation.id}", NOW) is not None
    claim, _ = repo.claim_ingest(generation.id, 0, f"r-{generation.id}", Lease("w", NOW, LEASE))
    assert claim is IngestClaim.CLAIMED
    done = repo.complete_part(generation.id, 0, "w", [_image(generation, 0)], "7", {}, NOW)
    assert done is not None and done.status is GenerationStatus.COMPLETED
    assert reads == []
    # What was committed is what a fresh read finds.
    assert context.generations().get(generation.id) == done


def test_a_stale_version_is_refused_and_the_change_applied_to_the_latest(stack_env) -> None:
    mine, theirs = (GenerationRepository(clients.firestore_client()) for _ in range(2))
    generation = _new_generation(b'{"prompt": "a red fox", "numImages": 5}')  # 2 parts
    assert mine.claim_submission(generation.id, 0, Lease("d1", NOW, LEASE)) is not None
    # Another instance changes the record after this one's last write.
    assert theirs.claim_submission(generation.id, 1, Lease("d2", NOW, LEASE)) is not None
    reads = _counting_reads(mine)
    recorded = mine.record_submission(generation.id, 0, "d1", f"r-{generation.id}", NOW)
    assert reads == [1]  # refused on the stale version, then read once
    assert recorded is not None
    assert [p.status for p in recorded.parts] == [PartStatus.SUBMITTED, PartStatus.SUBMITTING]
    assert context.generations().get(generation.id) == recorded


def test_nothing_to_do_on_a_stale_version_is_decided_again_on_the_latest(stack_env) -> None:
    """Only a commit checks the version: a refusal based on this instance's old copy would
    never be checked, so it is made again on a fresh read."""
    mine, theirs = (GenerationRepository(clients.firestore_client()) for _ in range(2))
    generation = _new_generation()
    assert mine.claim_submission(generation.id, 0, Lease("d1", NOW, LEASE)) is not None
    # Elsewhere the claim is given back (a retryable fal error): the part is pending again.
    assert theirs.release_submission(generation.id, 0, "d1", NOW) is not None
    # This instance's copy still shows d1's live claim, under which the part is not free.
    claimed = mine.claim_submission(generation.id, 0, Lease("d3", NOW, LEASE))
    assert claimed is not None and claimed.parts[0].claim_id == "d3"


def test_an_error_raised_on_a_stale_version_is_raised_only_if_the_latest_agrees(
    stack_env,
) -> None:
    db = clients.firestore_client()
    ref = db.collection("knownVersionTest").document(str(uuid.uuid4()))
    ref.set({"n": 1})
    stale = ref.get()
    ref.set({"n": 2})

    def body(snapshot, batch):  # noqa: ANN001, ANN202
        if snapshot.get("n") != 2:
            raise ValueError("decided on an old version")
        transactions.guarded_update(batch, snapshot, {"n": 3})
        return "written"

    assert transactions.read_then_write(db, ref, body, attempts=3, known=stale) == "written"
    assert ref.get().get("n") == 3
    with pytest.raises(ValueError, match="old version"):
        transactions.read_then_write(db, ref, body, attempts=3)
