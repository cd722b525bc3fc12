"""Process-wide Google clients, created on first use and reused across invocations.

Cloud Functions keep an instance warm between requests, so building a client (channels,
auth, discovery) once per instance rather than once per request is most of the latency.
Imports are inside the getters so a function only pays for the libraries it really uses.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING

from imagegen.settings import get_settings

if TYPE_CHECKING:
    from google.cloud import firestore, pubsub_v1, storage

_lock = threading.Lock()


@cache
def firestore_client() -> firestore.Client:
    from google.cloud import firestore

    with _lock:
        return firestore.Client(project=get_settings().gcp_project)


@cache
def storage_client() -> storage.Client:
    from google.cloud import storage

    settings = get_settings()
    with _lock:
        if settings.storage_emulator_host:
            from google.auth.credentials import AnonymousCredentials

            return storage.Client(project=settings.gcp_project, credentials=AnonymousCredentials())
        return storage.Client(project=settings.gcp_project)


@cache
def publisher_client() -> pubsub_v1.PublisherClient:
    from google.cloud import pubsub_v1

    # The default batch waits up to 10 ms for company; one API call publishes one message,
    # so waiting only adds latency to the accept path.
    batch = pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.001)
    with _lock:
        return pubsub_v1.PublisherClient(batch_settings=batch)
