"""The simulated fal apps and their input validation, as data.

Each app is a list of field rules; validation mirrors fal's FastAPI/pydantic apps closely
enough that a client sees the same 422 shape: ``{"detail": [{"loc": ["body", field],
"msg", "type", "input", "ctx"?}]}``, one entry per bad field, unknown keys ignored.
Adding an app is adding an ``AppSpec`` to ``APPS``: besides its fields, an entry says how
the output size is chosen (``Sizing``) and which field names the image format; a field
marked ``fetch`` holds a URL the app downloads when the request starts running.

Types are checked like pydantic's lax JSON mode, minus string-to-number coercion: an
integer field takes ``3`` or ``3.0`` but not ``"3"`` or ``true``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
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
    # A list of objects, each checked against ``Field.items`` (fal's ``list[LoraWeight]``).
    OBJECT_LIST = "object_list"


class FetchKind(StrEnum):
    """What the app downloads from a URL field when the request starts running."""

    LORA = "lora"  # weights: only downloaded and counted
    IMAGE = "image"  # an input image: must also decode


class Sizing(StrEnum):
    """How an app picks its output size."""

    # The ``image_size`` field: a preset name or {width, height}.
    IMAGE_SIZE = "image_size"
    # FLUX Kontext: the ``aspect_ratio`` field if given, else the input image's ratio,
    # at about one megapixel (see ``size_near_megapixel``).
    ASPECT_RATIO = "aspect_ratio"


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
    # OBJECT_LIST: at most this many entries, each with these fields; the pydantic class
    # name only appears in the error for an entry that is not an object.
    max_length: int | None = None
    items: tuple[Field, ...] = ()
    item_model: str = ""
    # STRING: a URL the app downloads, and as what.
    fetch: FetchKind | None = None


@dataclass(frozen=True)
class InputUrl:
    """A URL from the validated input that the app downloads before generating."""

    kind: FetchKind
    url: str
    loc: Loc  # where it sits in the body, for the error if the download fails


@dataclass(frozen=True)
class AppSpec:
    app_id: str
    fields: tuple[Field, ...]
    sizing: Sizing = Sizing.IMAGE_SIZE
    # fast-sdxl calls it "format"; the FLUX apps "output_format".
    format_field: str = "output_format"

    @property
    def route_prefix(self) -> str:
        """``owner/alias``: fal's status/result/cancel URLs leave out the endpoint sub-path."""
        return "/".join(self.app_id.split("/")[:2])

    @property
    def fetch_kinds(self) -> frozenset[FetchKind]:
        """Every kind of input this app downloads, whether or not a request has any."""
        return frozenset(spec.fetch for spec in _walk(self.fields) if spec.fetch is not None)

    def validate(self, body: Any) -> tuple[dict[str, Any], list[ErrorDetail]]:
        """Return the input with defaults filled in, and the validation errors."""
        if not isinstance(body, dict):
            msg = "Input should be a valid dictionary or object to extract fields from"
            return {}, [_error(("body",), "model_attributes_type", msg, body)]
        return _validate_fields(self.fields, body, ("body",))

    def input_urls(self, values: dict[str, Any]) -> list[InputUrl]:
        """The URLs a validated input makes the app download, in field order."""
        return list(_input_urls(self.fields, values, ("body",)))

    def output_size(
        self, values: dict[str, Any], input_image: tuple[int, int] | None
    ) -> tuple[int, int]:
        """(width, height) of every output image, given the decoded input image's size."""
        if self.sizing is Sizing.IMAGE_SIZE:
            return image_dimensions(values["image_size"])
        ratio = values.get("aspect_ratio")
        if ratio is not None:
            width, _, height = ratio.partition(":")
            return size_near_megapixel(int(width), int(height))
        if input_image is not None:
            return size_near_megapixel(*input_image)
        return size_near_megapixel(1, 1)


def image_dimensions(image_size: str | dict[str, int]) -> tuple[int, int]:
    """(width, height) of an ``image_size`` value that passed validation."""
    if isinstance(image_size, str):
        return IMAGE_SIZE_PRESETS[image_size]
    return image_size["width"], image_size["height"]


