"""Typed settings: every environment variable the functions read is named here, once.

A field is read from the variable of the same name in upper case (any case matches). A
plain pydantic model reads them: pydantic-settings, which did, cost every cold start ~12 ms
more to import (its dotenv, CLI and cloud-secret sources) and ~2 ms more to read the
environment (bench/README.md), for nothing a function here uses.

The Google client libraries read their own emulator variables (FIRESTORE_EMULATOR_HOST,
PUBSUB_EMULATOR_HOST, STORAGE_EMULATOR_HOST) and fal_client reads FAL_QUEUE_RUN_HOST /
FAL_RUN_HOST; they are listed here too so that one place documents the whole surface.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

MAX_SIGNED_URL_TTL_SECONDS = 7 * 24 * 3600  # V4 signed URLs cannot live longer
# Where fal serves its output images; `host/prefix` allows only paths under /prefix/.
FAL_IMAGE_HOSTS = (
    "v3.fal.media",
    "v3b.fal.media",
    "fal.media",
    "storage.googleapis.com/falserverless",
)


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    gcp_project: str = Field("imagegen-local", description="Google Cloud project id.")
    images_bucket: str = Field("imagegen-images", description="Bucket for generated images.")
    lora_bucket: str = Field("imagegen-loras", description="Bucket for uploaded LoRA files.")
    lora_url_ttl_seconds: int = Field(15 * 60, ge=60, le=24 * 3600)
    lora_max_bytes: int = Field(1024 * 1024 * 1024, ge=1024, description="Largest LoRA upload.")
    generations_topic: str = Field(
        "generation-requests", description="Pub/Sub topic the api publishes generations to."
    )
    webhook_url: str = Field(
        "http://127.0.0.1:8082/",
        description="Public URL of the webhook function, handed to fal.ai as fal_webhook.",
    )
    tasks_queue: str = Field(
        "projects/imagegen-local/locations/us-central1/queues/watchdog",
        description="Full name of the Cloud Tasks queue the watchdog's checks go through.",
    )
    tasks_emulator_host: str | None = Field(None, description="host:port (local only).")
    watchdog_url: str = Field(
        "http://127.0.0.1:8083/", description="URL of the watchdog function (task target)."
    )
    watchdog_invoker: str | None = Field(
        None,
        description=(
            "Service account whose OIDC token Cloud Tasks attaches to watchdog calls; the "
            "watchdog accepts only that token. Unset locally (the emulator sends none)."
        ),
    )
    watchdog_first_check_seconds: float | None = Field(
        None, ge=0, description="Overrides every model's own deadline (tests)."
    )
    submit_lease_seconds: float = Field(
        90.0,
        gt=0,
        description=(
            "How long a dispatcher holds a part while calling fal; a crashed one's part is "
            "taken over after it. Must be shorter than the subscription's retry window."
        ),
    )
    webhook_ingest_budget_seconds: float = Field(
        10.0, gt=0, le=14, description="fal waits 15 s: past this, the copy is handed off."
    )
    watchdog_recheck_seconds: float = Field(30.0, ge=0)
    watchdog_max_checks: int = Field(20, ge=1)
    cleanup_url: str = Field(
        "http://127.0.0.1:8084/",
        description="URL of the cleanup function: the audience of Cloud Scheduler's OIDC token.",
    )
    cleanup_invoker: str | None = Field(
        None,
        description=(
            "Service account whose OIDC token Cloud Scheduler attaches to cleanup calls; the "
            "cleanup function accepts only that token. Unset locally."
        ),
    )
    retention_days: int = Field(
        30, ge=1, description="Generations (records, images, thumbnails) are kept this long."
    )
    stuck_after_minutes: int = Field(
        60, ge=1, description="A generation not ended and unchanged this long is stuck."
    )
    orphan_min_age_minutes: float = Field(
        60.0, ge=0, description="Objects no record references are deleted once this old."
    )
    cleanup_time_budget_seconds: float = Field(
        240.0, gt=0, le=3600, description="A sweep stops after this long (below its timeout)."
    )
    fal_key: SecretStr = Field(SecretStr(""), description="fal.ai API key (Secret Manager).")
    webhook_hmac_key: SecretStr = Field(
        SecretStr(""),
        description="Key for the HMAC that binds a webhook URL to its generation (Secret Manager).",
    )
    fal_jwks_url: str = Field(
        "https://rest.alpha.fal.ai/.well-known/jwks.json",
        description="Where fal.ai publishes the public keys that sign its webhooks.",
    )
    fal_jwks_ttl_seconds: int = Field(24 * 3600, ge=60, le=24 * 3600)
    webhook_tolerance_seconds: int = Field(300, ge=1, le=3600)
    signed_url_ttl_seconds: int = Field(24 * 3600, ge=60, le=MAX_SIGNED_URL_TTL_SECONDS)
    signing_credentials_file: str | None = Field(
        None,
        description=(
            "Service-account key used to sign URLs locally. Unset in production, where "
            "URLs are signed through the IAM signBlob API with the function's identity."
        ),
    )
    firebase_project_id: str | None = Field(
        None, description="Firebase project whose ID tokens are accepted (default GCP_PROJECT)."
    )
    firebase_certs_url: str = Field(
        "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com",
        description="Where the certificates that sign Firebase ID tokens are published.",
    )
    storage_emulator_host: str | None = Field(None, description="Read by google-cloud-storage.")
    pubsub_emulator_host: str | None = Field(
        None, description="host:port of the Pub/Sub emulator the publisher talks to (local only)."
    )
    api_key_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long an instance remembers a looked-up API key (0: never); a key "
        "revoked through another instance stops working within this time.",
    )
    requests_per_hour: int = Field(50, ge=1, description="Generations a user may start per hour.")
    max_in_flight: int = Field(2, ge=1, description="Unfinished generations a user may have.")
    monthly_megapixels: float = Field(
        2000.0, gt=0, description="Megapixels a user may generate per calendar month (UTC)."
    )
    max_megapixels: float = Field(4.0, gt=0, le=16, description="Largest custom size, in MP.")
    max_request_bytes: int = Field(64 * 1024, ge=1024)
    image_download_max_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    image_download_timeout_seconds: float = Field(30.0, gt=0)
    # Comma-separated in the environment, validated by image_fetch.
    image_fetch_allowed_hosts: tuple[str, ...] = Field(
        FAL_IMAGE_HOSTS,
        description="Where fal images may be fetched from (https): `host` or `host/path-prefix`.",
    )
    image_fetch_insecure_hosts: tuple[str, ...] = Field(
        (),
        description=(
            "host:port pairs also fetched from over plain http and on private addresses: the "
            "local fal simulator. Must be empty in production."
        ),
    )
    image_max_pixels: int = Field(
        4096 * 4096,  # image_fetch.MAX_PIXELS, the ceiling the thumbnailer shares
        ge=1,
        le=4096 * 4096,
        description="Most pixels (width x height) a downloaded image may have.",
    )
    fal_submit_timeout_seconds: float = Field(30.0, gt=0)
    log_level: str = Field("INFO")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings the environment sets; every other field keeps its default. Raises
        pydantic.ValidationError (a ValueError) naming each malformed variable."""
        fields = cls.model_fields
        return cls.model_validate(
            {key.lower(): value for key, value in environ.items() if key.lower() in fields}
        )

    @field_validator("image_fetch_allowed_hosts", "image_fetch_insecure_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(entry.strip() for entry in value.split(",") if entry.strip())
        return value

    @field_validator("image_fetch_allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from imagegen.fetch_hosts import parse_allowed_host

        for entry in value:
            parse_allowed_host(entry)  # ValueError names the malformed entry
        return value

    @field_validator("image_fetch_insecure_hosts")
    @classmethod
    def _check_insecure_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from imagegen.fetch_hosts import parse_insecure_host

        for entry in value:
            parse_insecure_host(entry)
        return value

    @property
    def firebase_project(self) -> str:
        return self.firebase_project_id or self.gcp_project

    def webhook_hmac_key_bytes(self) -> bytes:
        key = self.webhook_hmac_key.get_secret_value()
        if len(key) < 16:
            from imagegen.errors import ImageGenError

            raise ImageGenError(
                "WEBHOOK_HMAC_KEY is unset or shorter than 16 characters", code="misconfigured"
            )
        return key.encode()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_environment()
