"""/v1/loras: LoRA metadata (seed 000) with signed URLs; admins add and remove LoRAs.

An admin adds a LoRA either by URL (any of the three forms) or by upload: the answer then
carries a resumable upload session URL for a `.safetensors` file of the declared size in
LORA_BUCKET (decision 0005), and the LoRA becomes usable once its file is there.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import flask
from pydantic import Field, StringConstraints, model_validator

from imagegen import blobs, clients, context
from imagegen.bodies import FieldProblem, parse_body, raise_validation
from imagegen.errors import NotFoundError
from imagegen.loras import UPLOAD_PREFIX, Lora, check_url, fetchable_url, gcs_location
from imagegen.models.base import ApiModel, ResponseModel
from imagegen.openapi import Operation
from imagegen.registry import MODELS
from imagegen.routes.common import admin, principal, valid_id
from imagegen.routes.paths import LORAS_PATH
from imagegen.settings import Settings, get_settings
from imagegen.web import json_response, read_body

UPLOAD_CONTENT_TYPE = "application/octet-stream"


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class LoraFile(ApiModel):
    file_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    file_size: Annotated[int, Field(ge=1)]


class NewLora(ApiModel):
    person_id: str | int | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    trigger: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = None
    model: Annotated[str, StringConstraints(max_length=64)] = "flux-lora"
    model_version: Annotated[str, StringConstraints(max_length=64)] | None = None
    default_scale: Annotated[float, Field(ge=0, le=4)] = 1.0
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    upload: LoraFile | None = None

    @model_validator(mode="after")
    def _one_source(self) -> NewLora:
        if (self.url is None) == (self.upload is None):
            raise ValueError("give either url or upload")
        return self


class LoraUploadView(ResponseModel):
    url: str
    method: str
    headers: dict[str, str]
    expires_in_seconds: int
    max_bytes: int
    file_size: int
    how_to: str


class LoraView(ResponseModel):
    """Seed 000's shape (`id, personId, url, firstName, lastName, trigger, model,
    modelVersion`) plus `signedUrl` (15 minutes), `defaultScale`, `status`, `createdAt`."""

    id: str
    person_id: str | int | None
    url: str
    signed_url: str | None
    first_name: str | None
    last_name: str | None
    trigger: str | None
    model: str
    model_version: str | None
    default_scale: float
    status: str
    created_at: datetime
    upload: LoraUploadView | None = None


class LoraList(ResponseModel):
    loras: list[LoraView]


OPERATIONS = [
    Operation(
        "GET",
        LORAS_PATH,
        "List LoRAs with 15-minute signed URLs",
        "loras",
        responses={200: LoraList},
    ),
    Operation(
        "POST",
        LORAS_PATH,
        "Add a LoRA by URL, or get a signed upload URL for its file",
        "loras",
        auth="admin",
        body=NewLora,
        responses={201: LoraView},
    ),
    Operation("GET", f"{LORAS_PATH}/<lora_id>", "One LoRA", "loras", responses={200: LoraView}),
    Operation(
        "DELETE",
        f"{LORAS_PATH}/<lora_id>",
        "Remove a LoRA (and the file it uploaded)",
        "loras",
        auth="admin",
        responses={204: None},
    ),
]


def lora_view(lora: Lora, settings: Settings) -> LoraView:
    signed = None
    if lora.status == "ready":
        signed = fetchable_url(
            lora.url, settings.lora_bucket, context.url_signer(), settings.lora_url_ttl_seconds
        )
    return LoraView(
        id=lora.id,
        person_id=lora.person_id,
        url=lora.url,
        signed_url=signed,
        first_name=lora.first_name,
        last_name=lora.last_name,
        trigger=lora.trigger,
        model=lora.model,
        model_version=lora.model_version,
        default_scale=lora.default_scale,
        status=lora.status,
        created_at=lora.created_at,
    )


def _get(lora_id: str) -> Lora:
    lora = context.loras().get(lora_id) if valid_id(lora_id) else None
    if lora is None:
        raise NotFoundError(f"LoRA '{lora_id[:128]}' not found")
    return _refresh_upload(lora)


def _refresh_upload(lora: Lora) -> Lora:
    """A pending upload becomes ready once its object exists."""
    if lora.status != "pending_upload":
        return lora
    settings = get_settings()
    location = gcs_location(lora.url, settings.lora_bucket)
    if location and blobs.exists(location.bucket, location.path):
        context.loras().update(lora.id, {"status": "ready"})
        return lora.model_copy(update={"status": "ready"})
    return lora


def list_loras(request: flask.Request) -> flask.Response:
    principal(request)
    settings = get_settings()
    loras = [_refresh_upload(lora) for lora in context.loras().list()]
    body = LoraList(loras=[lora_view(lora, settings) for lora in loras])
    return json_response(body.model_dump(mode="json"))


def get_lora(request: flask.Request, lora_id: str) -> flask.Response:
    principal(request)
    return json_response(lora_view(_get(lora_id), get_settings()).model_dump(mode="json"))


def create_lora(request: flask.Request) -> flask.Response:
    admin(request)
    settings = get_settings()
    new = parse_body(NewLora, read_body(request, settings.max_request_bytes))
    problems = []
    if new.model not in MODELS or not MODELS[new.model].parameter("loras"):
        problems.append(FieldProblem("model", f"'{new.model}' takes no LoRAs", "invalid_model"))
    if new.url is not None and (why := check_url(new.url)):
        problems.append(FieldProblem("url", why, "invalid_url"))
    if new.upload is not None:
        if not new.upload.file_name.lower().endswith(".safetensors"):
            problems.append(
                FieldProblem("upload.fileName", "Only .safetensors files", "invalid_file_type")
            )
        if new.upload.file_size > settings.lora_max_bytes:
            problems.append(
                FieldProblem(
                    "upload.fileSize", f"At most {settings.lora_max_bytes} bytes", "too_large"
                )
            )
    raise_validation(problems)

    lora_id = str(uuid.uuid4())
    url = new.url or f"{UPLOAD_PREFIX}{lora_id}.safetensors"
    lora = Lora(
        id=lora_id,
        person_id=new.person_id,
        url=url,
        first_name=new.first_name,
        last_name=new.last_name,
        trigger=new.trigger or None,
        model=new.model,
        model_version=new.model_version,
        default_scale=new.default_scale,
        status="ready" if new.url else "pending_upload",
        created_at=datetime.now(UTC),
    )
    context.loras().create(lora)
    body = lora_view(lora, settings)
    if new.upload is not None:
        body.upload = _upload_instructions(url, new.upload.file_size, settings)
    return json_response(body.model_dump(mode="json"), 201, {"Location": f"{LORAS_PATH}/{lora_id}"})


def _upload_instructions(path: str, size: int, settings: Settings) -> LoraUploadView:
    """A resumable upload session for exactly `size` bytes at `path`, opened by this service.

    The session URI is the capability (Cloud Storage's own idiom for letting a client without
    credentials upload one object): the client PUTs the file to it, in one request or in
    chunks with Content-Range, for up to a week. Cloud Storage refuses any other length.
    """
    blob = clients.storage_client().bucket(settings.lora_bucket).blob(path)
    session = blob.create_resumable_upload_session(content_type=UPLOAD_CONTENT_TYPE, size=size)
    return LoraUploadView(
        url=session,
        method="PUT",
        headers={"Content-Type": UPLOAD_CONTENT_TYPE},
        expires_in_seconds=7 * 24 * 3600,
        max_bytes=settings.lora_max_bytes,
        file_size=size,
        how_to="PUT the file to url with these headers (or in chunks with Content-Range); "
        "the LoRA is usable once the upload completes.",
    )


def delete_lora(request: flask.Request, lora_id: str) -> flask.Response:
    admin(request)
    settings = get_settings()
    lora = context.loras().delete(lora_id) if valid_id(lora_id) else None
    if lora is not None:
        location = gcs_location(lora.url, settings.lora_bucket)
        # Only files this service uploaded are removed; a LoRA that points elsewhere is not ours.
        if (
            location
            and location.bucket == settings.lora_bucket
            and location.path.startswith(UPLOAD_PREFIX)
        ):
            blobs.delete(location.bucket, [location.path])
    return flask.Response(status=204)


HANDLERS = {
    "list_loras": list_loras,
    "get_lora": get_lora,
    "create_lora": create_lora,
    "delete_lora": delete_lora,
}
