"""The collaborators each service needs, built once per instance on first use."""

from __future__ import annotations

from functools import cache

from imagegen import clients
from imagegen.fal_gateway import FalGateway
from imagegen.image_fetch import ImageFetcher
from imagegen.loras import LoraRepository
from imagegen.repository import ApiKeyRepository, GenerationRepository
from imagegen.settings import get_settings
from imagegen.storage import ImageStore
from imagegen.task_queue import TaskQueue
from imagegen.url_signing import UrlSigner
from imagegen.watchdog import Watchdog
from imagegen.webhook_signature import FalWebhookVerifier, JwksCache


@cache
def generations() -> GenerationRepository:
    return GenerationRepository(clients.firestore_client())


@cache
def api_keys() -> ApiKeyRepository:
    return ApiKeyRepository(clients.firestore_client())


@cache
def url_signer() -> UrlSigner:
    return UrlSigner(clients.storage_client(), get_settings())


@cache
def loras() -> LoraRepository:
    return LoraRepository(clients.firestore_client())


@cache
def image_store() -> ImageStore:
    return ImageStore(clients.storage_client(), get_settings())


@cache
def fal_gateway() -> FalGateway:
    settings = get_settings()
    return FalGateway(settings.fal_key.get_secret_value(), settings.fal_submit_timeout_seconds)


@cache
def image_fetcher() -> ImageFetcher:
    settings = get_settings()
    return ImageFetcher(settings.image_download_max_bytes, settings.image_download_timeout_seconds)


@cache
def webhook_verifier() -> FalWebhookVerifier:
    settings = get_settings()
    return FalWebhookVerifier(
        JwksCache(settings.fal_jwks_url, settings.fal_jwks_ttl_seconds),
        tolerance_seconds=settings.webhook_tolerance_seconds,
    )


@cache
def task_queue() -> TaskQueue:
    return TaskQueue(get_settings())


@cache
def watchdog() -> Watchdog:
    return Watchdog(task_queue(), get_settings())
