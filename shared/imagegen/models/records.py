"""The generation record as stored in Firestore (snake_case documents).

One generation is split into parts, one fal.ai request each, so a generation can ask for
more images than fal returns per request. Seeds are stored as decimal strings: fal seeds
can exceed Firestore's 64-bit integers.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from imagegen.models.base import Model


class GenerationStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL_STATUSES = frozenset(
    {GenerationStatus.COMPLETED, GenerationStatus.FAILED, GenerationStatus.CANCELED}
)


class PartStatus(StrEnum):
    PENDING = "pending"
    SUBMITTING = "submitting"  # a dispatcher holds the claim and is calling fal
    SUBMITTED = "submitted"
    INGESTING = "ingesting"  # a webhook (or the watchdog) holds the claim and is copying
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class Record(Model):
    model_config = ConfigDict(extra="ignore")


class ErrorInfo(Record):
    code: str
    message: str


class StoredImage(Record):
    index: int
    bucket: str
    path: str
    width: int
    height: int
    content_type: str
    file_size: int
    seed: str | None = None
    nsfw: bool = False
    # WebP preview (longest side 256) under thumbnails/; None on records made before them.
    thumbnail_path: str | None = None
    thumbnail_content_type: str | None = None


class LoraUse(Record):
    id: str
    scale: float
    trigger: str | None = None
    # The LoRA's url when the generation was accepted: deleting the LoRA later does not
    # strand a queued generation, and the dispatcher signs a fresh URL from it.
    url: str


class GenerationPart(Record):
    index: int
    num_images: int
    # Index of this part's first image within the generation, so images keep their order.
    first_image: int
    seed: str | None = None
    status: PartStatus = PartStatus.PENDING
    fal_request_id: str | None = None
    # Who holds the part while SUBMITTING or INGESTING, and until when (a crashed holder's
    # claim lapses, and the next delivery takes over).
    claim_id: str | None = None
    claim_expires_at: datetime | None = None
    submit_attempts: int = 0
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    timings: dict[str, Any] = Field(default_factory=dict)


class Generation(Record):
    id: str
    user_id: str
    status: GenerationStatus = GenerationStatus.QUEUED
    prompt: str
    # The prompt fal receives: LoRA trigger words the prompt lacked are prepended.
    effective_prompt: str | None = None
    model: str
    fal_app: str
    parameters: dict[str, Any]
    num_images: int
    # None while the model picks the size itself (image to image without an aspect ratio).
    width: int | None = None
    height: int | None = None
    loras: list[LoraUse] = Field(default_factory=list)
    estimated_cost_usd: float = 0.0
    batch_id: str | None = None
    parts: list[GenerationPart]
    images: list[StoredImage] = Field(default_factory=list)
    seed: str | None = None
    error: ErrorInfo | None = None
    created_at: datetime
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    canceled_at: datetime | None = None
    # Set while a cancel is being asked of fal: an error fal then reports cancels it.
    cancel_requested_at: datetime | None = None
    # Set when the cleanup sweep re-published a generation stuck in `queued` (its message may
    # have been lost); a generation still queued long after that is failed instead.
    republished_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def megapixels_per_image(self) -> float:
        # A model that picks its own size is counted at 1 MP until its images say otherwise.
        if self.width is None or self.height is None:
            return 1.0
        return self.width * self.height / 1_000_000

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def generation_time(self) -> float | None:
        if self.completed_at is None:
            return None
        return round((self.completed_at - self.created_at).total_seconds(), 3)

    def part(self, index: int) -> GenerationPart:
        return self.parts[index]
