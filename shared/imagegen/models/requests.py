"""The generation request as the public API accepts it.

Shape and per-field bounds are checked here; rules that depend on the chosen model (which
parameters it takes, their ranges, what it requires) live in `imagegen.validation` with the
registry. Seed 000's and seed 001's spellings (`loraId`, `cfg_scale`, top-level `width` and
`height`, `sampler`) are accepted here and normalised there.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Discriminator, Field, StringConstraints, Tag, field_validator

from imagegen.models.base import ApiModel
from imagegen.registry import (
    ASPECT_RATIOS,
    DEFAULT_MODEL,
    IMAGE_SIZE_PRESETS,
    MAX_LORAS,
    SAFETY_TOLERANCES,
)

MAX_PROMPT_CHARS = 2000
MAX_URL_CHARS = 2048
# Seeds travel as decimal strings past this: fal seeds can exceed 64-bit integers.
MAX_SEED = 2**128 - 1

# Spelled out for the type checker; the registry stays the one source (checked below).
SizePreset = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]
AspectRatio = Literal["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3"]
SafetyTolerance = Literal["1", "2", "3", "4", "5", "6"]
assert get_args(SizePreset) == tuple(IMAGE_SIZE_PRESETS)
assert get_args(AspectRatio) == ASPECT_RATIOS
assert get_args(SafetyTolerance) == SAFETY_TOLERANCES
SideLength = Annotated[int, Field(ge=256, le=2048, multiple_of=8)]
ShortText = Annotated[str, StringConstraints(max_length=64)]
LoraId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class CustomSize(ApiModel):
    width: SideLength
    height: SideLength


class LoraChoice(ApiModel):
    id: LoraId
    scale: float | None = None


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


def _lora_id(value: object) -> object:
    # Seed 000's database used integer ids; ours are strings.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class GenerationRequest(ApiModel):
    prompt: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT_CHARS)
    ]
    model: ShortText = DEFAULT_MODEL
    num_images: Annotated[int, Field(ge=1, le=5)] = 1
    image_size: ImageSize | None = None
    aspect_ratio: AspectRatio | None = None
    width: SideLength | None = None
    height: SideLength | None = None
    guidance_scale: float | None = None
    cfg_scale: float | None = None
    steps: int | None = None
    seed: Annotated[int, Field(ge=-1, le=MAX_SEED)] | None = None
    output_format: Literal["jpeg", "png"] = "jpeg"
    enable_safety_checker: bool | None = None
    negative_prompt: Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)] | None = None
    sampler: ShortText | None = None
    safety_tolerance: SafetyTolerance | None = None
    loras: Annotated[list[LoraChoice], Field(min_length=1, max_length=MAX_LORAS)] | None = None
    lora_id: LoraId | None = None
    image_url: Annotated[str, StringConstraints(max_length=MAX_URL_CHARS)] | None = None

    @field_validator("seed")
    @classmethod
    def _random_seed_is_none(cls, seed: int | None) -> int | None:
        # -1 is the playground convention (seed 001) for "pick one for me".
        return None if seed == -1 else seed

    @field_validator("lora_id", mode="before")
    @classmethod
    def _lora_id_as_string(cls, value: object) -> object:
        return _lora_id(value)

    @field_validator("safety_tolerance", mode="before")
    @classmethod
    def _tolerance_as_string(cls, value: object) -> object:
        # fal's enum is "1".."6"; frontends naturally send the number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
