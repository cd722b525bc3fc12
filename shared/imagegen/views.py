"""What the API returns for a generation: camelCase, with signed URLs for the images."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic.alias_generators import to_camel

from imagegen.models.base import ResponseModel
from imagegen.models.records import Generation, GenerationPart, StoredImage
from imagegen.storage import ImageStore

if TYPE_CHECKING:
    from imagegen.auth import Principal

# Larger integers lose precision in JavaScript clients, so they travel as strings.
MAX_SAFE_INTEGER = 2**53 - 1


def seed_value(seed: str | None) -> int | str | None:
    if seed is None:
        return None
    number = int(seed)
    return number if number <= MAX_SAFE_INTEGER else seed


class ImageView(ResponseModel):
    # "ok", or "filtered" when fal flagged it NSFW: stored but served to admins only.
    status: str
    url: str | None
    thumbnail_url: str | None
    full_url: str
    width: int
    height: int
    content_type: str
    file_size: int
    bucket: str
    path: str
    seed: int | str | None
    nsfw: bool


class PartView(ResponseModel):
    index: int
    status: str
    num_images: int
    # fal's own timings for this request, as fal reported them (seconds).
    timings: dict[str, Any]


def merged_timings(parts: list[GenerationPart]) -> dict[str, float]:
    """fal's timings summed over the parts: the generation's total fal time per phase."""
    merged: dict[str, float] = {}
    for part in parts:
        for name, value in part.timings.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                merged[name] = round(merged.get(name, 0.0) + value, 6)
    return merged


def image_view(image: StoredImage, store: ImageStore, serve_filtered: bool) -> ImageView:
    served = serve_filtered or not image.nsfw
    return ImageView(
        status="filtered" if image.nsfw else "ok",
        url=store.signed_url(image.path) if served else None,
        thumbnail_url=store.signed_url(image.thumbnail_path)
        if served and image.thumbnail_path
        else None,
        full_url=f"{image.bucket}/{image.path}",
        width=image.width,
        height=image.height,
        content_type=image.content_type,
        file_size=image.file_size,
        bucket=image.bucket,
        path=image.path,
        seed=seed_value(image.seed),
        nsfw=image.nsfw,
    )


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
    width: int | None
    height: int | None
    effective_prompt: str | None = None
    loras: list[dict[str, Any]] = Field(default_factory=list)
    images: list[ImageView] = Field(default_factory=list)
    seed: int | str | None
    error: ErrorView | None
    created_at: datetime
    submitted_at: datetime | None
    completed_at: datetime | None
    canceled_at: datetime | None = None
    generation_time: float | None
    # Summed over parts (see merged_timings); each part's own in `parts`.
    timings: dict[str, float] = Field(default_factory=dict)
    parts: list[PartView] = Field(default_factory=list)


def generation_view(
    generation: Generation, store: ImageStore, caller: Principal | None = None
) -> GenerationView:
    """The API's view of a record for `caller`: NSFW-flagged images get URLs only for an
    admin (no caller counts as a plain user)."""
    serve_filtered = caller is not None and caller.is_admin
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
        effective_prompt=generation.effective_prompt or generation.prompt,
        loras=[{"id": lora.id, "scale": lora.scale} for lora in generation.loras],
        images=[image_view(image, store, serve_filtered) for image in generation.images],
        seed=seed_value(generation.seed),
        error=ErrorView(code=generation.error.code, message=generation.error.message)
        if generation.error
        else None,
        created_at=generation.created_at,
        submitted_at=generation.submitted_at,
        completed_at=generation.completed_at,
        canceled_at=generation.canceled_at,
        generation_time=generation.generation_time,
        timings=merged_timings(generation.parts),
        parts=[
            PartView(
                index=part.index,
                status=part.status.value,
                num_images=part.num_images,
                timings=part.timings,
            )
            for part in generation.parts
        ],
    )
