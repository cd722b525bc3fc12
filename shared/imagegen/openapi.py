"""The OpenAPI 3.1 description of the api function, generated from the same pydantic models
that validate requests and shape responses, so it cannot drift from the code.

Each operation names the models it reads and writes; `tests/unit/test_openapi.py` checks
that every route in the router has exactly one operation here and vice versa.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from imagegen.models.base import ResponseModel


class ErrorDetail(ResponseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(ResponseModel):
    error: ErrorDetail


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # werkzeug syntax, as in the route module
    summary: str
    tag: str
    auth: str = "user"  # "user" | "admin" | "none"
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    headers: tuple[str, ...] = ()

    @property
    def openapi_path(self) -> str:
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", self.path)

    @property
    def operation_id(self) -> str:
        words = re.sub(r"[^A-Za-z0-9]+", "_", self.openapi_path).strip("_") or "root"
        return f"{self.method.lower()}_{words}"

    @property
    def path_parameters(self) -> list[str]:
        return re.findall(r"<(?:\w+:)?(\w+)>", self.path)


ERRORS_BY_AUTH = {
    "none": {},
    "user": {401: "Missing or invalid credentials"},
    "admin": {401: "Missing or invalid credentials", 403: "Not an administrator"},
}
# Errors an operation can return because of what it reads, whatever it is for.
BODY_ERRORS = {
    400: "The body is not a JSON object",
    413: "The body is too large",
    415: "The body is not application/json",
}
# A write runs a Firestore transaction: contention past its retries is a 503 with Retry-After.
WRITE_ERRORS = {503: "Busy: retry after Retry-After seconds"}
HEADER_ERRORS = {"Idempotency-Key": {409: "The Idempotency-Key was used with another body"}}
HEADER_DOCS = {
    "Idempotency-Key": "Repeat a request safely for 24 h: the same key and body return the "
    "first result; the same key with another body is a 409.",
    "Prefer": "`wait=N` (N ≤ 60): hold the answer until the generation ends or N seconds pass.",
}


def _model_refs(operations: list[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = []
    for operation in operations:
        if operation.body is not None:
            models.append((operation.body, "validation"))
        models += [(m, "serialization") for m in operation.responses.values() if m is not None]
    models.append((ErrorBody, "serialization"))
    unique = list(dict.fromkeys(models))
    refs, definitions = models_json_schema(
        unique, by_alias=True, ref_template="#/components/schemas/{model}"
    )
    return refs, definitions.get("$defs", {})


def _query_parameters(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    """One parameter per field; the enums they refer to join the shared schemas."""
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    schemas.update(schema.get("$defs", {}))
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": _not_null(prop)}
        for name, prop in schema.get("properties", {}).items()
    ]


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is a string or absent: `X | None = None` means "may be left out",
    so the null branch (which no query string can spell) and the null default go."""
    branches = prop.get("anyOf")
    if not branches or {"type": "null"} not in branches:
        return prop
    rest = [b for b in branches if b != {"type": "null"}]
    kept = {k: v for k, v in prop.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**kept, **rest[0]} if len(rest) == 1 else {**kept, "anyOf": rest}


def build_document(operations: list[Operation], version: str) -> dict[str, Any]:
    refs, schemas = _model_refs(operations)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {}
        for status, model in op.responses.items():
            response: dict[str, Any] = {"description": "OK" if status < 300 else "Error"}
            if model is None and status >= 400:
                model = ErrorBody  # every error has the one shape
            if model is not None:
                response["content"] = {
                    "application/json": {"schema": refs[(model, "serialization")]}
                }
            responses[str(status)] = response
        error_ref = refs[(ErrorBody, "serialization")]
        for status, text in {
            **ERRORS_BY_AUTH[op.auth],
            **(BODY_ERRORS if op.body is not None else {}),
            **{s: t for header in op.headers for s, t in HEADER_ERRORS.get(header, {}).items()},
            404: "Not found",
            422: "Invalid request",
            429: "Over a limit",
            **(WRITE_ERRORS if op.method != "GET" else {}),
        }.items():
            responses.setdefault(
                str(status),
                {"description": text, "content": {"application/json": {"schema": error_ref}}},
            )
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "maxLength": 128},
            }
            for name in op.path_parameters
        ]
        if op.query is not None:
            parameters += _query_parameters(op.query, schemas)
        parameters += [
            {
                "name": header,
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": HEADER_DOCS[header],
            }
            for header in op.headers
        ]
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": responses,
        }
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        entry["security"] = [] if op.auth == "none" else [{"bearer": []}]
        paths.setdefault(op.openapi_path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "imagegen",
            "version": version,
            "description": "Image generation with fal.ai FLUX models, stored in Cloud Storage. "
            'Every error is `{"error": {"code", "message", "details"}}`.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key, or a Firebase Auth ID token.",
                }
            },
        },
    }


@cache
def document() -> dict[str, Any]:
    from imagegen.api import operations

    return build_document(operations(), "1.0.0")
