"""The simulated fal apps and their input validation, as data.

Each app is a list of field rules; validation mirrors fal's FastAPI/pydantic apps closely
enough that a client sees the same 422 shape: ``{"detail": [{"loc": ["body", field],
"msg", "type", "input", "ctx"?}]}``, one entry per bad field, unknown keys ignored.
Adding an app (flux-lora, flux-pro, fast-sdxl, ...) is adding an ``AppSpec`` to ``APPS``.

Types are checked like pydantic's lax JSON mode, minus string-to-number coercion: an
integer field takes ``3`` or ``3.0`` but not ``"3"`` or ``true``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

ErrorDetail = dict[str, Any]
Loc = tuple[str | int, ...]

# https://fal.ai/models/fal-ai/flux/dev/api
IMAGE_SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
MAX_IMAGE_SIDE = 14142
# fal's ImageSize model defaults a side that is left out of the object.
DEFAULT_IMAGE_SIDE = 512


class Kind(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    IMAGE_SIZE = "image_size"


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    required: bool = False
    default: Any = None
    nullable: bool = False
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class AppSpec:
    app_id: str
    fields: tuple[Field, ...]

    @property
    def route_prefix(self) -> str:
        """``owner/alias``: fal's status/result/cancel URLs leave out the endpoint sub-path."""
        return "/".join(self.app_id.split("/")[:2])

    def validate(self, body: Any) -> tuple[dict[str, Any], list[ErrorDetail]]:
        """Return the input with defaults filled in, and the validation errors."""
        if not isinstance(body, dict):
            msg = "Input should be a valid dictionary or object to extract fields from"
            return {}, [_error(("body",), "model_attributes_type", msg, body)]
        values: dict[str, Any] = {}
        errors: list[ErrorDetail] = []
        for spec in self.fields:
            loc: Loc = ("body", spec.name)
            if spec.name not in body:
                if spec.required:
                    errors.append(_error(loc, "missing", "Field required", body))
                else:
                    values[spec.name] = spec.default
                continue
            raw = body[spec.name]
            if raw is None and spec.nullable:
                values[spec.name] = None
                continue
            value, field_errors = _CHECKS[spec.kind](spec, raw, loc)
            errors.extend(field_errors)
            values[spec.name] = value
        return values, errors


def image_dimensions(image_size: str | dict[str, int]) -> tuple[int, int]:
    """(width, height) of an ``image_size`` value that passed validation."""
    if isinstance(image_size, str):
        return IMAGE_SIZE_PRESETS[image_size]
    return image_size["width"], image_size["height"]


def get_app(app_id: str) -> AppSpec | None:
    return APPS.get(app_id)


def _error(loc: Loc, type_: str, msg: str, value: Any, **ctx: Any) -> ErrorDetail:
    detail: ErrorDetail = {"loc": list(loc), "msg": msg, "type": type_, "input": value}
    if ctx:
        detail["ctx"] = ctx
    return detail


def _bounds(spec: Field, value: float, loc: Loc) -> list[ErrorDetail]:
    if spec.ge is not None and value < spec.ge:
        msg = f"Input should be greater than or equal to {spec.ge}"
        return [_error(loc, "greater_than_equal", msg, value, ge=spec.ge)]
    if spec.le is not None and value > spec.le:
        msg = f"Input should be less than or equal to {spec.le}"
        return [_error(loc, "less_than_equal", msg, value, le=spec.le)]
    return []


def _check_string(spec: Field, value: Any, loc: Loc) -> tuple[Any, list[ErrorDetail]]:
    if not isinstance(value, str):
        return value, [_error(loc, "string_type", "Input should be a valid string", value)]
    if spec.min_length is not None and len(value) < spec.min_length:
        plural = "" if spec.min_length == 1 else "s"
        msg = f"String should have at least {spec.min_length} character{plural}"
        return value, [_error(loc, "string_too_short", msg, value, min_length=spec.min_length)]
    return value, []


