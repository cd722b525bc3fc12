"""V4 signed URLs for any bucket: reading images and LoRAs, and resumable LoRA uploads.

Locally (and wherever a service-account key is configured) URLs are signed with that key;
on Cloud Functions there is no key, so they are signed through the IAM signBlob API with
the function's own identity (it needs roles/iam.serviceAccountTokenCreator on itself).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from imagegen.settings import MAX_SIGNED_URL_TTL_SECONDS, Settings

if TYPE_CHECKING:
    from google.cloud import storage


class UrlSigner:
    def __init__(self, client: storage.Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._lock = threading.Lock()
        self._credentials: Any = None

    def sign(
        self,
        bucket: str,
        path: str,
        ttl_seconds: int,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
    ) -> str:
        kwargs: dict[str, Any] = {
            "version": "v4",
            "expiration": timedelta(seconds=min(ttl_seconds, MAX_SIGNED_URL_TTL_SECONDS)),
            "method": method,
        }
        if headers:
            kwargs["headers"] = headers
        if self._settings.storage_emulator_host:
            host = self._settings.storage_emulator_host
            kwargs["api_access_endpoint"] = host if "://" in host else f"http://{host}"
        credentials = self._signing_credentials()
        if getattr(credentials, "signer", None) is not None and hasattr(credentials, "sign_bytes"):
            kwargs["credentials"] = credentials
        else:
            # Compute credentials cannot sign locally: hand the token to signBlob instead.
            from google.auth.transport.requests import Request

            if not credentials.valid:
                credentials.refresh(Request())
            kwargs["service_account_email"] = credentials.service_account_email
            kwargs["access_token"] = credentials.token
        return self._client.bucket(bucket).blob(path).generate_signed_url(**kwargs)

    def _signing_credentials(self) -> Any:
        with self._lock:
            if self._credentials is None:
                if self._settings.signing_credentials_file:
                    from google.oauth2 import service_account

                    self._credentials = service_account.Credentials.from_service_account_file(
                        self._settings.signing_credentials_file
                    )
                else:
                    import google.auth

                    self._credentials, _ = google.auth.default()
            return self._credentials