# FLUX works at about 1024x1024 on a 16-pixel grid; Kontext keeps ratios within 21:9..9:21.
MEGAPIXEL_TARGET = 1024 * 1024
SIZE_STEP = 16
_MIN_RATIO, _MAX_RATIO = Fraction(9, 21), Fraction(21, 9)


def size_near_megapixel(width: int, height: int) -> tuple[int, int]:
    """The output size for a ``width:height`` ratio (an ``aspect_ratio`` or an input image).

    With P = 1024*1024 and r = width/height clamped to [9/21, 21/9]::

        out_width  = 16 * round_half_up(sqrt(P * r) / 16)
        out_height = 16 * round_half_up(sqrt(P / r) / 16)

    each at least 16, so width*height is about P and the ratio is kept to within one
    16-pixel step per side (1:1 -> 1024x1024, 16:9 -> 1360x768, 3:2 -> 1248x832,
    21:9 -> 1568x672). Computed in integers, so it is exact for any ratio: with
    q = sqrt(P*r)/16, round_half_up(q) = (floor(2q) + 1) // 2, and
    floor(2q) = isqrt(floor(4 * P/256 * r)) because floor(sqrt(y)) = isqrt(floor(y)).
    """
    ratio = min(max(Fraction(width, height), _MIN_RATIO), _MAX_RATIO)
    return (
        _side(ratio.numerator, ratio.denominator),
        _side(ratio.denominator, ratio.numerator),
    )


def _side(numerator: int, denominator: int) -> int:
    """16 * round_half_up(sqrt(P * numerator / denominator) / 16), exactly."""
    four_q_squared = 4 * MEGAPIXEL_TARGET * numerator // (SIZE_STEP * SIZE_STEP * denominator)
    rounded = (math.isqrt(four_q_squared) + 1) // 2
    return max(1, rounded) * SIZE_STEP


def get_app(app_id: str) -> AppSpec | None:
    return APPS.get(app_id)


def _validate_fields(
    fields: tuple[Field, ...], body: dict[str, Any], at: Loc
) -> tuple[dict[str, Any], list[ErrorDetail]]:
    values: dict[str, Any] = {}
    errors: list[ErrorDetail] = []
    for spec in fields:
        loc: Loc = (*at, spec.name)
        if spec.name not in body:
            if spec.required:
                errors.append(_error(loc, "missing", "Field required", body))
            else:
                # Copied: a list default must not be shared between requests.
                values[spec.name] = copy.deepcopy(spec.default)
            continue
        raw = body[spec.name]
        if raw is None and spec.nullable:
            values[spec.name] = None
            continue
        value, field_errors = _CHECKS[spec.kind](spec, raw, loc)
        errors.extend(field_errors)
        values[spec.name] = value
    return values, errors


def _walk(fields: tuple[Field, ...]) -> Iterator[Field]:
    for spec in fields:
        yield spec
        yield from _walk(spec.items)


def _input_urls(fields: tuple[Field, ...], values: dict[str, Any], at: Loc) -> Iterator[InputUrl]:
    for spec in fields:
        value = values.get(spec.name)
        loc: Loc = (*at, spec.name)
        if spec.fetch is not None and isinstance(value, str):
            yield InputUrl(spec.fetch, value, loc)
        elif spec.kind is Kind.OBJECT_LIST and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield from _input_urls(spec.items, item, (*loc, index))


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


def _check_object_list(spec: Field, value: Any, loc: Loc) -> tuple[Any, list[ErrorDetail]]:
    if not isinstance(value, list):
        return value, [_error(loc, "list_type", "Input should be a valid list", value)]
    if spec.max_length is not None and len(value) > spec.max_length:
        msg = (
            f"List should have at most {spec.max_length} item"
            f"{'' if spec.max_length == 1 else 's'} after validation, not {len(value)}"
        )
        ctx = {"field_type": "List", "max_length": spec.max_length, "actual_length": len(value)}
        return value, [_error(loc, "too_long", msg, value, **ctx)]
    items: list[Any] = []
    errors: list[ErrorDetail] = []
    for index, item in enumerate(value):
        item_loc: Loc = (*loc, index)
        if not isinstance(item, dict):
            msg = f"Input should be a valid dictionary or instance of {spec.item_model}"
            errors.append(_error(item_loc, "model_type", msg, item, class_name=spec.item_model))
            items.append(item)
            continue
        item_values, item_errors = _validate_fields(spec.items, item, item_loc)
        items.append(item_values)
        errors.extend(item_errors)
    return items, errors


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
    Kind.OBJECT_LIST: _check_object_list,
}

