"""A JSON request body: an object, validated by a model, every problem named in the API's
own (camelCase) spelling so that a client fixes everything in one round trip.

Every function that reads a JSON body uses these; the generation request's own rules are in
`imagegen.validation`, which only the api loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
from pydantic.alias_generators import to_camel

from imagegen.errors import BadRequestError, ValidationError

M = TypeVar("M", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str
    type: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "type": self.type}


def _field_path(loc: tuple[int | str, ...], as_sent: bool, union_tags: frozenset[str]) -> str:
    def name(part: int | str) -> str:
        # A field we do not know is named exactly as the client spelled it.
        return str(part) if as_sent or not isinstance(part, str) else to_camel(part)

    return ".".join(name(p) for p in loc if p not in union_tags) or "body"


def problems_from_pydantic(
    exc: pydantic.ValidationError, *, union_tags: frozenset[str] = frozenset()
) -> list[FieldProblem]:
    """Every problem, its field in the API's camelCase. `union_tags`: the tags of the
    model's tagged unions, which pydantic puts in an error's location and a client never
    wrote."""
    return [
        FieldProblem(
            _field_path(err["loc"], err["type"] == "extra_forbidden", union_tags),
            err["msg"],
            err["type"],
        )
        for err in exc.errors()
    ]


def raise_validation(problems: list[FieldProblem]) -> None:
    if problems:
        names = ", ".join(dict.fromkeys(p.field for p in problems))
        raise ValidationError(f"Invalid request: {names}", details=[p.as_dict() for p in problems])


def parse_body(model: type[M], body: bytes) -> M:
    """A JSON object body validated by `model` (JSON-mode strictness): 400 if it is not a
    JSON object, 422 naming every bad field otherwise."""
    load_body(body)
    try:
        return model.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise_validation(problems_from_pydantic(exc))
        raise  # unreachable: raise_validation raised


def load_body(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the 400 that says why it is not one."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequestError("Request body is not valid JSON", code="malformed_json") from None
    except RecursionError:  # `[[[[…]]]]` thousands deep fits in any size limit
        raise BadRequestError("Request body is nested too deeply", code="malformed_json") from None
    if not isinstance(raw, dict):
        raise BadRequestError("Request body must be a JSON object", code="malformed_json")
    return raw
