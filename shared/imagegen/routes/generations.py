"""/v1/images/generations: create a generation and read it back."""

from __future__ import annotations

import flask
from werkzeug.routing import Rule

from imagegen import accept, context
from imagegen.errors import NotFoundError
from imagegen.routes.common import principal, valid_id
from imagegen.settings import get_settings
from imagegen.validation import parse_generation_request
from imagegen.views import AcceptedView, generation_view
from imagegen.web import json_response, read_body

GENERATIONS_PATH = "/v1/images/generations"

RULES = [
    Rule(GENERATIONS_PATH, endpoint="create_generation", methods=["POST"]),
    Rule(f"{GENERATIONS_PATH}/<generation_id>", endpoint="get_generation", methods=["GET"]),
]


def create_generation(request: flask.Request) -> flask.Response:
    settings = get_settings()
    caller = principal(request)
    validated = parse_generation_request(read_body(request, settings.max_request_bytes))
    generation = accept.accept(validated, caller, context.generations(), settings)
    body = AcceptedView(
        id=generation.id, status=generation.status.value, created_at=generation.created_at
    )
    return json_response(
        body.model_dump(mode="json"), 202, {"Location": f"{GENERATIONS_PATH}/{generation.id}"}
    )


def get_generation(request: flask.Request, generation_id: str) -> flask.Response:
    caller = principal(request)
    generation = context.generations().get(generation_id) if valid_id(generation_id) else None
    # Another user's generation is indistinguishable from a missing one.
    if generation is None or generation.user_id != caller.user_id:
        raise NotFoundError(f"Generation '{generation_id[:128]}' not found")
    return json_response(generation_view(generation, context.image_store()).model_dump(mode="json"))


HANDLERS = {"create_generation": create_generation, "get_generation": get_generation}
