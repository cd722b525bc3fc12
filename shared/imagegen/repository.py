"""Firestore persistence for generations, fal request lookups and API keys.

Every state change of a generation is applied to the record's latest version and written only
if the record is still that version (an optimistic write: `transactions.read_then_write`), so
redelivered events and concurrent deliveries see each other's effects. The latest version is
the one this instance last wrote or read, if it has one, else a fresh read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from imagegen import lifecycle, transactions
from imagegen.limits import Ledger
from imagegen.models.records import (
    ErrorInfo,
    Generation,
    GenerationStatus,
    StoredImage,
)
from imagegen.ttl_cache import TtlCache

if TYPE_CHECKING:
    from google.cloud import firestore
    from google.cloud.firestore_v1.types import WriteResult

log = logging.getLogger(__name__)
GENERATIONS = "generations"
FAL_REQUESTS = "falRequests"
API_KEYS = "apiKeys"
DELETED_GENERATIONS = "deletedGenerations"
# How long a deleted generation's tombstone is kept (a TTL policy on `expire_at` removes it).
TOMBSTONE_TTL = timedelta(days=30)
# Versions of generations this instance last wrote or read: a generation's changes come in
# runs on one instance (claim, then record; claim, then complete), and each can then commit
# against the version the previous one left instead of reading it first. A stale entry costs
# one refused commit. Long enough for a run of changes, short enough to stay small.
KNOWN_VERSION_SECONDS = 120.0
KNOWN_VERSIONS_MAX = 2_000


@dataclass(frozen=True)
class FalRequestRef:
    generation_id: str
    part_index: int


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    user_id: str
    role: str
    revoked: bool


@dataclass(frozen=True)
class StoredApiKey:
    """An API key's document as administrators see it (the key itself is never stored)."""

    key_hash: str
    record: ApiKeyRecord
    created_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class HistoryFilter:
    """Which of a user's generations a history query selects."""

    user_id: str
    status: GenerationStatus | None = None
    model: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive


@dataclass(frozen=True)
class HistoryPosition:
    """Where a history page starts: just after the item with this (created_at, id)."""

    created_at: datetime
    generation_id: str


@dataclass(frozen=True)
class HistoryPage:
    generations: list[Generation]
    total: int
    # The last item of this page when more follow, else None.
    more_after: HistoryPosition | None


def count_of(query: Any, transaction: firestore.Transaction | None = None) -> int:
    """A count aggregation's number (the client's result type is untyped nested lists)."""
    result: Any = query.count(alias="n").get(transaction=transaction)
    return int(result[0][0].value)


def _document(generation: Generation) -> dict[str, Any]:
    return generation.model_dump(mode="python")


def _states(generation: Generation) -> tuple[str, ...]:
    return (generation.status.value, *(part.status.value for part in generation.parts))


def _log_state_change(generation: Generation, before: tuple[str, ...], after: tuple[str, ...]):
    """One line per committed state change (not per transaction attempt)."""
    if before == after:
        return
    log.info(
        "state change: %s -> %s",
        before[0],
        after[0],
        extra={
            "generationId": generation.id,
            "from": before[0],
            "to": after[0],
            "parts": [
                f"{b}->{a}" if b != a else a for b, a in zip(before[1:], after[1:], strict=True)
            ],
        },
    )


