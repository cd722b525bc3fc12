"""The model registry: what each model is called at fal.ai, what it takes, what it costs.

Data, not branches: request validation, the dispatcher's fal arguments, cost estimates and
`GET /v1/models` all read these entries, so adding a model is adding an entry. Parameter
names and bounds follow fal's published input schemas for each app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic.alias_generators import to_camel

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3")
SAFETY_TOLERANCES = ("1", "2", "3", "4", "5", "6")
MAX_LORAS = 5

# fal.ai's named sizes (https://fal.ai/models/fal-ai/flux/dev/api).
IMAGE_SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
DEFAULT_IMAGE_SIZE = "landscape_4_3"


class Kind(StrEnum):
    INTEGER = "integer"
    NUMBER = "number"
    STRING = "string"
    BOOLEAN = "boolean"
    ENUM = "enum"
    LORAS = "loras"
    URL = "url"


@dataclass(frozen=True)
class Parameter:
    """An optional request field a model takes (API name in snake_case) and its fal name."""

    name: str
    fal_name: str
    kind: Kind
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    required: bool = False

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"type": self.kind.value, "required": self.required}
        for key, value in (
            ("minimum", self.minimum),
            ("maximum", self.maximum),
            ("default", self.default),
            ("choices", self.choices),
        ):
            if value is not None:
                described[key] = list(value) if isinstance(value, tuple) else value
        return described


class SizeMode(StrEnum):
    IMAGE_SIZE = "image_size"  # fal takes a preset name or {width, height}
    ASPECT_RATIO = "aspect_ratio"  # fal takes only a ratio and picks the size itself


@dataclass(frozen=True)
class ModelSpec:
    id: str
    fal_app: str
    title: str
    max_images_per_request: int
    size_mode: SizeMode
    parameters: tuple[Parameter, ...]
    price_per_megapixel_usd: float | None = None
    price_per_image_usd: float | None = None
    output_format_name: str = "output_format"
    # When the watchdog first asks fal about a request: comfortably past a normal run.
    watchdog_seconds: float = 120.0
    _by_name: dict[str, Parameter] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.parameters})

    def parameter(self, name: str) -> Parameter | None:
        return self._by_name.get(name)

    @property
    def needs_lora(self) -> bool:
        lora = self.parameter("loras")
        return lora is not None and lora.required

    @property
    def needs_input_image(self) -> bool:
        image = self.parameter("image_url")
        return image is not None and image.required

    def estimate_cost_usd(self, width: int, height: int, num_images: int) -> float:
        if self.price_per_image_usd is not None:
            return round(self.price_per_image_usd * num_images, 6)
        megapixels = width * height / 1_000_000
        return round((self.price_per_megapixel_usd or 0.0) * megapixels * num_images, 6)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "falApp": self.fal_app,
            "title": self.title,
            "maxImagesPerRequest": self.max_images_per_request,
            "sizeMode": self.size_mode.value,
            "needsLora": self.needs_lora,
            "needsInputImage": self.needs_input_image,
            "pricing": {
                "perMegapixelUsd": self.price_per_megapixel_usd,
                "perImageUsd": self.price_per_image_usd,
            },
            "parameters": {to_camel(p.name): p.describe() for p in self.parameters},
        }


def _steps(maximum: int, default: int) -> Parameter:
    return Parameter("steps", "num_inference_steps", Kind.INTEGER, 1, maximum, default)


def _guidance(minimum: float, maximum: float, default: float) -> Parameter:
    return Parameter("guidance_scale", "guidance_scale", Kind.NUMBER, minimum, maximum, default)


SAFETY_CHECKER = Parameter(
    "enable_safety_checker", "enable_safety_checker", Kind.BOOLEAN, default=True
)
SAFETY_TOLERANCE = Parameter(
    "safety_tolerance", "safety_tolerance", Kind.ENUM, default="2", choices=SAFETY_TOLERANCES
)
NEGATIVE_PROMPT = Parameter("negative_prompt", "negative_prompt", Kind.STRING, default="")


def _loras(required: bool) -> Parameter:
    # scale bounds are per LoRA; the list itself holds 1..MAX_LORAS entries.
    return Parameter("loras", "loras", Kind.LORAS, 0, 4, 1.0, required=required)


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="flux-dev",
            fal_app="fal-ai/flux/dev",
            title="FLUX.1 [dev]",
            max_images_per_request=4,
            size_mode=SizeMode.IMAGE_SIZE,
            price_per_megapixel_usd=0.025,
            parameters=(_steps(50, 28), _guidance(1, 20, 3.5), SAFETY_CHECKER),
        ),
        ModelSpec(
            id="flux-schnell",
            fal_app="fal-ai/flux/schnell",
            title="FLUX.1 [schnell]",
            max_images_per_request=4,
            size_mode=SizeMode.IMAGE_SIZE,
            price_per_megapixel_usd=0.003,
            parameters=(_steps(12, 4), SAFETY_CHECKER),
        ),
        ModelSpec(
            id="flux-lora",
            fal_app="fal-ai/flux-lora",
            title="FLUX.1 [dev] with LoRAs",
            max_images_per_request=4,
            size_mode=SizeMode.IMAGE_SIZE,
            price_per_megapixel_usd=0.035,
            parameters=(
                _steps(50, 28),
                _guidance(0, 35, 3.5),
                _loras(required=True),
                SAFETY_CHECKER,
            ),
        ),
        ModelSpec(
            id="flux-pro",
            fal_app="fal-ai/flux-pro/v1.1",
            title="FLUX1.1 [pro]",
            max_images_per_request=4,
            size_mode=SizeMode.IMAGE_SIZE,
            price_per_megapixel_usd=0.04,
            parameters=(SAFETY_TOLERANCE, SAFETY_CHECKER),
        ),
        ModelSpec(
            id="flux-kontext",
            fal_app="fal-ai/flux-pro/kontext",
            title="FLUX.1 Kontext [pro] (image to image)",
            max_images_per_request=4,
            size_mode=SizeMode.ASPECT_RATIO,
            price_per_image_usd=0.04,
            parameters=(
                Parameter("image_url", "image_url", Kind.URL, required=True),
                _guidance(1, 20, 3.5),
                SAFETY_TOLERANCE,
            ),
        ),
        ModelSpec(
            id="sdxl",
            fal_app="fal-ai/fast-sdxl",
            title="Stable Diffusion XL (fast)",
            max_images_per_request=8,
            size_mode=SizeMode.IMAGE_SIZE,
            price_per_megapixel_usd=0.0025,
            output_format_name="format",
            parameters=(
                _steps(65, 25),
                _guidance(0, 20, 7.5),
                NEGATIVE_PROMPT,
                _loras(required=False),
                SAFETY_CHECKER,
            ),
        ),
    )
}

DEFAULT_MODEL = "flux-dev"


def get_model(model_id: str) -> ModelSpec | None:
    return MODELS.get(model_id)
