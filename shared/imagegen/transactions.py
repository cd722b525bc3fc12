"""Running Firestore transactions: contention becomes a retryable 503, never a 500.

Firestore's server SDKs lock pessimistically; concurrent transactions on one document wait,
and may abort and retry. When the client gives up, the caller gets `RetryableError`, which
the HTTP edge answers with 503 and Retry-After and an event handler raises for redelivery.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

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
