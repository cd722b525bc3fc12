"""From a raw request body to a validated, normalised generation plan.

Pydantic checks shape and per-field bounds; the registry decides what each model takes.
Both kinds of failure become one `ValidationError` whose details name every bad field in
the API's own (camelCase) spelling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic.alias_generators import to_camel

from imagegen.errors import BadRequestError, ValidationError
from imagegen.models.requests import UNION_TAGS, CustomSize, GenerationRequest
from imagegen.registry import DEFAULT_MODEL, ModelSpec, get_model


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str
    type: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "type": self.type}


def _field_path(loc: tuple[int | str, ...], as_sent: bool = False) -> str:
    def name(part: int | str) -> str:
        # A field we do not know is named exactly as the client spelled it.
        return str(part) if as_sent or not isinstance(part, str) else to_camel(part)

    return ".".join(name(p) for p in loc if p not in UNION_TAGS) or "body"


def problems_from_pydantic(exc: pydantic.ValidationError) -> list[FieldProblem]:
    return [
        FieldProblem(
            _field_path(err["loc"], err["type"] == "extra_forbidden"), err["msg"], err["type"]
        )
        for err in exc.errors()
    ]


def raise_validation(problems: list[FieldProblem]) -> None:
    if problems:
        names = ", ".join(dict.fromkeys(p.field for p in problems))
        raise ValidationError(f"Invalid request: {names}", details=[p.as_dict() for p in problems])


@dataclass(frozen=True)
class ValidatedGeneration:
    request: GenerationRequest
    spec: ModelSpec
    width: int
    height: int
    # Exactly what the API recorded as the generation's parameters (defaults filled in).
    parameters: dict[str, Any]


def parse_generation_request(body: bytes) -> ValidatedGeneration:
    try:
        request = GenerationRequest.model_validate_json(body)
    except pydantic.ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise BadRequestError("Request body is not valid JSON", code="malformed_json") from None
        if any(err["type"] == "model_type" and not err["loc"] for err in exc.errors()):
            raise BadRequestError(
                "Request body must be a JSON object", code="malformed_json"
            ) from None
        # Report the model's own rules in the same answer, so one round trip names them all.
        raise_validation(problems_from_pydantic(exc) + _model_rule_problems_of_raw(body))
        raise  # unreachable: raise_validation raised
    return validate_for_model(request)


def _model_rule_problems_of_raw(body: bytes) -> list[FieldProblem]:
    raw = json.loads(body)

    def pick(snake: str) -> Any:
        return raw.get(snake, raw.get(to_camel(snake)))

    model = pick("model") or DEFAULT_MODEL
    spec = get_model(model) if isinstance(model, str) else None
    if spec is None:
        return []
    values = {
        name: value
        for name in ("steps", "guidance_scale")
        if isinstance(value := pick(name), int | float) and not isinstance(value, bool)
    }
    return _model_rule_problems(spec, values)


def _model_rule_problems(spec: ModelSpec, values: dict[str, float | None]) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    for name, value in values.items():
        if value is None:
            continue
        if not spec.accepts(name):
            problems.append(
                FieldProblem(
                    to_camel(name),
                    f"Model '{spec.id}' does not take {to_camel(name)}",
                    "unsupported_parameter",
                )
            )
            continue
        bounds = spec.steps if name == "steps" else spec.guidance_scale
        assert bounds is not None
        if not bounds.contains(value):
            problems.append(
                FieldProblem(
                    to_camel(name),
                    f"{to_camel(name)} must be between {bounds.min:g} and {bounds.max:g} "
                    f"for model '{spec.id}'",
                    "out_of_range",
                )
            )
    return problems


def validate_for_model(request: GenerationRequest) -> ValidatedGeneration:
    spec = get_model(request.model)
    if spec is None:
        raise_validation(
            [FieldProblem("model", f"Unknown model '{request.model}'", "unknown_model")]
        )
        raise AssertionError("unreachable")
    raise_validation(
        _model_rule_problems(
            spec, {"steps": request.steps, "guidance_scale": request.guidance_scale}
        )
    )

    width, height = request.dimensions()
    parameters: dict[str, Any] = {
        "image_size": (
            request.image_size.model_dump()
            if isinstance(request.image_size, CustomSize)
            else request.image_size
        ),
        "num_images": request.num_images,
        "output_format": request.output_format,
        "enable_safety_checker": request.enable_safety_checker,
        "seed": None if request.seed is None else str(request.seed),
    }
    if spec.steps is not None:
        parameters["steps"] = (
            request.steps if request.steps is not None else int(spec.steps.default)
        )
    if spec.guidance_scale is not None:
        parameters["guidance_scale"] = (
            request.guidance_scale
            if request.guidance_scale is not None
            else spec.guidance_scale.default
        )
    return ValidatedGeneration(request, spec, width, height, parameters)