def _check_integer(spec: Field, value: Any, loc: Loc) -> tuple[Any, list[ErrorDetail]]:
    # bool is an int subclass in Python but never a valid integer input here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value, [_error(loc, "int_type", "Input should be a valid integer", value)]
    if isinstance(value, float):
        if not value.is_integer():
            msg = "Input should be a valid integer, got a number with a fractional part"
            return value, [_error(loc, "int_from_float", msg, value)]
        value = int(value)
    return value, _bounds(spec, value, loc)


def _check_number(spec: Field, value: Any, loc: Loc) -> tuple[Any, list[ErrorDetail]]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value, [_error(loc, "float_type", "Input should be a valid number", value)]
    return float(value), _bounds(spec, value, loc)


def _check_boolean(spec: Field, value: Any, loc: Loc) -> tuple[Any, list[ErrorDetail]]:
    if not isinstance(value, bool):
        return value, [_error(loc, "bool_type", "Input should be a valid boolean", value)]
    return value, []


def _check_choice(spec: Field, value: Any, loc: Loc) -> tuple[Any, list[ErrorDetail]]:
    if value in spec.choices:
        return value, []
    expected = _expected(spec.choices)
    return value, [
        _error(loc, "literal_error", f"Input should be {expected}", value, expected=expected)
    ]


def _check_image_size(spec: Field, value: Any, loc: Loc) -> tuple[Any, list[ErrorDetail]]:
    if isinstance(value, str):
        return _check_choice(
            Field(spec.name, Kind.CHOICE, choices=tuple(IMAGE_SIZE_PRESETS)), value, loc
        )
    if not isinstance(value, dict):
        msg = "Input should be an image size preset name or an object with width and height"
        return value, [_error(loc, "union_type", msg, value)]
    size: dict[str, int] = {}
    errors: list[ErrorDetail] = []
    for side in ("width", "height"):
        side_spec = Field(side, Kind.INTEGER, ge=1, le=MAX_IMAGE_SIDE)
        side_value, side_errors = _check_integer(
            side_spec, value.get(side, DEFAULT_IMAGE_SIDE), (*loc, side)
        )
        size[side] = side_value
        errors.extend(side_errors)
    return size, errors


def _expected(choices: tuple[str, ...]) -> str:
    quoted = [repr(choice) for choice in choices]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


_CHECKS: dict[Kind, Callable[[Field, Any, Loc], tuple[Any, list[ErrorDetail]]]] = {
    Kind.STRING: _check_string,
    Kind.INTEGER: _check_integer,
    Kind.NUMBER: _check_number,
    Kind.BOOLEAN: _check_boolean,
    Kind.CHOICE: _check_choice,
    Kind.IMAGE_SIZE: _check_image_size,
}

_FLUX_COMMON = (
    Field("prompt", Kind.STRING, required=True, min_length=1),
    Field("image_size", Kind.IMAGE_SIZE, default="landscape_4_3"),
    Field("num_images", Kind.INTEGER, default=1, ge=1, le=4),
    Field("seed", Kind.INTEGER, nullable=True),
    Field("output_format", Kind.CHOICE, default="jpeg", choices=("jpeg", "png")),
    Field("enable_safety_checker", Kind.BOOLEAN, default=True),
    Field("sync_mode", Kind.BOOLEAN, default=False),
)

APPS: dict[str, AppSpec] = {
    app.app_id: app
    for app in (
        AppSpec(
            "fal-ai/flux/dev",
            (
                *_FLUX_COMMON,
                Field("num_inference_steps", Kind.INTEGER, default=28, ge=1, le=50),
                Field("guidance_scale", Kind.NUMBER, default=3.5, ge=1, le=20),
            ),
        ),
        AppSpec(
            "fal-ai/flux/schnell",
            (
                *_FLUX_COMMON,
                Field("num_inference_steps", Kind.INTEGER, default=4, ge=1, le=12),
            ),
        ),
    )
}