class GenerationRepository:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client
        self._ledger = Ledger(client)
        self._known: TtlCache[str, firestore.DocumentSnapshot] = TtlCache(
            KNOWN_VERSION_SECONDS, KNOWN_VERSIONS_MAX
        )

    def _remember(
        self, ref: firestore.DocumentReference, data: dict[str, Any], result: WriteResult
    ) -> None:
        """Keeps `data` as the version `result` (the commit's WriteResult for it) made."""
        from google.cloud.firestore_v1.base_document import DocumentSnapshot

        snapshot = DocumentSnapshot(ref, data, True, None, result.update_time, result.update_time)
        self._known.put(ref.id, snapshot)

    def _ref(self, generation_id: str) -> firestore.DocumentReference:
        return self._db.collection(GENERATIONS).document(generation_id)

    def create(self, generation: Generation) -> None:
        ref, data = self._ref(generation.id), _document(generation)
        self._remember(ref, data, ref.create(data))

    def create_in(self, batch: firestore.WriteBatch, generation: Generation) -> None:
        batch.create(self._ref(generation.id), _document(generation))

    def get_many(
        self, generation_ids: list[str], transaction: firestore.Transaction | None = None
    ) -> list[Generation]:
        """The generations that exist, in the order of `generation_ids`."""
        snapshots = self._db.get_all(
            [self._ref(i) for i in generation_ids], transaction=transaction
        )
        found = {s.id: Generation.model_validate(s.to_dict()) for s in snapshots if s.exists}
        return [found[i] for i in generation_ids if i in found]

    def get(self, generation_id: str) -> Generation | None:
        snapshot = self._ref(generation_id).get()
        if not snapshot.exists:
            self._known.discard(generation_id)
            return None
        self._known.put(generation_id, snapshot)
        return Generation.model_validate(snapshot.to_dict())

    def _update(self, generation_id: str, change) -> Generation | None:  # noqa: ANN001
        """Applies `change(generation, batch) -> bool` to the record's latest version (this
        instance's own last write or read, else a fresh read) and writes it, with the writes
        `change` staged, only if the record is still that version (else reads again:
        `transactions.read_then_write`). A generation that fails or is canceled is refunded
        in the same commit, so usage cannot drift. Writers of one generation in this
        instance (its parts delivered at once) take turns, so the later one starts from the
        earlier one's result instead of losing its commit; correctness rests on the
        condition."""
        ref = self._ref(generation_id)
        staged: list[tuple[int, dict[str, Any]]] = []
        changes: list[tuple[tuple[str, ...], tuple[str, ...]]] = []

        def run(snapshot: firestore.DocumentSnapshot, batch: firestore.WriteBatch):  # noqa: ANN202
            staged.clear()
            if not snapshot.exists:
                return None
            generation = Generation.model_validate(snapshot.to_dict())
            was_terminal = generation.is_terminal
            before = _states(generation)
            if not change(generation, batch):
                return None
            if not was_terminal and generation.is_terminal:
                self._ledger.on_end(batch, generation)
            document = _document(generation)
            staged.append((len(batch), document))
            transactions.guarded_update(batch, snapshot, document)
            changes.append((before, _states(generation)))
            return generation

        def committed(results: list[WriteResult]) -> None:
            position, document = staged[-1]
            self._remember(ref, document, results[position])

        with transactions.serialized(f"generation:{generation_id}"):
            try:
                updated = transactions.read_then_write(
                    self._db,
                    ref,
                    run,
                    attempts=20,
                    known=self._known.get(generation_id),
                    committed=committed,
                )
            except BaseException:
                self._known.discard(generation_id)
                raise
        if updated is not None and changes:
            _log_state_change(updated, *changes[-1])
        return updated

    def _apply(self, generation_id: str, move: Callable[[Generation], bool]) -> Generation | None:
        """A pure state-machine move (imagegen.lifecycle), written optimistically."""
        return self._update(generation_id, lambda generation, _: move(generation))

    def claim_submission(
        self, generation_id: str, index: int, lease: lifecycle.Lease
    ) -> Generation | None:
        return self._apply(generation_id, lambda g: lifecycle.claim_submission(g, index, lease))

    def release_submission(
        self, generation_id: str, index: int, claim_id: str, now: datetime
    ) -> Generation | None:
        return self._apply(
            generation_id, lambda g: lifecycle.release_submission(g, index, claim_id, now)
        )

    def record_submission(
        self, generation_id: str, index: int, claim_id: str, fal_request_id: str, now: datetime
    ) -> Generation | None:
        """fal accepted the part's request; None if this claim no longer holds the part.
        The lookup document lets a webhook without our signed URL find the part."""
        lookup = self._db.collection(FAL_REQUESTS).document(fal_request_id)

        def change(generation: Generation, batch: firestore.WriteBatch) -> bool:
            if not lifecycle.record_submission(generation, index, claim_id, fal_request_id, now):
                return False
            batch.set(
                lookup, {"generation_id": generation_id, "part_index": index, "created_at": now}
            )
            return True

        return self._update(generation_id, change)

    def claim_ingest(
        self, generation_id: str, index: int, fal_request_id: str, lease: lifecycle.Lease
    ) -> tuple[lifecycle.IngestClaim, Generation | None]:
        outcome: list[lifecycle.IngestClaim] = []

        def move(generation: Generation) -> bool:
            outcome.append(lifecycle.claim_ingest(generation, index, fal_request_id, lease))
            return outcome[-1] is lifecycle.IngestClaim.CLAIMED

        generation = self._apply(generation_id, move)
        return (outcome[-1] if outcome else lifecycle.IngestClaim.ENDED), generation

    def requeue_lost(
        self, generation_id: str, index: int, fal_request_id: str, now: datetime
    ) -> Generation | None:
        return self._apply(
            generation_id, lambda g: lifecycle.requeue_lost(g, index, fal_request_id, now)
        )

    def release_ingest(
        self, generation_id: str, index: int, claim_id: str, now: datetime
    ) -> Generation | None:
        return self._apply(
            generation_id, lambda g: lifecycle.release_ingest(g, index, claim_id, now)
        )

    def complete_part(
        self,
        generation_id: str,
        index: int,
        claim_id: str,
        images: list[StoredImage],
        seed: str | None,
        timings: dict[str, Any],
        now: datetime,
    ) -> Generation | None:
        """Records a part's images; None if this claim no longer may (a duplicate)."""
        return self._apply(
            generation_id,
            lambda g: lifecycle.complete_part(g, index, claim_id, images, seed, timings, now),
        )

    def fail(self, generation_id: str, error: ErrorInfo, now: datetime) -> Generation | None:
        """Moves a generation to failed (or canceled, if a cancel was under way); None if it
        had already ended."""
        return self._apply(generation_id, lambda g: lifecycle.fail(g, error, now))

    def cancel(
        self, generation_id: str, now: datetime, allow: Callable[[Generation], bool]
    ) -> Generation | None:
        """Cancels a generation that has not ended if `allow(generation)` (called on the
        fresh read inside the transaction) agrees; None otherwise."""
        return self._apply(generation_id, lambda g: allow(g) and lifecycle.cancel(g, now))

    def request_cancel(self, generation_id: str, now: datetime) -> Generation | None:
        """Notes that fal is being asked to cancel (so the error fal then reports cancels
        the generation rather than failing it); None if it has ended."""
        return self._apply(generation_id, lambda g: lifecycle.request_cancel(g, now))

    def withdraw_cancel(self, generation_id: str, now: datetime) -> Generation | None:
        """fal had already finished: the generation goes on to complete (or fail) normally."""
        return self._apply(generation_id, lambda g: lifecycle.withdraw_cancel(g, now))

    def note_republished(
        self, generation_id: str, stale_before: datetime, now: datetime
    ) -> Generation | None:
        """Claims the one re-publish of a generation stuck in `queued` (cleanup); None if it
        moved on, ended, or was re-published already."""
        return self._apply(
            generation_id, lambda g: lifecycle.note_republished(g, stale_before, now)
        )

    def fail_stale(
        self, generation_id: str, error: ErrorInfo, stale_before: datetime, now: datetime
    ) -> Generation | None:
        """Fails a generation still unchanged since `stale_before` on the fresh read
        (cleanup's backstop); None if it moved on or ended."""
        return self._apply(
            generation_id, lambda g: lifecycle.fail_stale(g, error, stale_before, now)
        )

    def delete(self, generation_id: str, user_id: str, now: datetime) -> bool:
        """Deletes the owner's record with its fal lookups and writes its tombstone, in one
        transaction; False if there was no such record of that user."""
        ref = self._ref(generation_id)
        tombstone = self._db.collection(DELETED_GENERATIONS).document(generation_id)

        def run(transaction: firestore.Transaction) -> bool:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return False
            generation = Generation.model_validate(snapshot.to_dict())
            if generation.user_id != user_id:
                return False
            for part in generation.parts:
                if part.fal_request_id:
                    transaction.delete(
                        self._db.collection(FAL_REQUESTS).document(part.fal_request_id)
                    )
            transaction.delete(ref)
            transaction.set(
                tombstone,
                {"user_id": user_id, "deleted_at": now, "expire_at": now + TOMBSTONE_TTL},
            )
            return True

        self._known.discard(generation_id)
        return transactions.run(self._db, run, attempts=10)

    def deleted_by(self, generation_id: str) -> str | None:
        """The user who deleted this generation, while its tombstone lasts."""
        snapshot = self._db.collection(DELETED_GENERATIONS).document(generation_id).get()
        if not snapshot.exists:
            return None
        return (snapshot.to_dict() or {}).get("user_id")

    def list_for_user(
        self,
        selection: HistoryFilter,
        limit: int,
        *,
        offset: int = 0,
        after: HistoryPosition | None = None,
    ) -> HistoryPage:
        """A page of a user's generations, newest first, and how many match in all.

        The only place history queries are built: the composite indexes it needs are
        user_id ==, then [status ==], [model ==], then created_at DESC, __name__ DESC
        (created_at also carries the range filters).
        """
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._db.collection(GENERATIONS).where(
            filter=FieldFilter("user_id", "==", selection.user_id)
        )
        if selection.status is not None:
            query = query.where(filter=FieldFilter("status", "==", selection.status.value))
        if selection.model is not None:
            query = query.where(filter=FieldFilter("model", "==", selection.model))
        if selection.created_after is not None:
            query = query.where(filter=FieldFilter("created_at", ">=", selection.created_after))
        if selection.created_before is not None:
            query = query.where(filter=FieldFilter("created_at", "<", selection.created_before))
        total = count_of(query)

        page = query.order_by("created_at", direction="DESCENDING").order_by(
            "__name__", direction="DESCENDING"
        )
        if after is not None:
            page = page.start_after(
                {"created_at": after.created_at, "__name__": after.generation_id}
            )
        elif offset:
            page = page.offset(offset)
        # One more than asked tells whether another page follows.
        generations = [
            Generation.model_validate(snapshot.to_dict())
            for snapshot in page.limit(limit + 1).stream()
        ]
        more_after = None
        if len(generations) > limit:
            generations = generations[:limit]
            last = generations[-1]
            more_after = HistoryPosition(last.created_at, last.id)
        return HistoryPage(generations, total, more_after)

    def find_fal_request(self, fal_request_id: str) -> FalRequestRef | None:
        snapshot = self._db.collection(FAL_REQUESTS).document(fal_request_id).get()
        if not snapshot.exists:
            return None
        data = snapshot.to_dict() or {}
        return FalRequestRef(data["generation_id"], int(data["part_index"]))


