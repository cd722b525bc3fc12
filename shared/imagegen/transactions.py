"""Running Firestore transactions: contention becomes a retryable 503, never a 500.

Firestore's server SDKs lock pessimistically; concurrent transactions on one document wait,
and may abort and retry. When the client gives up, the caller gets `RetryableError`, which
the HTTP edge answers with 503 and Retry-After and an event handler raises for redelivery.
"""

from __future__ import annotations

import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from imagegen.errors import RetryableError

if TYPE_CHECKING:
    from google.cloud import firestore

T = TypeVar("T")
_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_locks_guard = threading.Lock()


def run(client: firestore.Client, body: Callable[[firestore.Transaction], T], attempts: int) -> T:
    # Imported here, not at the top: a cold instance answering a health check never loads it.
    from google.api_core import exceptions as google_exceptions
    from google.cloud import firestore

    transactional = firestore.transactional(body)
    try:
        return transactional(client.transaction(max_attempts=attempts))
    except (google_exceptions.Aborted, google_exceptions.DeadlineExceeded) as exc:
        raise RetryableError("Busy: please retry", code="contention") from exc
    except ValueError as exc:
        # The client's own "Failed to commit transaction in N attempts."
        if "Failed to commit transaction" not in str(exc):
            raise
        raise RetryableError("Busy: please retry", code="contention") from exc


def read_then_write(
    client: firestore.Client,
    ref: firestore.DocumentReference,
    body: Callable[[firestore.DocumentSnapshot, firestore.WriteBatch], T],
    attempts: int,
) -> T:
    """Optimistic read-modify-write of one document: read it outside any transaction, let
    `body` stage writes in a batch (it must write `ref` itself through `guarded_update`), and
    commit only if the document has not changed since the read; otherwise read again.

    For a change that reads one document, this is what a transaction gives without its locks:
    two writers of one document (the parts of one generation, ingested at once) never wait
    for each other's lock; the loser re-reads after a few milliseconds and applies its change
    to the winner's result. Returns `body`'s result from the attempt that committed (or
    that staged nothing)."""
    return read_many_then_write(
        client, [ref], lambda snapshots, batch: body(snapshots[ref.path], batch), attempts
    )


def read_many_then_write(
    client: firestore.Client,
    refs: list[firestore.DocumentReference],
    body: Callable[[dict[str, firestore.DocumentSnapshot], firestore.WriteBatch], T],
    attempts: int,
) -> T:
    """`read_then_write` for several documents read at once (one BatchGetDocuments call):
    `body` gets the snapshots by document path and must write each document it read and
    relies on through `guarded_write`, so the commit fails if any of them changed (or was
    created) since the read. Two round trips, where a transaction takes three (begin, read,
    commit) and holds locks in between."""
    from google.api_core import exceptions as google_exceptions

    for attempt in range(attempts):
        snapshots = {s.reference.path: s for s in client.get_all(refs)}
        batch = client.batch()
        result = body(snapshots, batch)
        if not len(batch):
            return result
        try:
            batch.commit()
            return result
        except (
            google_exceptions.FailedPrecondition,
            google_exceptions.Aborted,
            google_exceptions.Conflict,
            google_exceptions.AlreadyExists,
            google_exceptions.NotFound,
        ):
            time.sleep(random.uniform(0.001, 0.004) * (attempt + 1))
    raise RetryableError("Busy: please retry", code="contention")


def guarded_write(
    batch: firestore.WriteBatch, snapshot: firestore.DocumentSnapshot, data: dict[str, Any]
) -> None:
    """Writes `data` as the document's whole content if it is still as read: an update on
    condition of its last update time, or a create (which fails if it exists by now)."""
    if snapshot.exists:
        guarded_update(batch, snapshot, data)
    else:
        batch.create(snapshot.reference, data)


def guarded_update(
    batch: firestore.WriteBatch,
    snapshot: firestore.DocumentSnapshot,
    data: dict[str, Any],
) -> None:
    """Stages `data` (every top-level field) for the snapshot's document, on condition that
    the document is still the version that was read."""
    from google.cloud.firestore import Client

    option = Client.write_option(last_update_time=snapshot.update_time)
    batch.update(snapshot.reference, data, option=option)


@contextmanager
def serialized(key: str) -> Iterator[None]:
    """One at a time per key within this instance. Transactions stay correct without it;
    it stops one user's simultaneous requests from deadlocking on each other's read locks
    and burning their retries (the emulator resolves such deadlocks only by timing out)."""
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = threading.Lock()
            _locks[key] = lock
    with lock:
        yield
