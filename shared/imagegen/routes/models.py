"""GET /v1/models: the registry, so a frontend can build its form from it."""

from __future__ import annotations

import flask
from werkzeug.routing import Rule

from imagegen.registry import ASPECT_RATIOS, DEFAULT_MODEL, IMAGE_SIZE_PRESETS, MODELS
from imagegen.routes.common import principal
from imagegen.settings import get_settings
from imagegen.web import json_response

RULES = [Rule("/v1/models", endpoint="list_models", methods=["GET"])]


def list_models(request: flask.Request) -> flask.Response:
    principal(request)
    settings = get_settings()
    return json_response(
        {
            "models": [spec.describe() for spec in MODELS.values()],
            "defaultModel": DEFAULT_MODEL,
            "common": {
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
        }
    )


HANDLERS = {"list_models": list_models}
