"""/v1/images/generations: create a generation, read it back, list, cancel and delete."""

from __future__ import annotations

import flask

from imagegen import accept, context, history, idempotency
from imagegen import cancel as cancellation
from imagegen.auth import Principal
from imagegen.bodies import load_body
from imagegen.errors import NotFoundError
from imagegen.models.records import Generation
from imagegen.models.requests import GenerationRequest
from imagegen.openapi import Operation
from imagegen.routes.common import principal, valid_id
from imagegen.routes.paths import GENERATIONS_PATH
from imagegen.settings import get_settings
from imagegen.validation import parse_generation_request
from imagegen.views import AcceptedView, GenerationView, generation_view
from imagegen.waiting import preferred_wait, wait_for_end
from imagegen.web import json_response, read_body

OPERATIONS = [
    Operation(
        "POST",
        GENERATIONS_PATH,
        "Start a generation",
        "generations",
        body=GenerationRequest,
        responses={202: AcceptedView, 200: GenerationView},
        headers=("Idempotency-Key", "Prefer"),
    ),
    Operation(
        "GET",
        GENERATIONS_PATH,
        "The caller's generations, newest first",
        "generations",
        query=history.HistoryQuery,
        responses={200: history.GenerationsPage},
    ),
    Operation(
        "GET",
        f"{GENERATIONS_PATH}/<generation_id>",
        "One generation",
        "generations",
        responses={200: GenerationView},
    ),
    Operation(
        "DELETE",
        f"{GENERATIONS_PATH}/<generation_id>",
        "Delete a generation, its images and thumbnails",
        "generations",
        responses={204: None},
    ),
    Operation(
        "POST",
        f"{GENERATIONS_PATH}/<generation_id>/cancel",
        "Cancel a queued or running generation",
        "generations",
        responses={200: GenerationView, 409: None},
    ),
]


def create_generation(request: flask.Request) -> flask.Response:
    settings = get_settings()
    caller = principal(request)
    body = read_body(request, settings.max_request_bytes)
    validated = parse_generation_request(body)
    claim = idempotency.claim(
        caller.user_id, request.headers.get("Idempotency-Key"), GENERATIONS_PATH, load_body(body)
    )
    accepted = accept.accept([validated], caller, settings, claim=claim)
    return accepted_response(request, accepted.generations[0], caller, accepted.replayed)


def accepted_response(
    request: flask.Request, generation: Generation, caller: Principal, replayed: bool
) -> flask.Response:
    """202 with the new id; with `Prefer: wait=N`, the record once it ended (200) or when
    the wait ran out (202)."""
    headers = {"Location": f"{GENERATIONS_PATH}/{generation.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    wait = preferred_wait(request.headers.get("Prefer"))
    if wait is None:
        body = AcceptedView(
            id=generation.id, status=generation.status.value, created_at=generation.created_at
        )
        return json_response(body.model_dump(mode="json"), 202, headers)
    current = wait_for_end(context.generations(), generation, wait)
    headers["Preference-Applied"] = f"wait={wait}"
    view = generation_view(current, context.image_store(), caller).model_dump(mode="json")
    return json_response(view, 200 if current.is_terminal else 202, headers)


def get_generation_for(generation_id: str, caller: Principal) -> Generation:
    generation = context.generations().get(generation_id) if valid_id(generation_id) else None
    # Another user's generation is indistinguishable from a missing one.
    if generation is None or generation.user_id != caller.user_id:
        raise NotFoundError(f"Generation '{generation_id[:128]}' not found")
    return generation


def get_generation(request: flask.Request, generation_id: str) -> flask.Response:
    caller = principal(request)
    generation = get_generation_for(generation_id, caller)
    return json_response(
        generation_view(generation, context.image_store(), caller).model_dump(mode="json")
    )


def list_generations(request: flask.Request) -> flask.Response:
    caller = principal(request)
    return json_response(history.list_page(request.args, caller).model_dump(mode="json"))


def _owned(generation_id: str, caller: Principal) -> Generation:
    if not valid_id(generation_id):
        raise NotFoundError(f"Generation '{generation_id[:128]}' not found")
    return cancellation.owned(context.generations(), generation_id, caller)


def cancel_generation(request: flask.Request, generation_id: str) -> flask.Response:
    caller = principal(request)
    generation = _owned(generation_id, caller)
    canceled = cancellation.cancel(generation, context.generations(), context.fal_gateway())
    return json_response(
        generation_view(canceled, context.image_store(), caller).model_dump(mode="json")
    )


def delete_generation(request: flask.Request, generation_id: str) -> flask.Response:
    caller = principal(request)
    if not valid_id(generation_id):
        raise NotFoundError(f"Generation '{generation_id[:128]}' not found")
    cancellation.delete(
        generation_id,
        caller,
        context.generations(),
        context.image_store(),
        context.fal_gateway(),
    )
    return flask.Response(status=204)


HANDLERS = {
    "create_generation": create_generation,
    "get_generation": get_generation,
    "list_generations": list_generations,
    "cancel_generation": cancel_generation,
    "delete_generation": delete_generation,
}
