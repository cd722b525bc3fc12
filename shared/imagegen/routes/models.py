"""GET /v1/models: the registry, so a frontend can build its form from it."""

from __future__ import annotations

from typing import Any

import flask

from imagegen.models.base import ResponseModel
from imagegen.openapi import Operation
from imagegen.registry import ASPECT_RATIOS, DEFAULT_MODEL, IMAGE_SIZE_PRESETS, MODELS
from imagegen.routes.common import principal
from imagegen.settings import get_settings
from imagegen.web import json_response


class ModelList(ResponseModel):
    models: list[dict[str, Any]]
    default_model: str
    common: dict[str, Any]


OPERATIONS = [
    Operation(
        "GET",
        "/v1/models",
        "The models, their parameters, ranges and defaults",
        "models",
        responses={200: ModelList},
    ),
]


def list_models(request: flask.Request) -> flask.Response:
    principal(request)
    settings = get_settings()
    body = ModelList(
        models=[spec.describe() for spec in MODELS.values()],
        default_model=DEFAULT_MODEL,
        common={
            "numImages": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
            "imageSizePresets": {
                name: {"width": w, "height": h} for name, (w, h) in IMAGE_SIZE_PRESETS.items()
            },
            "customSize": {
                "minimum": 256,
                "maximum": 2048,
                "multipleOf": 8,
                "maxMegapixels": settings.max_megapixels,
            },
            "aspectRatios": list(ASPECT_RATIOS),
            "outputFormats": ["jpeg", "png"],
            "seed": {"type": "integer", "minimum": 0, "random": -1},
        },
    )
    return json_response(body.model_dump(mode="json"))


HANDLERS = {"list_models": list_models}
