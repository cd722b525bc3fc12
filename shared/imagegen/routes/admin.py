"""/v1/admin/apiKeys: administrators issue, list and revoke API keys.

A key is shown once, in the answer that creates it; only its SHA-256 hash is stored, so
the listing shows key ids, never keys. Revoking takes effect at once: authentication reads
the key's document on every request.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

import flask
import pydantic
from pydantic import Field

from imagegen import context
from imagegen.auth import issue_api_key
from imagegen.bodies import FieldProblem, parse_body, problems_from_pydantic, raise_validation
from imagegen.errors import NotFoundError
from imagegen.models.base import ApiModel, ResponseModel
from imagegen.openapi import Operation
from imagegen.repository import StoredApiKey
from imagegen.routes.common import admin
from imagegen.routes.paths import API_KEYS_PATH
from imagegen.settings import get_settings
from imagegen.web import json_response, read_body

log = logging.getLogger(__name__)

MAX_LISTED = 200
# Ids we mint are 16 hex digits; anything else cannot be ours.
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

UserId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@:-]+$")]


class CreateApiKeyRequest(ApiModel):
    user_id: UserId
    role: Literal["user", "admin"] = "user"


class ListApiKeysQuery(ApiModel):
    user_id: UserId


class CreatedApiKeyView(ResponseModel):
    api_key: str
    key_id: str
    user_id: str
    role: str
    created_at: datetime


class ApiKeyView(ResponseModel):
    key_id: str
    user_id: str
    role: str
    revoked: bool
    created_at: datetime | None
    revoked_at: datetime | None


class ApiKeyList(ResponseModel):
    api_keys: list[ApiKeyView]


OPERATIONS = [
    Operation(
        "POST",
        API_KEYS_PATH,
        "Issue an API key for a user (the key is shown in this answer only)",
        "admin",
        auth="admin",
        body=CreateApiKeyRequest,
        responses={201: CreatedApiKeyView},
    ),
    Operation(
        "GET",
        API_KEYS_PATH,
        "A user's API keys, newest first, without the keys themselves",
        "admin",
        auth="admin",
        query=ListApiKeysQuery,
        responses={200: ApiKeyList},
    ),
    Operation(
        "DELETE",
        f"{API_KEYS_PATH}/<key_id>",
        "Revoke an API key at once (revoking again is a 204 too)",
        "admin",
        auth="admin",
        responses={204: None},
    ),
]


def _validated(model: type[pydantic.BaseModel], data: dict[str, str]):  # noqa: ANN202
    """A query string validated by `model`; 422 naming every bad parameter."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise_validation(problems_from_pydantic(exc))
        raise  # unreachable: raise_validation raised


def create_api_key(request: flask.Request) -> flask.Response:
    caller = admin(request)
    wanted = parse_body(CreateApiKeyRequest, read_body(request, get_settings().max_request_bytes))
    now = datetime.now(UTC)
    api_key, record = issue_api_key(context.api_keys(), wanted.user_id, wanted.role, now)
    log.info(
        "api key issued",
        extra={"key_id": record.key_id, "user_id": record.user_id, "by": caller.user_id},
    )
    view = CreatedApiKeyView(
        api_key=api_key,
        key_id=record.key_id,
        user_id=record.user_id,
        role=record.role,
        created_at=now,
    )
    return json_response(
        view.model_dump(mode="json"),
        201,
        {"Location": f"{API_KEYS_PATH}/{record.key_id}", "Cache-Control": "no-store"},
    )


def _view(stored: StoredApiKey) -> ApiKeyView:
    record = stored.record
    return ApiKeyView(
        key_id=record.key_id,
        user_id=record.user_id,
        role=record.role,
        revoked=record.revoked,
        created_at=stored.created_at,
        revoked_at=stored.revoked_at,
    )


def list_api_keys(request: flask.Request) -> flask.Response:
    admin(request)
    repeated = [
        FieldProblem(name, "must be given at most once", "repeated_parameter")
        for name in request.args
        if len(request.args.getlist(name)) > 1
    ]
    raise_validation(repeated)
    query: ListApiKeysQuery = _validated(ListApiKeysQuery, dict(request.args.items()))
    keys = context.api_keys().list_for_user(query.user_id, MAX_LISTED)
    return json_response(ApiKeyList(api_keys=[_view(k) for k in keys]).model_dump(mode="json"))


def revoke_api_key(request: flask.Request, key_id: str) -> flask.Response:
    caller = admin(request)
    keys = context.api_keys()
    stored = keys.find_by_key_id(key_id) if KEY_ID.fullmatch(key_id) else None
    if stored is None:
        raise NotFoundError(f"API key '{key_id[:128]}' not found")
    if not stored.record.revoked:  # revoking twice is not an error, and changes nothing
        keys.revoke(stored.key_hash, datetime.now(UTC))
        log.info("api key revoked", extra={"key_id": key_id, "by": caller.user_id})
    return flask.Response(status=204)


HANDLERS = {
    "create_api_key": create_api_key,
    "list_api_keys": list_api_keys,
    "revoke_api_key": revoke_api_key,
}
