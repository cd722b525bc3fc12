"""The generation record as stored in Firestore (snake_case documents).

One generation is split into parts, one fal.ai request each, so a generation can ask for
more images than fal returns per request. Seeds are stored as decimal strings: fal seeds
can exceed Firestore's 64-bit integers.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GenerationStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset({GenerationStatus.COMPLETED, GenerationStatus.FAILED})


class PartStatus(StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"


class Record(BaseModel):
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


class GenerationPart(Record):
    index: int
    num_images: int
    # Index of this part's first image within the generation, so images keep their order.
    first_image: int
    seed: str | None = None
    status: PartStatus = PartStatus.PENDING
    fal_request_id: str | None = None
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    timings: dict[str, Any] = Field(default_factory=dict)


class Generation(Record):
    id: str
    user_id: str
    status: GenerationStatus = GenerationStatus.QUEUED
    prompt: str
    model: str
    fal_app: str
    parameters: dict[str, Any]
    num_images: int
    width: int
    height: int
    parts: list[GenerationPart]
    images: list[StoredImage] = Field(default_factory=list)
    seed: str | None = None
    error: ErrorInfo | None = None
    created_at: datetime
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None

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
