"""The generation request as the public API accepts it.

Shape and per-field bounds are checked here; rules that depend on the chosen model
(step ranges, which parameters it takes) live in `imagegen.validation` with the registry.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, StringConstraints, Tag, field_validator

from imagegen.models.base import ApiModel
from imagegen.registry import DEFAULT_IMAGE_SIZE, DEFAULT_MODEL, IMAGE_SIZE_PRESETS

MAX_PROMPT_CHARS = 2000
# Seeds travel as decimal strings past this: fal seeds can exceed 64-bit integers.
MAX_SEED = 2**128 - 1

SizePreset = Literal[tuple(IMAGE_SIZE_PRESETS)]  # type: ignore[valid-type]
SideLength = Annotated[int, Field(ge=256, le=2048, multiple_of=8)]


class CustomSize(ApiModel):
    width: SideLength
    height: SideLength


def _size_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "preset"
    if isinstance(value, dict | CustomSize):
        return "custom"
    return None


# Tagged so a bad value gets one error about the form it took, not one per union member.
ImageSize = Annotated[
    Annotated[SizePreset, Tag("preset")] | Annotated[CustomSize, Tag("custom")],
    Discriminator(
        _size_kind,
        custom_error_type="image_size_type",
        custom_error_message="imageSize must be a preset name or an object {width, height}",
    ),
]
UNION_TAGS = frozenset({"preset", "custom"})


class GenerationRequest(ApiModel):
    prompt: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT_CHARS)
    ]
    model: Annotated[str, StringConstraints(max_length=64)] = DEFAULT_MODEL
    num_images: Annotated[int, Field(ge=1, le=4)] = 1
    image_size: ImageSize = DEFAULT_IMAGE_SIZE
    guidance_scale: float | None = None
    steps: int | None = None
    seed: Annotated[int, Field(ge=-1, le=MAX_SEED)] | None = None
    output_format: Literal["jpeg", "png"] = "jpeg"
    enable_safety_checker: bool = True

    @field_validator("seed")
    @classmethod
    def _random_seed_is_none(cls, seed: int | None) -> int | None:
        # -1 is the playground convention (seed 001) for "pick one for me".
        return None if seed == -1 else seed

    def dimensions(self) -> tuple[int, int]:
        if isinstance(self.image_size, CustomSize):
            return self.image_size.width, self.image_size.height
        return IMAGE_SIZE_PRESETS[self.image_size]
