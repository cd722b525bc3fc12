"""The collaborators each service needs, built once per instance on first use.

Each factory imports its collaborator's module itself: a cold instance loads the client
libraries (Firestore, Storage, httpx, fal_client, Pillow) with the first request that needs
them, not at start-up, and a function never loads those it does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagegen import clients
from imagegen.once import Once
from imagegen.settings import get_settings

if TYPE_CHECKING:
    from imagegen.fal_gateway import FalGateway
    from imagegen.image_fetch import ImageFetcher
    from imagegen.loras import LoraRepository
    from imagegen.repository import ApiKeyRepository, GenerationRepository
    from imagegen.storage import ImageStore
    from imagegen.task_queue import TaskQueue
    from imagegen.url_signing import UrlSigner
    from imagegen.watchdog import Watchdog
    from imagegen.webhook_signature import FalWebhookVerifier


@Once
def generations() -> GenerationRepository:
    from imagegen.repository import GenerationRepository

    return GenerationRepository(clients.firestore_client())


@Once
def api_keys() -> ApiKeyRepository:
    from imagegen.repository import ApiKeyRepository

    return ApiKeyRepository(clients.firestore_client(), get_settings().api_key_cache_seconds)


@Once
def url_signer() -> UrlSigner:
    from imagegen.url_signing import UrlSigner

    return UrlSigner(clients.storage_client(), get_settings())


@Once
def loras() -> LoraRepository:
    from imagegen.loras import LoraRepository

    return LoraRepository(clients.firestore_client())


@Once
def image_store() -> ImageStore:
    from imagegen.storage import ImageStore

    return ImageStore(clients.storage_client(), get_settings())


@Once
def fal_gateway() -> FalGateway:
    from imagegen.fal_gateway import FalGateway

    settings = get_settings()
    return FalGateway(settings.fal_key.get_secret_value(), settings.fal_submit_timeout_seconds)


@Once
def image_fetcher() -> ImageFetcher:
    from imagegen.image_fetch import ImageFetcher

    settings = get_settings()
    return ImageFetcher(settings.image_download_max_bytes, settings.image_download_timeout_seconds)


@Once
def webhook_verifier() -> FalWebhookVerifier:
    from imagegen.webhook_signature import FalWebhookVerifier, JwksCache

    settings = get_settings()
    return FalWebhookVerifier(
        JwksCache(settings.fal_jwks_url, settings.fal_jwks_ttl_seconds),
        tolerance_seconds=settings.webhook_tolerance_seconds,
    )


@Once
def task_queue() -> TaskQueue:
    from imagegen.task_queue import TaskQueue

    return TaskQueue(get_settings())


@Once
def watchdog() -> Watchdog:
    from imagegen.watchdog import Watchdog

    return Watchdog(task_queue(), get_settings())
