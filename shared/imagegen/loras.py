"""LoRAs (seed 000): metadata in Firestore, weights in Cloud Storage or anywhere on the web.

A LoRA's `url` takes one of three forms, all of which resolve to a URL fal can download:
a full http(s) URL (used as is), `gs://bucket/path`, or a path relative to LORA_BUCKET.
GCS-held files are handed to fal as fresh 15-minute signed URLs, minted by the dispatcher
at submit time so they never expire in a queue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import Field

from imagegen.errors import ValidationError
from imagegen.models.records import LoraUse, Record
from imagegen.models.requests import LoraChoice
from imagegen.url_signing import UrlSigner

if TYPE_CHECKING:
    from google.cloud import firestore

LORAS = "loras"
UPLOAD_PREFIX = "loras/"
_GS_URL = re.compile(r"gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220})/(?P<path>.+)")


class Lora(Record):
    id: str
    person_id: str | int | None = None
    url: str
    first_name: str | None = None
    last_name: str | None = None
    trigger: str | None = None
    model: str = "flux-lora"
    model_version: str | None = None
    default_scale: float = Field(1.0, ge=0, le=4)
    # "pending_upload" until the file has been uploaded to its signed upload URL.
    status: str = "ready"
    created_at: datetime


@dataclass(frozen=True)
class GcsLocation:
    bucket: str
    path: str


def gcs_location(url: str, default_bucket: str) -> GcsLocation | None:
    """Where a LoRA lives in Cloud Storage, or None for a plain http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return None
    match = _GS_URL.fullmatch(url)
    if match:
        return GcsLocation(match["bucket"], match["path"])
    return GcsLocation(default_bucket, url.lstrip("/"))


def check_url(url: str) -> str | None:
    """Why `url` is not one of the three accepted forms, or None if it is."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return None if parts.netloc else "an http(s) URL needs a host"
    if parts.scheme == "gs":
        return None if _GS_URL.fullmatch(url) else "a gs:// URL needs a bucket and a path"
    if parts.scheme or url.startswith("//") or ".." in url.split("/"):
        return "use an http(s) URL, a gs:// URL, or a path inside the LoRA bucket"
    return None


def fetchable_url(url: str, default_bucket: str, signer: UrlSigner, ttl_seconds: int) -> str:
    location = gcs_location(url, default_bucket)
    if location is None:
        return url
    return signer.sign(location.bucket, location.path, ttl_seconds)


class LoraRepository:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def _ref(self, lora_id: str) -> firestore.DocumentReference:
        return self._db.collection(LORAS).document(lora_id)

    def create(self, lora: Lora) -> None:
        self._ref(lora.id).create(lora.model_dump(mode="python"))

    def get(self, lora_id: str) -> Lora | None:
        snapshot = self._ref(lora_id).get()
        return Lora.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def get_many(self, lora_ids: list[str]) -> dict[str, Lora]:
        refs = [self._ref(i) for i in dict.fromkeys(lora_ids)]
        return {
            snapshot.id: Lora.model_validate(snapshot.to_dict())
            for snapshot in self._db.get_all(refs)
            if snapshot.exists
        }

    def list(self) -> list[Lora]:
        query = self._db.collection(LORAS).order_by("created_at")
        return [Lora.model_validate(s.to_dict()) for s in query.stream()]

    def update(self, lora_id: str, changes: dict[str, Any]) -> None:
        self._ref(lora_id).update(changes)

    def delete(self, lora_id: str) -> Lora | None:
        lora = self.get(lora_id)
        if lora is not None:
            self._ref(lora_id).delete()
        return lora


@dataclass(frozen=True)
class ResolvedLoras:
    uses: list[LoraUse]
    effective_prompt: str


def with_triggers(prompt: str, triggers: list[str]) -> str:
    """The prompt with every trigger word it lacks prepended, in the LoRAs' order."""

    def present(trigger: str) -> bool:
        # A whole-word match: "art" is not present in "party".
        return re.search(rf"(?<![\w-]){re.escape(trigger)}(?![\w-])", prompt, re.I) is not None

    missing = [t for t in dict.fromkeys(triggers) if t and not present(t)]
    return ", ".join([*missing, prompt]) if missing else prompt


def resolve_for_generation(
    choices: tuple[LoraChoice, ...], model_id: str, prompt: str, repo: LoraRepository
) -> ResolvedLoras:
    """The chosen LoRAs as recorded on a generation; 422 naming each one that cannot be used."""
    if not choices:
        return ResolvedLoras([], prompt)
    found = repo.get_many([c.id for c in choices])
    details = []
    uses: list[LoraUse] = []
    for index, choice in enumerate(choices):
        lora = found.get(choice.id)
        field = f"loras.{index}.id"
        if lora is None:
            details.append(
                {"field": field, "message": f"Unknown LoRA '{choice.id}'", "type": "unknown_lora"}
            )
        elif lora.status != "ready":
            details.append(
                {
                    "field": field,
                    "message": f"LoRA '{choice.id}' has no file yet",
                    "type": "lora_not_ready",
                }
            )
        elif lora.model != model_id:
            details.append(
                {
                    "field": field,
                    "message": f"LoRA '{choice.id}' is for model '{lora.model}'",
                    "type": "incompatible_lora",
                }
            )
        else:
            scale = lora.default_scale if choice.scale is None else choice.scale
            uses.append(LoraUse(id=lora.id, scale=scale, trigger=lora.trigger, url=lora.url))
    if details:
        names = ", ".join(d["field"] for d in details)
        raise ValidationError(f"Invalid request: {names}", details=details)
    return ResolvedLoras(uses, with_triggers(prompt, [u.trigger or "" for u in uses]))
