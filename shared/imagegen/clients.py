"""Process-wide Google clients, created once on first use and reused across invocations.

Cloud Functions keep an instance warm between requests, so building a client (channels,
auth, discovery) once per instance rather than once per request is most of the latency.
Imports are inside the getters so a function only pays for the libraries it really uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagegen.once import Once
from imagegen.settings import get_settings

if TYPE_CHECKING:
    from google.cloud import firestore, storage
    from google.pubsub_v1 import PublisherClient


@Once
def firestore_client() -> firestore.Client:
    from google.cloud import firestore

    return firestore.Client(project=get_settings().gcp_project)


@Once
def storage_client() -> storage.Client:
    from google.cloud import storage

    settings = get_settings()
    if settings.storage_emulator_host:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=settings.gcp_project, credentials=AnonymousCredentials())
    return storage.Client(project=settings.gcp_project)


@Once
def publish_api() -> PublisherClient:
    """The Pub/Sub Publish RPC itself, without the batching client's timer threads: the
    accept path publishes a request's messages in one synchronous call (one round trip),
    ~2-3 ms faster per request than the batching client's future (bench/README.md)."""
    from google.pubsub_v1 import PublisherClient

    emulator = get_settings().pubsub_emulator_host
    if emulator:
        import grpc
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        channel = grpc.insecure_channel(emulator)
        return PublisherClient(transport=PublisherGrpcTransport(channel=channel))
    return PublisherClient()