# Building blocks, named after fal's field names; bounds differ per app and sit below.
_PROMPT = Field("prompt", Kind.STRING, required=True, min_length=1)
_SEED = Field("seed", Kind.INTEGER, nullable=True)
_SAFETY_CHECKER = Field("enable_safety_checker", Kind.BOOLEAN, default=True)
_SYNC_MODE = Field("sync_mode", Kind.BOOLEAN, default=False)
_IMAGE_FORMATS = ("jpeg", "png")
_OUTPUT_FORMAT = Field("output_format", Kind.CHOICE, default="jpeg", choices=_IMAGE_FORMATS)
_SAFETY_TOLERANCE = Field(
    "safety_tolerance", Kind.CHOICE, default="2", choices=("1", "2", "3", "4", "5", "6")
)
_KONTEXT_ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
MAX_LORAS = 5
_LORAS = Field(
    "loras",
    Kind.OBJECT_LIST,
    default=[],
    max_length=MAX_LORAS,
    item_model="LoraWeight",
    items=(
        Field("path", Kind.STRING, required=True, fetch=FetchKind.LORA),
        Field("scale", Kind.NUMBER, default=1.0, ge=0, le=4),
    ),
)


def _image_size(default: str) -> Field:
    return Field("image_size", Kind.IMAGE_SIZE, default=default)


def _num_images(maximum: int) -> Field:
    return Field("num_images", Kind.INTEGER, default=1, ge=1, le=maximum)


def _steps(maximum: int, default: int) -> Field:
    return Field("num_inference_steps", Kind.INTEGER, default=default, ge=1, le=maximum)


def _guidance(minimum: float, maximum: float, default: float) -> Field:
    return Field("guidance_scale", Kind.NUMBER, default=default, ge=minimum, le=maximum)


# The text-to-image FLUX apps share these; steps and guidance differ per app.
_FLUX_COMMON = (
    _PROMPT,
    _image_size("landscape_4_3"),
    _num_images(4),
    _SEED,
    _OUTPUT_FORMAT,
    _SAFETY_CHECKER,
    _SYNC_MODE,
)

# Field lists follow each app's schema at https://fal.ai/models/<app id>/api.
APPS: dict[str, AppSpec] = {
    app.app_id: app
    for app in (
        AppSpec("fal-ai/flux/dev", (*_FLUX_COMMON, _steps(50, 28), _guidance(1, 20, 3.5))),
        AppSpec("fal-ai/flux/schnell", (*_FLUX_COMMON, _steps(12, 4))),
        AppSpec(
            "fal-ai/flux-lora",
            (*_FLUX_COMMON, _steps(50, 28), _guidance(0, 35, 3.5), _LORAS),
        ),
        # No steps or guidance: like any unknown key they are ignored if sent.
        AppSpec("fal-ai/flux-pro/v1.1", (*_FLUX_COMMON, _SAFETY_TOLERANCE)),
        AppSpec(
            "fal-ai/flux-pro/kontext",
            (
                _PROMPT,
                Field("image_url", Kind.STRING, required=True, fetch=FetchKind.IMAGE),
                _SEED,
                _guidance(1, 20, 3.5),
                _num_images(4),
                _SAFETY_TOLERANCE,
                _OUTPUT_FORMAT,
                Field("aspect_ratio", Kind.CHOICE, nullable=True, choices=_KONTEXT_ASPECT_RATIOS),
                _SYNC_MODE,
            ),
            sizing=Sizing.ASPECT_RATIO,
        ),
        AppSpec(
            "fal-ai/fast-sdxl",
            (
                _PROMPT,
                Field("negative_prompt", Kind.STRING, default=""),
                _image_size("square_hd"),
                _steps(65, 25),
                _SEED,
                _guidance(0, 20, 7.5),
                _num_images(8),
                _SAFETY_CHECKER,
                Field("format", Kind.CHOICE, default="jpeg", choices=_IMAGE_FORMATS),
                _LORAS,
                _SYNC_MODE,
            ),
            format_field="format",
        ),
    )
}