class ApiKeyRepository:
    """API keys by hash. Every request authenticates, so a found key is remembered for
    `cache_seconds` per instance (one Firestore read saved per request): a revocation made
    through another instance takes effect within that time, through this one at once."""

    def __init__(self, client: firestore.Client, cache_seconds: float = 0.0) -> None:
        self._db = client
        self._cache: TtlCache[str, ApiKeyRecord] = TtlCache(cache_seconds)

    def put(self, key_hash: str, record: ApiKeyRecord, now: datetime) -> None:
        self._db.collection(API_KEYS).document(key_hash).set(
            {
                "key_id": record.key_id,
                "user_id": record.user_id,
                "role": record.role,
                "revoked": record.revoked,
                "created_at": now,
            }
        )

    def get(self, key_hash: str) -> ApiKeyRecord | None:
        cached = self._cache.get(key_hash)
        if cached is not None:
            return cached
        snapshot = self._db.collection(API_KEYS).document(key_hash).get()
        if not snapshot.exists:
            # Not remembered: a key issued a moment ago must work at once.
            return None
        data = snapshot.to_dict() or {}
        record = ApiKeyRecord(
            data["key_id"], data["user_id"], data["role"], bool(data.get("revoked"))
        )
        self._cache.put(key_hash, record)
        return record

    def find_by_key_id(self, key_id: str) -> StoredApiKey | None:
        found = self._where("key_id", key_id, limit=1)
        return found[0] if found else None

    def list_for_user(self, user_id: str, limit: int) -> list[StoredApiKey]:
        """Up to `limit` of a user's keys, newest first."""
        keys = self._where("user_id", user_id, limit=limit)
        oldest = datetime.min.replace(tzinfo=UTC)
        return sorted(keys, key=lambda k: k.created_at or oldest, reverse=True)

    def revoke(self, key_hash: str, now: datetime) -> None:
        """Takes effect at once on this instance, within `cache_seconds` on the others."""
        self._db.collection(API_KEYS).document(key_hash).update(
            {"revoked": True, "revoked_at": now}
        )
        self._cache.discard(key_hash)

    def _where(self, field: str, value: str, limit: int) -> list[StoredApiKey]:
        """The only query on API keys: one equality filter on `key_id` or `user_id`, served by
        Firestore's automatic single-field indexes (no composite index, so no ordering)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._db.collection(API_KEYS).where(filter=FieldFilter(field, "==", value)).limit(limit)
        )
        stored = []
        for snapshot in query.stream():
            data = snapshot.to_dict() or {}
            record = ApiKeyRecord(
                data["key_id"], data["user_id"], data["role"], bool(data.get("revoked"))
            )
            stored.append(
                StoredApiKey(snapshot.id, record, data.get("created_at"), data.get("revoked_at"))
            )
        return stored
