"""Firestore persistence for generations, fal request lookups and API keys.

Every state change of a generation happens in a transaction that re-reads the record, so
redelivered events and concurrent deliveries see each other's effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import firestore

from imagegen.models.records import (
    ErrorInfo,
    Generation,
    GenerationStatus,
    PartStatus,
    StoredImage,
)

GENERATIONS = "generations"
FAL_REQUESTS = "falRequests"
API_KEYS = "apiKeys"


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


def _document(generation: Generation) -> dict[str, Any]:
    return generation.model_dump(mode="python")


class GenerationRepository:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def _ref(self, generation_id: str) -> firestore.DocumentReference:
        return self._db.collection(GENERATIONS).document(generation_id)

    def create(self, generation: Generation) -> None:
        self._ref(generation.id).create(_document(generation))

    def get(self, generation_id: str) -> Generation | None:
        snapshot = self._ref(generation_id).get()
        return Generation.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def _update(self, generation_id: str, change) -> Generation | None:  # noqa: ANN001
        """Runs `change(generation) -> bool` in a transaction; writes only if it changed."""
        ref = self._ref(generation_id)

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> Generation | None:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return None
            generation = Generation.model_validate(snapshot.to_dict())
            if not change(generation, transaction):
                return None
            transaction.set(ref, _document(generation))
            return generation

        return run(self._db.transaction(max_attempts=10))

    def record_submission(
        self, generation_id: str, part_index: int, fal_request_id: str, now: datetime
    ) -> Generation | None:
        """Marks a pending part submitted; None if it was not pending (someone else won)."""
        lookup = self._db.collection(FAL_REQUESTS).document(fal_request_id)

        def change(generation: Generation, transaction: firestore.Transaction) -> bool:
            part = generation.part(part_index)
            if generation.is_terminal or part.status is not PartStatus.PENDING:
                return False
            part.status = PartStatus.SUBMITTED
            part.fal_request_id = fal_request_id
            part.submitted_at = now
            if generation.status is GenerationStatus.QUEUED:
                generation.status = GenerationStatus.SUBMITTED
                generation.submitted_at = now
            generation.updated_at = now
            transaction.set(
                lookup,
                {"generation_id": generation_id, "part_index": part_index, "created_at": now},
            )
            return True

        return self._update(generation_id, change)

    def fail(self, generation_id: str, error: ErrorInfo, now: datetime) -> Generation | None:
        """Moves a generation to failed; None if it had already ended."""

        def change(generation: Generation, _: firestore.Transaction) -> bool:
            if generation.is_terminal:
                return False
            generation.status = GenerationStatus.FAILED
            generation.error = error
            generation.completed_at = now
            generation.updated_at = now
            for part in generation.parts:
                if part.status in (PartStatus.PENDING, PartStatus.SUBMITTED):
                    part.status = PartStatus.FAILED
            return True

        return self._update(generation_id, change)

    def complete_part(
        self,
        generation_id: str,
        part_index: int,
        fal_request_id: str,
        images: list[StoredImage],
        seed: str | None,
        timings: dict[str, Any],
        now: datetime,
    ) -> Generation | None:
        """Records a part's images; None if the part was already done (a duplicate)."""

        def change(generation: Generation, _: firestore.Transaction) -> bool:
            part = generation.part(part_index)
            if generation.is_terminal or part.status is PartStatus.COMPLETED:
                return False
            part.status = PartStatus.COMPLETED
            part.fal_request_id = fal_request_id
            part.completed_at = now
            part.timings = timings
            part.seed = seed
            generation.images = sorted([*generation.images, *images], key=lambda image: image.index)
            generation.updated_at = now
            if all(p.status is PartStatus.COMPLETED for p in generation.parts):
                generation.status = GenerationStatus.COMPLETED
                generation.completed_at = now
                generation.seed = generation.parts[0].seed
            return True

        return self._update(generation_id, change)

    def find_fal_request(self, fal_request_id: str) -> FalRequestRef | None:
        snapshot = self._db.collection(FAL_REQUESTS).document(fal_request_id).get()
        if not snapshot.exists:
            return None
        data = snapshot.to_dict() or {}
        return FalRequestRef(data["generation_id"], int(data["part_index"]))


class ApiKeyRepository:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

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
        snapshot = self._db.collection(API_KEYS).document(key_hash).get()
        if not snapshot.exists:
            return None
        data = snapshot.to_dict() or {}
        return ApiKeyRecord(
            data["key_id"], data["user_id"], data["role"], bool(data.get("revoked"))
        )
