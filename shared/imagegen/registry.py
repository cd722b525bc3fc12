"""The model registry: what each model is called at fal.ai and which parameters it takes.

Data, not branches: validation, the dispatcher's fal arguments and (later) the model list
endpoint all read these entries, so adding a model is adding an entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NumberRange:
    min: float
    max: float
    default: float

    def contains(self, value: float) -> bool:
        return self.min <= value <= self.max


@dataclass(frozen=True)
class ModelSpec:
    id: str
    fal_app: str
    max_images_per_request: int
    price_per_megapixel_usd: float
    steps: NumberRange | None = None
    guidance_scale: NumberRange | None = None
    # Request fields this model accepts beyond the ones every model takes.
    extra_parameters: frozenset[str] = field(default_factory=frozenset)

    def accepts(self, parameter: str) -> bool:
        if parameter == "steps":
            return self.steps is not None
        if parameter == "guidance_scale":
            return self.guidance_scale is not None
        return parameter in self.extra_parameters


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="flux-dev",
            fal_app="fal-ai/flux/dev",
            max_images_per_request=4,
            price_per_megapixel_usd=0.025,
            steps=NumberRange(1, 50, 28),
            guidance_scale=NumberRange(1, 20, 3.5),
        ),
        ModelSpec(
            id="flux-schnell",
            fal_app="fal-ai/flux/schnell",
            max_images_per_request=4,
            price_per_megapixel_usd=0.003,
            steps=NumberRange(1, 12, 4),
        ),
    )
}

DEFAULT_MODEL = "flux-dev"

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


def get_model(model_id: str) -> ModelSpec | None:
    return MODELS.get(model_id)
