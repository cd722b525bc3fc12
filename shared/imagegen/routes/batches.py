"""/v1/images/batch (seed 002): up to 50 generations in one call, all or none.

Every item is validated before anything is created (one bad item rejects the batch with
422 naming its index); admission counts every item against the user's limits; the records
and the batch document are written in one transaction.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import flask
from pydantic import Field

from imagegen import accept, clients, context, idempotency
from imagegen.bodies import load_body
from imagegen.errors import BadRequestError, NotFoundError, ValidationError
from imagegen.models.base import ApiModel, ResponseModel
from imagegen.models.records import Generation
from imagegen.models.requests import GenerationRequest
from imagegen.openapi import Operation
from imagegen.routes.common import principal, valid_id
from imagegen.routes.paths import BATCH_PATH
from imagegen.settings import get_settings
from imagegen.validation import ValidatedGeneration, validate_generation
from imagegen.web import json_response, read_body

if TYPE_CHECKING:
    from google.cloud import firestore

BATCHES = "batches"
MAX_ITEMS = 50
# A batch body holds up to 50 requests; the per-request limit would refuse legitimate ones.
BATCH_BODY_FACTOR = 16


def _items(raw: dict[str, Any]) -> list[Any]:
    unknown = set(raw) - {"requests"}
    if unknown:
        raise ValidationError(
            "Invalid request: unknown fields",
            details=[
                {
                    "field": name,
                    "message": "Extra inputs are not permitted",
                    "type": "extra_forbidden",
                }
                for name in sorted(unknown)
            ],
        )
    items = raw.get("requests")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise ValidationError(
            f"Invalid request: requests must be a list of 1..{MAX_ITEMS} generation requests",
            details=[
                {"field": "requests", "message": f"1..{MAX_ITEMS} items", "type": "invalid_length"}
            ],
        )
    return items


def _validate_all(items: list[Any]) -> list[ValidatedGeneration]:
    validated, details = [], []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise BadRequestError("each request must be an object")
            validated.append(validate_generation(item))
        except ValidationError as exc:
            details += [{**d, "field": f"requests.{index}.{d['field']}"} for d in exc.details]
        except BadRequestError as exc:
            details.append(
                {"field": f"requests.{index}", "message": exc.message, "type": "invalid_item"}
            )
    if details:
        indexes = sorted({int(d["field"].split(".")[1]) for d in details})
        raise ValidationError(f"Invalid batch: items {indexes}", details=details)
    return validated


def create_batch(request: flask.Request) -> flask.Response:
    settings = get_settings()
    caller = principal(request)
    body = read_body(request, settings.max_request_bytes * BATCH_BODY_FACTOR)
    raw = load_body(body)
    validated = _validate_all(_items(raw))
    claim = idempotency.claim(
        caller.user_id, request.headers.get("Idempotency-Key"), BATCH_PATH, raw
    )
    batch_id = str(uuid.uuid4())
    now = datetime.now(UTC)

    def write_batch(batch: firestore.WriteBatch, generations: list[Generation]) -> None:
        batch.create(
            clients.firestore_client().collection(BATCHES).document(batch_id),
            {
                "id": batch_id,
                "user_id": caller.user_id,
                "created_at": now,
                "generation_ids": [g.id for g in generations],
            },
        )

    accepted = accept.accept(
        validated, caller, settings, claim=claim, batch_id=batch_id, extra_write=write_batch
    )
    generations = accepted.generations
    if accepted.replayed and generations:
        batch_id = generations[0].batch_id or batch_id
    status = {"Location": f"{BATCH_PATH}/{batch_id}"}
    if accepted.replayed:
        status["Idempotent-Replayed"] = "true"
    return json_response(_batch_body(batch_id, generations, now), 202, status)


class BatchRequest(ApiModel):
    """The batch body, for the API description; items are validated one by one so that an
    error can name its index."""

    requests: Annotated[list[GenerationRequest], Field(min_length=1, max_length=MAX_ITEMS)]


class BatchItemView(ResponseModel):
    id: str
    status: str


class BatchView(ResponseModel):
    id: str
    created_at: datetime
    total: int
    counts: dict[str, int]
    done: bool
    generations: list[BatchItemView]


OPERATIONS = [
    Operation(
        "POST",
        BATCH_PATH,
        "Create up to 50 generations at once, all or none",
        "batches",
        body=BatchRequest,
        responses={202: BatchView},
        headers=("Idempotency-Key",),
    ),
    Operation(
        "GET",
        f"{BATCH_PATH}/<batch_id>",
        "The statuses of a batch's generations",
        "batches",
        responses={200: BatchView},
    ),
]


def _batch_body(batch_id: str, generations: list[Generation], created_at: datetime) -> dict:
    counts: dict[str, int] = {}
    for generation in generations:
        counts[generation.status.value] = counts.get(generation.status.value, 0) + 1
    return BatchView(
        id=batch_id,
        created_at=created_at,
        total=len(generations),
        counts=counts,
        done=all(g.is_terminal for g in generations),
        generations=[BatchItemView(id=g.id, status=g.status.value) for g in generations],
    ).model_dump(mode="json")


def get_batch(request: flask.Request, batch_id: str) -> flask.Response:
    caller = principal(request)
    snapshot = (
        clients.firestore_client().collection(BATCHES).document(batch_id).get()
        if valid_id(batch_id)
        else None
    )
    data = snapshot.to_dict() if snapshot is not None and snapshot.exists else None
    if data is None or data.get("user_id") != caller.user_id:
        raise NotFoundError(f"Batch '{batch_id[:128]}' not found")
    ids = data["generation_ids"]
    generations = context.generations().get_many(ids)
    return json_response(_batch_body(batch_id, generations, data["created_at"]))


HANDLERS = {"create_batch": create_batch, "get_batch": get_batch}
