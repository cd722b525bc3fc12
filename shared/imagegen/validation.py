"""From a raw request body to a validated, normalised generation plan.

Pydantic checks shape and per-field bounds; the registry decides what each model takes.
Both kinds of failure become one `ValidationError` whose details name every bad field in
the API's own (camelCase) spelling, so a client fixes everything in one round trip. A
parameter the chosen model does not take is refused, never silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pydantic
from pydantic.alias_generators import to_camel

from imagegen.bodies import FieldProblem, load_body, problems_from_pydantic, raise_validation
from imagegen.models.requests import UNION_TAGS, CustomSize, GenerationRequest, LoraChoice
from imagegen.registry import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MODEL,
    Kind,
    ModelSpec,
    SizeMode,
    get_model,
)
from imagegen.settings import get_settings
from imagegen.sizes import preset_size, size_for_aspect_ratio

# Request fields that only some models take, checked against the registry.
MODEL_PARAMETERS = (
    "steps",
    "guidance_scale",
    "negative_prompt",
    "safety_tolerance",
    "enable_safety_checker",
    "loras",
    "image_url",
    "sampler",
)


@dataclass(frozen=True)
class ValidatedGeneration:
    request: GenerationRequest
    spec: ModelSpec
    # None where the model picks the size itself (image-to-image without an aspect ratio).
    width: int | None
    height: int | None
    # Exactly what the API records as the generation's parameters (defaults filled in).
    parameters: dict[str, Any]
    loras: tuple[LoraChoice, ...]

    @property
    def megapixels_per_image(self) -> float:
        if self.width is None or self.height is None:
            return 1.0
        return self.width * self.height / 1_000_000


def parse_generation_request(body: bytes) -> ValidatedGeneration:
    return validate_generation(load_body(body), body)


def validate_generation(raw: dict[str, Any], body: bytes | None = None) -> ValidatedGeneration:
    """`raw` is the decoded body; `body` its bytes when at hand (JSON-mode strictness needs
    JSON, so an item of a batch is re-encoded)."""
    try:
        request = GenerationRequest.model_validate_json(
            body if body is not None else json.dumps(raw)
        )
    except pydantic.ValidationError as exc:
        # Report the model's own rules in the same answer, so one round trip names them all.
        shape = problems_from_pydantic(exc, union_tags=UNION_TAGS)
        raise_validation(shape + _model_rule_problems_of_raw(raw, shape))
        raise  # unreachable: raise_validation raised
    return validate_for_model(request)


ALIASES = {"cfg_scale": "guidance_scale", "lora_id": "loras"}


def _model_rule_problems_of_raw(
    raw: dict[str, Any], already: list[FieldProblem]
) -> list[FieldProblem]:
    """Model-rule checks on a body that failed shape validation, so one answer names every
    problem; a field pydantic already reported is not judged again."""
    reported = {p.field.split(".")[0] for p in already}
    model = raw.get("model", DEFAULT_MODEL)
    spec = get_model(model) if isinstance(model, str) else None
    if spec is None:
        return []
    problems: list[FieldProblem] = []
    present: set[str] = set()
    for sent, value in raw.items():
        snake = sent if sent in MODEL_PARAMETERS or sent in ALIASES else _snake(sent)
        name = ALIASES.get(snake, snake)
        if name not in MODEL_PARAMETERS or value is None:
            continue
        present.add(name)
        if to_camel(snake) in reported:
            continue
        parameter = spec.parameter(name)
        if parameter is None or _numeric_of_kind(value, parameter.kind):
            problems += _parameter_problems(spec, name, value, to_camel(snake))
    for parameter in spec.parameters:
        if parameter.required and parameter.name not in present:
            api_name = to_camel(parameter.name)
            if api_name not in reported:
                problems.append(
                    FieldProblem(api_name, f"Model '{spec.id}' needs {api_name}", "missing")
                )
    return problems


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _numeric_of_kind(value: Any, kind: Kind) -> bool:
    if isinstance(value, bool):
        return False
    if kind is Kind.INTEGER:
        return isinstance(value, int)
    return kind is Kind.NUMBER and isinstance(value, int | float)


def _in_range(value: float, minimum: float | None, maximum: float | None) -> bool:
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


def _parameter_problems(
    spec: ModelSpec, name: str, value: Any, api_name: str | None = None
) -> list[FieldProblem]:
    """`api_name` is the spelling the client used (cfgScale for guidance_scale, ...)."""
    api_name = api_name or to_camel(name)
    parameter = spec.parameter(name)
    if parameter is None:
        return [
            FieldProblem(
                api_name, f"Model '{spec.id}' does not take {api_name}", "unsupported_parameter"
            )
        ]
    if parameter.kind in (Kind.INTEGER, Kind.NUMBER) and not _in_range(
        value, parameter.minimum, parameter.maximum
    ):
        return [
            FieldProblem(
                api_name,
                f"{api_name} must be between {parameter.minimum:g} and {parameter.maximum:g} "
                f"for model '{spec.id}'",
                "out_of_range",
            )
        ]
    if parameter.kind is Kind.LORAS and not isinstance(value, list):
        return []  # its shape is pydantic's to report
    if parameter.kind is Kind.LORAS:
        return [
            FieldProblem(
                f"loras.{i}.scale",
                f"scale must be between {parameter.minimum:g} and {parameter.maximum:g}",
                "out_of_range",
            )
            for i, lora in enumerate(value)
            if lora.scale is not None
            and not _in_range(lora.scale, parameter.minimum, parameter.maximum)
        ]
    if parameter.kind is Kind.URL:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return [FieldProblem(api_name, f"{api_name} must be an http(s) URL", "invalid_url")]
    return []


def _normalise_aliases(
    request: GenerationRequest,
) -> tuple[dict[str, Any], dict[str, str], list[FieldProblem]]:
    """Seed 000/001 spellings mapped onto one vocabulary, with the name each value was sent
    under (errors name what the client sent); both spellings at once is an error."""
    problems: list[FieldProblem] = []
    values: dict[str, Any] = {name: getattr(request, name) for name in MODEL_PARAMETERS}
    sent_as: dict[str, str] = {}

    if request.cfg_scale is not None:
        if request.guidance_scale is not None:
            problems.append(
                FieldProblem("cfgScale", "Give guidanceScale or cfgScale, not both", "conflict")
            )
        else:
            values["guidance_scale"] = request.cfg_scale
            sent_as["guidance_scale"] = "cfgScale"
    if request.lora_id is not None:
        if request.loras is not None:
            problems.append(FieldProblem("loraId", "Give loras or loraId, not both", "conflict"))
        else:
            values["loras"] = [LoraChoice(id=request.lora_id)]
            sent_as["loras"] = "loraId"
    return values, sent_as, problems


def _resolve_size(
    request: GenerationRequest, spec: ModelSpec, max_megapixels: float
) -> tuple[dict[str, Any], int | None, int | None, list[FieldProblem]]:
    """(fal size arguments, width, height, problems)."""
    given = [
        name
        for name, value in (
            ("imageSize", request.image_size),
            ("aspectRatio", request.aspect_ratio),
            ("width", request.width),
            ("height", request.height),
        )
        if value is not None
    ]
    if (request.width is None) != (request.height is None):
        missing = "height" if request.height is None else "width"
        return {}, None, None, [FieldProblem(missing, "width and height go together", "missing")]
    forms = {"width" if g == "height" else g for g in given}
    if len(forms) > 1:
        return (
            {},
            None,
            None,
            [
                FieldProblem(name, "Give one of imageSize, aspectRatio or width/height", "conflict")
                for name in sorted(forms)[1:]
            ],
        )

    if spec.size_mode is SizeMode.ASPECT_RATIO:
        if forms - {"aspectRatio"}:
            name = next(iter(forms))
            return (
                {},
                None,
                None,
                [
                    FieldProblem(
                        name,
                        f"Model '{spec.id}' takes aspectRatio, not {name}",
                        "unsupported_parameter",
                    )
                ],
            )
        if request.aspect_ratio is None:
            return {}, None, None, []  # fal keeps the input image's aspect ratio
        width, height = size_for_aspect_ratio(request.aspect_ratio)
        return {"aspect_ratio": request.aspect_ratio}, width, height, []

    if request.aspect_ratio is not None:
        width, height = size_for_aspect_ratio(request.aspect_ratio)
    elif request.width is not None and request.height is not None:
        width, height = request.width, request.height
    elif isinstance(request.image_size, CustomSize):
        width, height = request.image_size.width, request.image_size.height
    else:
        preset = request.image_size or DEFAULT_IMAGE_SIZE
        return {"image_size": preset}, *preset_size(preset), []
    if width * height > max_megapixels * 1_000_000:
        field = next(iter(forms)) if forms else "imageSize"
        return (
            {},
            None,
            None,
            [
                FieldProblem(
                    field,
                    f"{width}x{height} is more than {max_megapixels:g} megapixels",
                    "too_large",
                )
            ],
        )
    return {"image_size": {"width": width, "height": height}}, width, height, []


def validate_for_model(request: GenerationRequest) -> ValidatedGeneration:
    spec = get_model(request.model)
    if spec is None:
        raise_validation(
            [FieldProblem("model", f"Unknown model '{request.model}'", "unknown_model")]
        )
        raise AssertionError("unreachable")

    values, sent_as, problems = _normalise_aliases(request)
    for name, value in values.items():
        if value is not None:
            problems += _parameter_problems(spec, name, value, sent_as.get(name))
    for parameter in spec.parameters:
        if parameter.required and values.get(parameter.name) is None:
            api_name = to_camel(parameter.name)
            problems.append(
                FieldProblem(api_name, f"Model '{spec.id}' needs {api_name}", "missing")
            )
    size_arguments, width, height, size_problems = _resolve_size(
        request, spec, get_settings().max_megapixels
    )
    raise_validation(problems + size_problems)

    parameters: dict[str, Any] = {
        **size_arguments,
        "num_images": request.num_images,
        "output_format": request.output_format,
        "seed": None if request.seed is None else str(request.seed),
    }
    for parameter in spec.parameters:
        if parameter.kind is Kind.LORAS:
            continue  # resolved against the LoRA collection when the generation is accepted
        value = values.get(parameter.name)
        parameters[parameter.name] = parameter.default if value is None else value
    loras = tuple(values["loras"] or ())
    return ValidatedGeneration(request, spec, width, height, parameters, loras)
