"""Consistent Firestore changes: contention becomes a retryable 503, never a 500.

Hot paths write optimistically (`read_then_write`, `read_many_then_write`: a commit on
condition that what was read is unchanged, decision 0008); rare multi-document work runs in
transactions (`run`), which Firestore's server SDKs lock pessimistically. When either gives
up, the caller gets `RetryableError`, which the HTTP edge answers with 503 and Retry-After
and an event handler raises for redelivery.
"""

from __future__ import annotations

import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from imagegen.errors import RetryableError

if TYPE_CHECKING:
    from google.cloud import firestore
    from google.cloud.firestore_v1.types import WriteResult

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
    known: firestore.DocumentSnapshot | None = None,
    committed: Callable[[list[WriteResult]], None] | None = None,
) -> T:
    """Optimistic read-modify-write of one document: read it outside any transaction, let
    `body` stage writes in a batch (it must write `ref` itself through `guarded_update`), and
    commit only if the document has not changed since the read; otherwise read again.

    For a change that reads one document, this is what a transaction gives without its locks:
    two writers of one document (the parts of one generation, ingested at once) never wait
    for each other's lock; the loser re-reads after a few milliseconds and applies its change
    to the winner's result. Returns `body`'s result from the attempt that committed (or
    that staged nothing). `known` and `committed`: as in `read_many_then_write`."""
    return read_many_then_write(
        client,
        [ref],
        lambda snapshots, batch: body(snapshots[ref.path], batch),
        attempts,
        known={ref.path: known} if known is not None else None,
        committed=committed,
    )


def read_many_then_write(
    client: firestore.Client,
    refs: list[firestore.DocumentReference],
    body: Callable[[dict[str, firestore.DocumentSnapshot], firestore.WriteBatch], T],
    attempts: int,
    known: Mapping[str, firestore.DocumentSnapshot] | None = None,
    committed: Callable[[list[WriteResult]], None] | None = None,
) -> T:
    """`read_then_write` for several documents read at once (one BatchGetDocuments call):
    `body` gets the snapshots by document path and must write each document it read and
    relies on through `guarded_write`, so the commit fails if any of them changed (or was
    created) since the read. Two round trips, where a transaction takes three (begin, read,
    commit) and holds locks in between.

    `known` are versions of some of `refs` the caller already holds (what it last wrote):
    the first attempt uses them instead of reading, so a change that follows this instance's
    own write is one round trip. Only a commit checks a version, so a known version that
    is stale costs one refused commit, and anything else `body` decides on one (to write
    nothing, or to raise) is decided again on a fresh read. `committed` gets the commit's
    results, in the order `body` staged the writes."""
    from google.api_core import exceptions as google_exceptions

    assumed = {path: s for path, s in (known or {}).items() if any(r.path == path for r in refs)}
    for attempt in range(attempts):
        unread = [r for r in refs if r.path not in assumed]
        snapshots = {s.reference.path: s for s in client.get_all(unread)} if unread else {}
        snapshots.update(assumed)
        batch = client.batch()
        try:
            result = body(snapshots, batch)
        except Exception:
            if not assumed:
                raise
            assumed = {}
            continue
        if not len(batch):
            if assumed:
                assumed = {}
                continue
            return result
        try:
            results = batch.commit()
        except (
            google_exceptions.FailedPrecondition,
            google_exceptions.Aborted,
            google_exceptions.Conflict,
            google_exceptions.AlreadyExists,
            google_exceptions.NotFound,
        ):
            if assumed:
                # Our own version was out of date: nobody to back off from, read at once.
                assumed = {}
                continue
            time.sleep(random.uniform(0.001, 0.004) * (attempt + 1))
            continue
        if committed is not None:
            committed(list(results))
        return result
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
