"""`Idempotency-Key`: the same key and body within 24 h returns the first result.

The record is written in the same commit that creates the generations, on condition that it
did not exist (or was the expired one read), so two concurrent requests with one key cannot
both create: the second's commit fails, it reads again and sees the first's record.
Keys are scoped per user (two users may pick the same key) and stored hashed; a TTL
policy on `expire_at` removes them (until then an expired record is simply overwritten).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from imagegen.errors import BadRequestError, ConflictError
from imagegen.transactions import guarded_write

if TYPE_CHECKING:
    from google.cloud import firestore

IDEMPOTENCY = "idempotencyKeys"
TTL = timedelta(hours=24)
MAX_KEY_CHARS = 255


@dataclass(frozen=True)
class IdempotencyClaim:
    """A request's key, ready to be checked and recorded inside a transaction."""

    doc_id: str
    request_hash: str
    key: str
    user_id: str


def claim(user_id: str, key: str | None, endpoint: str, body: Any) -> IdempotencyClaim | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise BadRequestError(
            f"Idempotency-Key must be 1..{MAX_KEY_CHARS} printable characters",
            code="invalid_idempotency_key",
        )
    # The canonical body, so key order and whitespace do not make "a different body".
    canonical = json.dumps([endpoint, body], sort_keys=True, separators=(",", ":"))
    return IdempotencyClaim(
        doc_id=hashlib.sha256(f"{user_id}\n{key}".encode()).hexdigest(),
        request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
        key=key,
        user_id=user_id,
    )


class IdempotencyStore:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def ref(self, claim_: IdempotencyClaim) -> firestore.DocumentReference:
        return self._db.collection(IDEMPOTENCY).document(claim_.doc_id)

    def previous(
        self, snapshot: firestore.DocumentSnapshot, claim_: IdempotencyClaim, now: datetime
    ) -> list[str] | None:
        """The generation ids the first request with this key created (from the key's
        document as read), if it is still live; 409 if the key was used with a different
        body."""
        if not snapshot.exists:
            return None
        data = snapshot.to_dict() or {}
        if data.get("expire_at") is None or data["expire_at"] <= now:
            return None
        if data.get("request_hash") != claim_.request_hash:
            raise ConflictError(
                "This Idempotency-Key was already used with a different request",
                code="idempotency_key_reused",
            )
        return list(data.get("generation_ids", []))

    def record(
        self,
        batch: firestore.WriteBatch,
        snapshot: firestore.DocumentSnapshot,
        claim_: IdempotencyClaim,
        generation_ids: list[str],
        now: datetime,
    ) -> None:
        guarded_write(
            batch,
            snapshot,
            {
                "user_id": claim_.user_id,
                "request_hash": claim_.request_hash,
                "generation_ids": generation_ids,
                "created_at": now,
                "expire_at": now + TTL,
            },
        )

    def forget(self, claim_: IdempotencyClaim) -> None:
        """A request that could not be queued must not pin its key to a failed result."""
        self.ref(claim_).delete()
