"""Cloud Storage: where generated images live, and the signed URLs that serve them.

Signing: locally (and wherever a service-account key is configured) URLs are signed with
that key; on Cloud Functions there is no key, so they are signed through the IAM
signBlob API with the function's own identity (it needs roles/iam.serviceAccountTokenCreator
on itself).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from imagegen.settings import MAX_SIGNED_URL_TTL_SECONDS, Settings

if TYPE_CHECKING:
    from google.cloud import storage


def image_path(user_id: str, generation_id: str, index: int, extension: str) -> str:
    return f"generations/{user_id}/{generation_id}/{index}.{extension}"


class ImageStore:
    def __init__(self, client: storage.Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._signer_lock = threading.Lock()
        self._signing_credentials = None

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

    def signed_url(self, path: str, ttl_seconds: int | None = None) -> str:
        ttl = min(ttl_seconds or self._settings.signed_url_ttl_seconds, MAX_SIGNED_URL_TTL_SECONDS)
        blob = self._client.bucket(self.bucket_name).blob(path)
        kwargs: dict[str, object] = {
            "version": "v4",
            "expiration": timedelta(seconds=ttl),
            "method": "GET",
        }
        if self._settings.storage_emulator_host:
            host = self._settings.storage_emulator_host
            kwargs["api_access_endpoint"] = host if "://" in host else f"http://{host}"
        credentials = self._credentials()
        if getattr(credentials, "signer", None) is not None and hasattr(credentials, "sign_bytes"):
            kwargs["credentials"] = credentials
        else:
            # Compute credentials cannot sign locally: hand the token to signBlob instead.
            from google.auth.transport.requests import Request

            if not credentials.valid:
                credentials.refresh(Request())
            kwargs["service_account_email"] = credentials.service_account_email
            kwargs["access_token"] = credentials.token
        return blob.generate_signed_url(**kwargs)

    def _credentials(self):  # noqa: ANN202 - google.auth credentials have no common type
        with self._signer_lock:
            if self._signing_credentials is None:
                if self._settings.signing_credentials_file:
                    from google.oauth2 import service_account

                    self._signing_credentials = (
                        service_account.Credentials.from_service_account_file(
                            self._settings.signing_credentials_file
                        )
                    )
                else:
                    import google.auth

                    self._signing_credentials, _ = google.auth.default()
            return self._signing_credentials
