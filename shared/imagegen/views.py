"""What the API returns for a generation: camelCase, with signed URLs for the images."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field
from pydantic.alias_generators import to_camel

from imagegen.models.base import ResponseModel
from imagegen.models.records import Generation
from imagegen.storage import ImageStore

# Larger integers lose precision in JavaScript clients, so they travel as strings.
MAX_SAFE_INTEGER = 2**53 - 1


def seed_value(seed: str | None) -> int | str | None:
    if seed is None:
        return None
    number = int(seed)
    return number if number <= MAX_SAFE_INTEGER else seed


class ImageView(ResponseModel):
    url: str | None
    width: int
    height: int
    content_type: str
    file_size: int
    bucket: str
    path: str
    seed: int | str | None
    nsfw: bool


class ErrorView(ResponseModel):
    code: str
    message: str


class AcceptedView(ResponseModel):
    id: str
    status: str
    created_at: datetime


class GenerationView(ResponseModel):
    id: str
    status: str
    prompt: str
    model: str
    parameters: dict[str, Any]
    num_images: int
    width: int
    height: int
    images: list[ImageView] = Field(default_factory=list)
    seed: int | str | None
    error: ErrorView | None
    created_at: datetime
    submitted_at: datetime | None
    completed_at: datetime | None
    generation_time: float | None


def generation_view(generation: Generation, store: ImageStore) -> GenerationView:
    parameters = {to_camel(k): v for k, v in generation.parameters.items()}
    parameters["seed"] = seed_value(generation.parameters.get("seed"))
    return GenerationView(
        id=generation.id,
        status=generation.status.value,
        prompt=generation.prompt,
        model=generation.model,
        parameters=parameters,
        num_images=generation.num_images,
        width=generation.width,
        height=generation.height,
        images=[
            ImageView(
                url=store.signed_url(image.path),
                width=image.width,
                height=image.height,
                content_type=image.content_type,
                file_size=image.file_size,
                bucket=image.bucket,
                path=image.path,
                seed=seed_value(image.seed),
                nsfw=image.nsfw,
            )
            for image in generation.images
        ],
        seed=seed_value(generation.seed),
        error=ErrorView(code=generation.error.code, message=generation.error.message)
        if generation.error
        else None,
        created_at=generation.created_at,
        submitted_at=generation.submitted_at,
        completed_at=generation.completed_at,
        generation_time=generation.generation_time,
    )
