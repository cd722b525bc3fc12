"""The public HTTP API (the `api` function): routes and their handlers."""

from __future__ import annotations

import re

import flask
from werkzeug.routing import Map, Rule

from imagegen import accept, context
from imagegen.auth import Principal, authenticate
from imagegen.errors import NotFoundError
from imagegen.settings import get_settings
from imagegen.validation import parse_generation_request
from imagegen.views import AcceptedView, generation_view
from imagegen.web import dispatch, json_response, read_body

GENERATIONS_PATH = "/v1/images/generations"
# Anything else cannot be one of our ids, and is not a valid Firestore document id either.
GENERATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")

URL_MAP = Map(
    [
        Rule("/healthz", endpoint="health", methods=["GET"]),
        Rule(GENERATIONS_PATH, endpoint="create_generation", methods=["POST"]),
        Rule(f"{GENERATIONS_PATH}/<generation_id>", endpoint="get_generation", methods=["GET"]),
    ],
    strict_slashes=False,
)


def _principal(request: flask.Request) -> Principal:
    return authenticate(context.api_keys(), request.headers.get("Authorization"))


def health(_: flask.Request) -> flask.Response:
    return json_response({"status": "ok"})


def create_generation(request: flask.Request) -> flask.Response:
    settings = get_settings()
    principal = _principal(request)
    validated = parse_generation_request(read_body(request, settings.max_request_bytes))
    generation = accept.accept(validated, principal, context.generations(), settings)
    body = AcceptedView(
        id=generation.id, status=generation.status.value, created_at=generation.created_at
    )
    return json_response(
        body.model_dump(mode="json"), 202, {"Location": f"{GENERATIONS_PATH}/{generation.id}"}
    )


def get_generation(request: flask.Request, generation_id: str) -> flask.Response:
    principal = _principal(request)
    generation = (
        context.generations().get(generation_id) if GENERATION_ID.fullmatch(generation_id) else None
    )
    # Another user's generation is indistinguishable from a missing one.
    if generation is None or generation.user_id != principal.user_id:
        raise NotFoundError(f"Generation '{generation_id[:128]}' not found")
    return json_response(generation_view(generation, context.image_store()).model_dump(mode="json"))


HANDLERS = {
    "health": health,
    "create_generation": create_generation,
    "get_generation": get_generation,
}


def handle(request: flask.Request) -> flask.Response:
    return dispatch(request, URL_MAP, HANDLERS)
