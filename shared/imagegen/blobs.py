"""Small Cloud Storage operations on any bucket (LoRA files live outside the images bucket)."""

from __future__ import annotations

import contextlib

from imagegen import clients


def exists(bucket: str, path: str) -> bool:
    return clients.storage_client().bucket(bucket).blob(path).exists()


def delete(bucket: str, paths: list[str]) -> None:
    """Deletes objects; one already gone counts as deleted (deletes are retried)."""
    from google.api_core.exceptions import NotFound

    handle = clients.storage_client().bucket(bucket)
    for path in paths:
        with contextlib.suppress(NotFound):
            handle.blob(path).delete()
