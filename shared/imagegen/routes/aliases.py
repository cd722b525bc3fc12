"""The seeds' own endpoints, as thin adapters over the v1 API, so their frontends can switch
over without changes. Each reshapes v1's models; none has logic of its own.

- seed 000: `GET /api/get-lora-models`, `POST /api/generate-image` (synchronous: it waits
  for the images, as seed 000's endpoint did)
- seed 001: `GET /api/images/history/`, `GET /api/images/{id}/`, `DELETE /api/images/{id}/`
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import flask
from pydantic import ConfigDict, RootModel

from imagegen import accept, cancel, context, history
from imagegen.bodies import load_body
from imagegen.errors import NotFoundError
from imagegen.models.base import ResponseModel
from imagegen.models.records import Generation, GenerationStatus
from imagegen.models.requests import GenerationRequest
from imagegen.openapi import Operation
from imagegen.routes.common import principal, valid_id
from imagegen.routes.generations import get_generation_for
from imagegen.routes.loras import LoraView, lora_view
from imagegen.settings import get_settings
from imagegen.validation import validate_generation
from imagegen.views import AcceptedView, ErrorView, GenerationView, generation_view, seed_value
from imagegen.waiting import MAX_WAIT_SECONDS, wait_for_end
from imagegen.web import json_response, read_body


class Seed000LoraList(RootModel[list[LoraView]]):
    """Seed 000's answer: a bare list of LoRAs."""

    model_config = ConfigDict(defer_build=True)  # as imagegen.models.base.Model


class Seed000Result(ResponseModel):
    """Seed 000's answer, plus the outcome: a generation that ended without images is
    reported as such (status and error), with an empty image list."""

    id: str
    status: str
    images: list[dict[str, Any]]
    seed: int | str | None
    prompt: str
    error: ErrorView | None = None


class Seed001Item(ResponseModel):
    id: str
    prompt: str
    image_url: str | None
    thumbnail_url: str | None
    model_used: str
    created_at: datetime


class Seed001History(ResponseModel):
    images: list[Seed001Item]
    total: int
    page: int
    per_page: int


class Seed001Image(ResponseModel):
    id: str
    prompt: str
    negative_prompt: str
    image_url: str | None
    thumbnail_url: str | None
    width: int | None
    height: int | None
    status: str
    parameters: dict[str, Any]
    generation_time: float | None
    created_at: datetime


OPERATIONS = [
    Operation(
        "GET",
        "/api/get-lora-models",
        "Seed 000: LoRAs with signed URLs (a bare list)",
        "seed aliases",
        responses={200: Seed000LoraList},
    ),
    Operation(
        "POST",
        "/api/generate-image",
        "Seed 000: generate and wait for the images",
        "seed aliases",
        body=GenerationRequest,
        responses={200: Seed000Result, 202: AcceptedView},
    ),
    Operation(
        "GET",
        "/api/images/history/",
        "Seed 001: the caller's images, paginated",
        "seed aliases",
        query=history.HistoryQuery,
        responses={200: Seed001History},
    ),
    Operation(
        "GET",
        "/api/images/<image_id>/",
        "Seed 001: one image",
        "seed aliases",
        responses={200: Seed001Image},
    ),
    Operation(
        "DELETE",
        "/api/images/<image_id>/",
        "Seed 001: delete an image",
        "seed aliases",
        responses={204: None},
    ),
]


def seed000_lora_models(request: flask.Request) -> flask.Response:
    principal(request)
    settings = get_settings()
    return json_response(
        [lora_view(lora, settings).model_dump(mode="json") for lora in context.loras().list()]
    )


def seed000_generate_image(request: flask.Request) -> flask.Response:
    settings = get_settings()
    caller = principal(request)
    body = read_body(request, settings.max_request_bytes)
    raw = load_body(body)
    # Seed 000 always generated with flux-lora: its requests name a LoRA and no model.
    if "model" not in raw and ("loraId" in raw or "lora_id" in raw):
        raw = {**raw, "model": "flux-lora"}
    validated = validate_generation(raw)
    generation = accept.accept([validated], caller, settings).generations[0]
    done = wait_for_end(context.generations(), generation, MAX_WAIT_SECONDS)
    if done.status is GenerationStatus.COMPLETED:
        view = generation_view(done, context.image_store(), caller)
        images = [
            {
                "url": i.url,
                "fullUrl": i.full_url,
                "bucket": i.bucket,
                "path": i.path,
                "width": i.width,
                "height": i.height,
                "content_type": i.content_type,
            }
            for i in view.images
        ]
        result = Seed000Result(
            id=done.id,
            status=done.status.value,
            images=images,
            seed=view.seed,
            prompt=done.prompt,
        )
        return json_response(result.model_dump(mode="json"))
    if done.is_terminal:
        # Failed or canceled: an answer about the generation, not a server error.
        ended = Seed000Result(
            id=done.id,
            status=done.status.value,
            images=[],
            seed=None,
            prompt=done.prompt,
            error=ErrorView(code=done.error.code, message=done.error.message)
            if done.error
            else None,
        )
        return json_response(ended.model_dump(mode="json"))
    accepted = AcceptedView(id=done.id, status=done.status.value, created_at=done.created_at)
    return json_response(
        accepted.model_dump(mode="json"),
        202,
        {"Location": f"/v1/images/generations/{done.id}"},
    )


def _seed001_item(view: GenerationView) -> Seed001Item:
    first = view.images[0] if view.images else None
    return Seed001Item(
        id=view.id,
        prompt=view.prompt,
        image_url=first.url if first else None,
        thumbnail_url=first.thumbnail_url if first else None,
        model_used=view.model,
        created_at=view.created_at,
    )


def seed001_history(request: flask.Request) -> flask.Response:
    caller = principal(request)
    page = history.list_page(request.args, caller)
    body = Seed001History(
        images=[_seed001_item(view) for view in page.images],
        total=page.total,
        page=page.page or 1,
        per_page=page.per_page,
    )
    return json_response(body.model_dump(mode="json"))


def seed001_get_image(request: flask.Request, image_id: str) -> flask.Response:
    caller = principal(request)
    generation: Generation = get_generation_for(image_id, caller)
    view = generation_view(generation, context.image_store(), caller)
    first = view.images[0] if view.images else None
    params = generation.parameters
    body = Seed001Image(
        id=view.id,
        prompt=view.prompt,
        negative_prompt=params.get("negative_prompt") or "",
        image_url=first.url if first else None,
        thumbnail_url=first.thumbnail_url if first else None,
        width=view.width,
        height=view.height,
        status=view.status,
        parameters={
            "steps": params.get("steps"),
            "cfgScale": params.get("guidance_scale"),
            "sampler": None,
            "seed": seed_value(generation.seed or params.get("seed")),
        },
        generation_time=view.generation_time,
        created_at=view.created_at,
    )
    return json_response(body.model_dump(mode="json"))


def seed001_delete_image(request: flask.Request, image_id: str) -> flask.Response:
    caller = principal(request)
    if not valid_id(image_id):
        raise NotFoundError(f"Image '{image_id[:128]}' not found")
    cancel.delete(
        image_id, caller, context.generations(), context.image_store(), context.fal_gateway()
    )
    return flask.Response(status=204)


HANDLERS = {
    "seed000_lora_models": seed000_lora_models,
    "seed000_generate_image": seed000_generate_image,
    "seed001_history": seed001_history,
    "seed001_get_image": seed001_get_image,
    "seed001_delete_image": seed001_delete_image,
}
