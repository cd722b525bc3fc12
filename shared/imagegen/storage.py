"""Cloud Storage: where generated images and thumbnails live, and the URLs that serve them
(signed by `imagegen.url_signing`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from imagegen.settings import Settings
from imagegen.url_signing import UrlSigner

if TYPE_CHECKING:
    from google.cloud import storage


def image_path(user_id: str, generation_id: str, index: int, extension: str) -> str:
    return f"generations/{user_id}/{generation_id}/{index}.{extension}"


def thumbnail_path(user_id: str, generation_id: str, index: int) -> str:
    return f"thumbnails/{user_id}/{generation_id}/{index}.webp"


def generation_prefixes(user_id: str, generation_id: str) -> tuple[str, ...]:
    """Every prefix under which a generation's objects live (images, then thumbnails)."""
    return (f"generations/{user_id}/{generation_id}/", f"thumbnails/{user_id}/{generation_id}/")


@dataclass(frozen=True)
class StoredObject:
    """One object of a listing: its name and when it was created (None if not reported)."""

    name: str
    created: datetime | None


class ImageStore:
    def __init__(self, client: storage.Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._signer = UrlSigner(client, settings)

    @property
    def bucket_name(self) -> str:
        return self._settings.images_bucket

    def upload(self, path: str, data: bytes, content_type: str, metadata: dict[str, str]) -> None:
        blob = self._client.bucket(self.bucket_name).blob(path)
        blob.metadata = metadata
        # Paths are deterministic per generation and index, so a retried upload overwrites
        # the same object instead of adding a second copy.
        blob.upload_from_string(data, content_type=content_type)

    def exists(self, path: str) -> bool:
        return self._client.bucket(self.bucket_name).blob(path).exists()

    def list_paths(self, prefix: str) -> list[str]:
        return [blob.name for blob in self._client.list_blobs(self.bucket_name, prefix=prefix)]

    def list_page(
        self,
        prefix: str,
        page_size: int,
        page_token: str | None = None,
        start_offset: str | None = None,
    ) -> tuple[list[StoredObject], str | None]:
        """One page of the objects under `prefix` in name order (from `start_offset`, which
        is inclusive, if given) and the token of the next page (None after the last)."""
        iterator = self._client.list_blobs(
            self.bucket_name,
            prefix=prefix,
            page_size=page_size,
            page_token=page_token,
            start_offset=start_offset,
        )
        page = next(iterator.pages, None)
        objects = [StoredObject(blob.name, blob.time_created) for blob in page or ()]
        return objects, iterator.next_page_token

    def delete(self, paths: list[str]) -> None:
        """Deletes objects; one already gone counts as deleted (deletes are retried)."""
        from contextlib import suppress

        from google.api_core.exceptions import NotFound

        bucket = self._client.bucket(self.bucket_name)
        for path in paths:
            with suppress(NotFound):
                bucket.blob(path).delete()

    def signed_url(self, path: str, ttl_seconds: int | None = None) -> str:
        return self._signer.sign(
            self.bucket_name, path, ttl_seconds or self._settings.signed_url_ttl_seconds
        )
