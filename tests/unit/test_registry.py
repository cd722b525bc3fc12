"""Unit tests for the model registry: fal apps, parameters, prices and `describe()`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic.alias_generators import to_camel

from imagegen.registry import (
    DEFAULT_MODEL,
    MAX_LORAS,
    MODELS,
    SAFETY_TOLERANCES,
    Kind,
    ModelSpec,
    Parameter,
    SizeMode,
    get_model,
)

# model id -> (fal app, price per MP, price per image), from the issue.
ISSUE_MODELS: dict[str, tuple[str, float | None, float | None]] = {
    "flux-dev": ("fal-ai/flux/dev", 0.025, None),
    "flux-schnell": ("fal-ai/flux/schnell", 0.003, None),
    "flux-lora": ("fal-ai/flux-lora", 0.035, None),
    "flux-pro": ("fal-ai/flux-pro/v1.1", 0.04, None),
    "flux-kontext": ("fal-ai/flux-pro/kontext", None, 0.04),
    "sdxl": ("fal-ai/fast-sdxl", None, None),  # the issue gives no sdxl price
}

# model id -> {parameter: (fal name, minimum, maximum, default)}; choices are checked apart.
ISSUE_PARAMETERS: dict[str, dict[str, tuple[str, Any, Any, Any]]] = {
    "flux-dev": {
        "steps": ("num_inference_steps", 1, 50, 28),
        "guidance_scale": ("guidance_scale", 1, 20, 3.5),
        "enable_safety_checker": ("enable_safety_checker", None, None, True),
    },
    "flux-schnell": {
        "steps": ("num_inference_steps", 1, 12, 4),
        "enable_safety_checker": ("enable_safety_checker", None, None, True),
    },
    "flux-lora": {
        "steps": ("num_inference_steps", 1, 50, 28),
        "guidance_scale": ("guidance_scale", 0, 35, 3.5),
        "loras": ("loras", 0, 4, 1.0),
        "enable_safety_checker": ("enable_safety_checker", None, None, True),
    },
    "flux-pro": {
        "safety_tolerance": ("safety_tolerance", None, None, "2"),
        "enable_safety_checker": ("enable_safety_checker", None, None, True),
    },
    "flux-kontext": {
        "image_url": ("image_url", None, None, None),
        "guidance_scale": ("guidance_scale", 1, 20, 3.5),
        "safety_tolerance": ("safety_tolerance", None, None, "2"),
    },
    "sdxl": {
        "steps": ("num_inference_steps", 1, 65, 25),
        "guidance_scale": ("guidance_scale", 0, 20, 7.5),
        "negative_prompt": ("negative_prompt", None, None, ""),
        "loras": ("loras", 0, 4, 1.0),
        "enable_safety_checker": ("enable_safety_checker", None, None, True),
    },
}


def test_the_six_models_exist() -> None:
    assert set(MODELS) == set(ISSUE_MODELS)
    assert all(MODELS[model_id].id == model_id for model_id in MODELS)


@pytest.mark.parametrize("model_id", sorted(ISSUE_MODELS))
def test_fal_app_and_prices(model_id: str) -> None:
    fal_app, per_mp, per_image = ISSUE_MODELS[model_id]
    spec = MODELS[model_id]
    assert spec.fal_app == fal_app
    if per_mp is not None:
        assert spec.price_per_megapixel_usd == per_mp
    if per_image is not None:
        assert spec.price_per_image_usd == per_image
    # Exactly one way to price each model.
    assert (spec.price_per_megapixel_usd is None) != (spec.price_per_image_usd is None)
    assert spec.title


def test_get_model() -> None:
    assert get_model("flux-dev") is MODELS["flux-dev"]
    assert get_model("flux-ultra") is None
    assert get_model("FLUX-DEV") is None
    assert DEFAULT_MODEL == "flux-dev"


@pytest.mark.parametrize("model_id", sorted(ISSUE_PARAMETERS))
def test_parameters(model_id: str) -> None:
    spec = MODELS[model_id]
    expected = ISSUE_PARAMETERS[model_id]
    assert [p.name for p in spec.parameters] == list(expected)
    for name, (fal_name, minimum, maximum, default) in expected.items():
        parameter = spec.parameter(name)
        assert parameter is not None
        assert (parameter.fal_name, parameter.minimum, parameter.maximum, parameter.default) == (
            fal_name,
            minimum,
            maximum,
            default,
        ), name


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_no_model_takes_a_sampler(model_id: str) -> None:
    assert MODELS[model_id].parameter("sampler") is None


@pytest.mark.parametrize("model_id", ["flux-schnell", "flux-pro"])
def test_models_without_guidance(model_id: str) -> None:
    assert MODELS[model_id].parameter("guidance_scale") is None


def test_flux_pro_takes_no_steps() -> None:
    assert MODELS["flux-pro"].parameter("steps") is None


@pytest.mark.parametrize("model_id", ["flux-pro", "flux-kontext"])
def test_safety_tolerance_is_one_to_six(model_id: str) -> None:
    parameter = MODELS[model_id].parameter("safety_tolerance")
    assert parameter is not None
    assert parameter.kind is Kind.ENUM
    assert parameter.choices == ("1", "2", "3", "4", "5", "6") == SAFETY_TOLERANCES
    assert parameter.default in parameter.choices


def test_only_sdxl_takes_a_negative_prompt() -> None:
    assert [m for m, s in MODELS.items() if s.parameter("negative_prompt")] == ["sdxl"]


def test_output_format_names() -> None:
    assert {m: s.output_format_name for m, s in MODELS.items()} == {
        "flux-dev": "output_format",
        "flux-schnell": "output_format",
        "flux-lora": "output_format",
        "flux-pro": "output_format",
        "flux-kontext": "output_format",
        "sdxl": "format",
    }


def test_size_modes() -> None:
    assert {m: s.size_mode for m, s in MODELS.items()} == {
        "flux-dev": SizeMode.IMAGE_SIZE,
        "flux-schnell": SizeMode.IMAGE_SIZE,
        "flux-lora": SizeMode.IMAGE_SIZE,
        "flux-pro": SizeMode.IMAGE_SIZE,
        "flux-kontext": SizeMode.ASPECT_RATIO,
        "sdxl": SizeMode.IMAGE_SIZE,
    }


def test_needs_lora_and_input_image() -> None:
    assert [m for m, s in MODELS.items() if s.needs_lora] == ["flux-lora"]
    assert [m for m, s in MODELS.items() if s.needs_input_image] == ["flux-kontext"]
    # sdxl takes LoRAs but does not need one.
    sdxl_loras = MODELS["sdxl"].parameter("loras")
    assert sdxl_loras is not None and not sdxl_loras.required


def test_max_images_per_request() -> None:
    assert {m: s.max_images_per_request for m, s in MODELS.items()} == {
        "flux-dev": 4,
        "flux-schnell": 4,
        "flux-lora": 4,
        "flux-pro": 4,
        "flux-kontext": 4,
        "sdxl": 8,
    }


def test_max_loras() -> None:
    assert MAX_LORAS == 5


# --- cost estimates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "width", "height", "num_images", "cost"),
    [
        ("flux-dev", 1000, 1000, 1, 0.025),
        ("flux-dev", 1024, 1024, 2, 0.025 * 1.048576 * 2),
        ("flux-dev", 1024, 768, 5, 0.025 * 0.786432 * 5),
        ("flux-schnell", 1000, 1000, 4, 0.012),
        ("flux-lora", 512, 1024, 3, 0.035 * 0.524288 * 3),
        ("flux-pro", 2000, 2000, 1, 0.16),
        ("sdxl", 1024, 1024, 1, MODELS["sdxl"].price_per_megapixel_usd * 1.048576),
    ],
)
def test_estimate_cost_per_megapixel(
    model_id: str, width: int, height: int, num_images: int, cost: float
) -> None:
    estimate = MODELS[model_id].estimate_cost_usd(width, height, num_images)
    assert estimate == pytest.approx(cost, abs=1e-6)


@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (512, 512), (2048, 1952), (1360, 768)])
@pytest.mark.parametrize("num_images", [1, 3, 5])
def test_estimate_cost_per_image_ignores_the_size(width: int, height: int, num_images: int) -> None:
    estimate = MODELS["flux-kontext"].estimate_cost_usd(width, height, num_images)
    assert estimate == pytest.approx(0.04 * num_images)


def test_estimate_cost_is_rounded_to_micro_dollars() -> None:
    estimate = MODELS["flux-dev"].estimate_cost_usd(1024, 768, 1)
    assert estimate == round(estimate, 6)


def test_estimate_cost_without_a_price_is_zero() -> None:
    spec = ModelSpec(
        id="free",
        fal_app="test/free",
        title="Free",
        max_images_per_request=1,
        size_mode=SizeMode.IMAGE_SIZE,
        parameters=(),
    )
    assert spec.estimate_cost_usd(1024, 1024, 2) == 0.0


# --- describe() -----------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_describe_is_json(model_id: str) -> None:
    described = MODELS[model_id].describe()
    assert json.loads(json.dumps(described)) == described


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_describe_top_level(model_id: str) -> None:
    spec = MODELS[model_id]
    described = spec.describe()
    assert set(described) == {
        "id",
        "falApp",
        "title",
        "maxImagesPerRequest",
        "sizeMode",
        "needsLora",
        "needsInputImage",
        "pricing",
        "parameters",
    }
    assert described["id"] == model_id
    assert described["falApp"] == ISSUE_MODELS[model_id][0]
    assert described["title"] == spec.title
    assert described["maxImagesPerRequest"] == spec.max_images_per_request
    assert described["sizeMode"] == spec.size_mode.value
    assert described["needsLora"] is (model_id == "flux-lora")
    assert described["needsInputImage"] is (model_id == "flux-kontext")
    assert described["pricing"] == {
        "perMegapixelUsd": spec.price_per_megapixel_usd,
        "perImageUsd": spec.price_per_image_usd,
    }
    assert list(described["parameters"]) == [to_camel(n) for n in ISSUE_PARAMETERS[model_id]]


@pytest.mark.parametrize("model_id", sorted(ISSUE_PARAMETERS))
def test_describe_parameters_carry_ranges_and_defaults(model_id: str) -> None:
    described = MODELS[model_id].describe()["parameters"]
    for name, (_, minimum, maximum, default) in ISSUE_PARAMETERS[model_id].items():
        entry = described[to_camel(name)]
        assert entry["type"] == MODELS[model_id].parameter(name).kind.value
        assert entry.get("minimum") == minimum, name
        assert entry.get("maximum") == maximum, name
        assert entry.get("default") == default, name
        # Absent bounds/defaults are left out, not sent as null.
        assert None not in entry.values(), name


def test_describe_flux_dev_exactly() -> None:
    assert MODELS["flux-dev"].describe() == {
        "id": "flux-dev",
        "falApp": "fal-ai/flux/dev",
        "title": "FLUX.1 [dev]",
        "maxImagesPerRequest": 4,
        "sizeMode": "image_size",
        "needsLora": False,
        "needsInputImage": False,
        "pricing": {"perMegapixelUsd": 0.025, "perImageUsd": None},
        "parameters": {
            "steps": {
                "type": "integer",
                "required": False,
                "minimum": 1,
                "maximum": 50,
                "default": 28,
            },
            "guidanceScale": {
                "type": "number",
                "required": False,
                "minimum": 1,
                "maximum": 20,
                "default": 3.5,
            },
            "enableSafetyChecker": {"type": "boolean", "required": False, "default": True},
        },
    }


def test_describe_safety_tolerance_lists_its_choices() -> None:
    entry = MODELS["flux-pro"].describe()["parameters"]["safetyTolerance"]
    assert entry == {
        "type": "enum",
        "required": False,
        "default": "2",
        "choices": ["1", "2", "3", "4", "5", "6"],
    }


def test_describe_required_parameters() -> None:
    lora = MODELS["flux-lora"].describe()["parameters"]["loras"]
    assert lora["required"] is True and lora["type"] == "loras"
    assert MODELS["sdxl"].describe()["parameters"]["loras"]["required"] is False
    image = MODELS["flux-kontext"].describe()["parameters"]["imageUrl"]
    assert image == {"type": "url", "required": True}


def test_describe_kontext() -> None:
    described = MODELS["flux-kontext"].describe()
    assert described["sizeMode"] == "aspect_ratio"
    assert described["pricing"] == {"perMegapixelUsd": None, "perImageUsd": 0.04}
    assert described["needsInputImage"] is True


def test_parameter_describe_keeps_zero_bounds() -> None:
    entry = Parameter("x", "x", Kind.NUMBER, 0, 0, 0).describe()
    assert entry == {"type": "number", "required": False, "minimum": 0, "maximum": 0, "default": 0}
