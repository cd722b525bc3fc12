"""Unit tests for splitting a generation into fal requests and building their arguments."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from imagegen.models.records import Generation, GenerationPart, LoraUse
from imagegen.planning import fal_arguments, plan_parts
from imagegen.registry import MODELS, Kind, ModelSpec, Parameter, SizeMode
from imagegen.validation import ValidatedGeneration, parse_generation_request

STEPS = Parameter("steps", "num_inference_steps", Kind.INTEGER, 1, 50, 28)


def make_spec(max_images_per_request: int, model_id: str = "test-model") -> ModelSpec:
    return ModelSpec(
        id=model_id,
        fal_app=f"test/{model_id}",
        title="A test model",
        max_images_per_request=max_images_per_request,
        size_mode=SizeMode.IMAGE_SIZE,
        parameters=(STEPS,),
        price_per_megapixel_usd=0.01,
    )


FOUR_PER_REQUEST = make_spec(4)

# num_images -> (first_image, num_images) per part, for at most 4 images per request
EXPECTED_SPLITS = {
    1: [(0, 1)],
    2: [(0, 2)],
    3: [(0, 3)],
    4: [(0, 4)],
    5: [(0, 4), (4, 1)],
    6: [(0, 4), (4, 2)],
    7: [(0, 4), (4, 3)],
    8: [(0, 4), (4, 4)],
    9: [(0, 4), (4, 4), (8, 1)],
}


@pytest.mark.parametrize("num_images", sorted(EXPECTED_SPLITS))
def test_plan_parts_splits_into_consecutive_parts(num_images: int) -> None:
    parts = plan_parts(num_images, FOUR_PER_REQUEST, None)
    assert [(p.first_image, p.num_images) for p in parts] == EXPECTED_SPLITS[num_images]
    assert [p.index for p in parts] == list(range(len(parts)))
    assert sum(p.num_images for p in parts) == num_images
    assert all(p.seed is None for p in parts)


@pytest.mark.parametrize("num_images", sorted(EXPECTED_SPLITS))
@pytest.mark.parametrize("seed", [0, 7, 2**100])
def test_plan_parts_gives_consecutive_seeds(num_images: int, seed: int) -> None:
    parts = plan_parts(num_images, FOUR_PER_REQUEST, seed)
    assert [p.seed for p in parts] == [str(seed + i) for i in range(len(parts))]


@pytest.mark.parametrize("max_per_request", [1, 2, 3])
def test_plan_parts_respects_the_models_limit(max_per_request: int) -> None:
    spec = make_spec(max_per_request, "small")
    parts = plan_parts(7, spec, 100)
    assert all(p.num_images <= max_per_request for p in parts)
    assert [p.first_image for p in parts] == list(range(0, 7, max_per_request))
    assert sum(p.num_images for p in parts) == 7
    assert [p.seed for p in parts] == [str(100 + i) for i in range(len(parts))]


def test_plan_parts_parts_start_pending() -> None:
    part = plan_parts(1, FOUR_PER_REQUEST, None)[0]
    assert part.status == "pending"
    assert part.fal_request_id is None


@pytest.mark.parametrize("model_id", sorted(MODELS))
@pytest.mark.parametrize("num_images", [1, 4, 5])
def test_plan_parts_for_every_registry_model(model_id: str, num_images: int) -> None:
    spec = MODELS[model_id]
    parts = plan_parts(num_images, spec, None)
    assert len(parts) == -(-num_images // spec.max_images_per_request)
    assert all(p.num_images <= spec.max_images_per_request for p in parts)
    assert sum(p.num_images for p in parts) == num_images


# --- fal_arguments --------------------------------------------------------------------------


def generation(
    parameters: dict[str, Any],
    *,
    model: str = "flux-dev",
    effective_prompt: str | None = None,
    loras: list[LoraUse] | None = None,
    width: int | None = 1024,
    height: int | None = 768,
) -> Generation:
    return Generation(
        id="gen-1",
        user_id="user-1",
        prompt="a lighthouse at dusk",
        effective_prompt=effective_prompt,
        model=model,
        fal_app=MODELS[model].fal_app,
        parameters=parameters,
        num_images=parameters.get("num_images", 1),
        width=width,
        height=height,
        loras=loras or [],
        parts=[],
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


def from_request(validated: ValidatedGeneration, **overrides: Any) -> Generation:
    """The record the api would store for a validated request (LoRAs given separately)."""
    return generation(
        validated.parameters,
        model=validated.spec.id,
        width=validated.width,
        height=validated.height,
        **overrides,
    )


def validated(**fields: Any) -> ValidatedGeneration:
    return parse_generation_request(
        json.dumps({"prompt": "a lighthouse at dusk", **fields}).encode()
    )


ONE = GenerationPart(index=0, num_images=1, first_image=0)

BASE_PARAMETERS = {
    "image_size": "landscape_4_3",
    "num_images": 6,
    "output_format": "png",
    "enable_safety_checker": False,
    "seed": "7",
}


def test_fal_arguments_for_dev_with_all_parameters() -> None:
    gen = generation({**BASE_PARAMETERS, "steps": 30, "guidance_scale": 4.5})
    part = GenerationPart(index=1, num_images=2, first_image=4, seed="8")
    assert fal_arguments(gen, part) == {
        "prompt": "a lighthouse at dusk",
        "image_size": "landscape_4_3",
        "num_images": 2,
        "output_format": "png",
        "enable_safety_checker": False,
        "num_inference_steps": 30,
        "guidance_scale": 4.5,
        "seed": 8,
    }


def test_fal_arguments_without_guidance_or_seed() -> None:
    gen = generation({**BASE_PARAMETERS, "seed": None, "steps": 4}, model="flux-schnell")
    part = GenerationPart(index=0, num_images=4, first_image=0)
    args = fal_arguments(gen, part)
    assert args["num_inference_steps"] == 4
    assert "guidance_scale" not in args
    assert "seed" not in args
    assert "steps" not in args
    assert args["num_images"] == 4


def test_fal_arguments_omits_steps_when_absent() -> None:
    args = fal_arguments(generation(dict(BASE_PARAMETERS)), ONE)
    assert "num_inference_steps" not in args


def test_fal_arguments_passes_custom_size_through() -> None:
    size = {"width": 640, "height": 320}
    gen = generation({**BASE_PARAMETERS, "image_size": size, "steps": 28})
    args = fal_arguments(gen, ONE)
    assert args["image_size"] == size


@pytest.mark.parametrize("seed", [0, 1, 2**64, 2**100])
def test_fal_arguments_seed_is_an_exact_int(seed: int) -> None:
    part = GenerationPart(index=0, num_images=1, first_image=0, seed=str(seed))
    args = fal_arguments(generation(dict(BASE_PARAMETERS)), part)
    assert args["seed"] == seed
    assert type(args["seed"]) is int


def test_plan_then_fal_arguments_per_part() -> None:
    gen = generation({**BASE_PARAMETERS, "steps": 28, "guidance_scale": 3.5})
    parts = plan_parts(6, MODELS["flux-dev"], 41)
    args = [fal_arguments(gen, p) for p in parts]
    assert [(a["num_images"], a["seed"]) for a in args] == [(4, 41), (2, 42)]


def test_fal_arguments_ignores_parameters_the_model_does_not_take() -> None:
    # A record's parameters may hold keys the model no longer takes; fal never sees them.
    gen = generation(
        {**BASE_PARAMETERS, "steps": 28, "negative_prompt": "x", "sampler": "Euler"},
        model="flux-dev",
    )
    args = fal_arguments(gen, ONE)
    assert "negative_prompt" not in args
    assert "sampler" not in args


def test_fal_arguments_for_a_model_no_longer_in_the_registry() -> None:
    gen = generation(dict(BASE_PARAMETERS)).model_copy(update={"model": "retired-model"})
    with pytest.raises(ValueError, match="retired-model"):
        fal_arguments(gen, ONE)


# --- fal_arguments for every registry model, from a validated request -----------------------

LORA_A = LoraUse(id="lora-a", scale=0.8, trigger="tok-a", url="gs://loras/a.safetensors")
LORA_B = LoraUse(id="lora-b", scale=1.5, url="gs://loras/b.safetensors")
URL_A = "https://storage.example/loras/a.safetensors?sig=1"
URL_B = "https://storage.example/loras/b.safetensors?sig=2"
IMAGE_URL = "https://example.com/input.png"


def test_fal_arguments_flux_dev_defaults() -> None:
    gen = from_request(validated(model="flux-dev"))
    assert fal_arguments(gen, ONE) == {
        "prompt": "a lighthouse at dusk",
        "num_images": 1,
        "output_format": "jpeg",
        "image_size": "landscape_4_3",
        "num_inference_steps": 28,
        "guidance_scale": 3.5,
        "enable_safety_checker": True,
    }


def test_fal_arguments_flux_schnell() -> None:
    gen = from_request(validated(model="flux-schnell", steps=8, imageSize="square_hd"))
    assert fal_arguments(gen, ONE) == {
        "prompt": "a lighthouse at dusk",
        "num_images": 1,
        "output_format": "jpeg",
        "image_size": "square_hd",
        "num_inference_steps": 8,
        "enable_safety_checker": True,
    }


def test_fal_arguments_flux_lora_with_loras_in_order() -> None:
    request = validated(
        model="flux-lora",
        loras=[{"id": "lora-a", "scale": 0.8}, {"id": "lora-b"}],
        guidanceScale=30,
        aspectRatio="16:9",
    )
    gen = from_request(request, loras=[LORA_A, LORA_B], effective_prompt="tok-a, a lighthouse")
    assert fal_arguments(gen, ONE, [URL_A, URL_B]) == {
        "prompt": "tok-a, a lighthouse",
        "num_images": 1,
        "output_format": "jpeg",
        "image_size": {"width": 1360, "height": 768},
        "num_inference_steps": 28,
        "guidance_scale": 30,
        "loras": [{"path": URL_A, "scale": 0.8}, {"path": URL_B, "scale": 1.5}],
        "enable_safety_checker": True,
    }


def test_fal_arguments_lora_urls_follow_the_records_order() -> None:
    gen = generation({**BASE_PARAMETERS, "steps": 28}, model="flux-lora", loras=[LORA_B, LORA_A])
    args = fal_arguments(gen, ONE, [URL_B, URL_A])
    assert args["loras"] == [{"path": URL_B, "scale": 1.5}, {"path": URL_A, "scale": 0.8}]


@pytest.mark.parametrize("urls", [None, [], [URL_A], [URL_A, URL_B, URL_A]], ids=repr)
def test_fal_arguments_lora_url_count_must_match(urls: list[str] | None) -> None:
    gen = generation({**BASE_PARAMETERS}, model="flux-lora", loras=[LORA_A, LORA_B])
    with pytest.raises(ValueError, match="LoRA"):
        fal_arguments(gen, ONE, urls)


def test_fal_arguments_flux_pro() -> None:
    gen = from_request(validated(model="flux-pro", safetyTolerance=5, outputFormat="png"))
    assert fal_arguments(gen, ONE) == {
        "prompt": "a lighthouse at dusk",
        "num_images": 1,
        "output_format": "png",
        "image_size": "landscape_4_3",
        "safety_tolerance": "5",
        "enable_safety_checker": True,
    }


def test_fal_arguments_flux_kontext_with_aspect_ratio() -> None:
    request = validated(model="flux-kontext", imageUrl=IMAGE_URL, aspectRatio="3:4")
    args = fal_arguments(from_request(request), ONE)
    assert args == {
        "prompt": "a lighthouse at dusk",
        "num_images": 1,
        "output_format": "jpeg",
        "aspect_ratio": "3:4",
        "image_url": IMAGE_URL,
        "guidance_scale": 3.5,
        "safety_tolerance": "2",
    }
    assert "image_size" not in args


def test_fal_arguments_flux_kontext_without_aspect_ratio_sends_no_size() -> None:
    request = validated(model="flux-kontext", imageUrl=IMAGE_URL)
    assert (request.width, request.height) == (None, None)
    args = fal_arguments(from_request(request), ONE)
    assert "image_size" not in args
    assert "aspect_ratio" not in args
    assert args["image_url"] == IMAGE_URL


def test_fal_arguments_sdxl_uses_format_and_negative_prompt() -> None:
    request = validated(
        model="sdxl",
        negativePrompt="blurry",
        width=1024,
        height=1024,
        steps=30,
        cfgScale=7.5,
        outputFormat="png",
    )
    args = fal_arguments(from_request(request), ONE)
    assert args == {
        "prompt": "a lighthouse at dusk",
        "num_images": 1,
        "format": "png",
        "image_size": {"width": 1024, "height": 1024},
        "num_inference_steps": 30,
        "guidance_scale": 7.5,
        "negative_prompt": "blurry",
        "enable_safety_checker": True,
    }
    assert "output_format" not in args


def test_fal_arguments_sdxl_without_loras_sends_none() -> None:
    args = fal_arguments(from_request(validated(model="sdxl")), ONE)
    assert "loras" not in args
    assert args["negative_prompt"] == ""


def test_fal_arguments_sdxl_with_a_lora() -> None:
    gen = from_request(validated(model="sdxl", loras=[{"id": "lora-a"}]), loras=[LORA_A])
    assert fal_arguments(gen, ONE, [URL_A])["loras"] == [{"path": URL_A, "scale": 0.8}]


# Per model: (a request body's extra fields, the fal argument names expected besides
# prompt/num_images/seed). Written out by hand so a registry change shows up here.
FAL_NAMES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "flux-dev": (
        {},
        {
            "image_size",
            "output_format",
            "num_inference_steps",
            "guidance_scale",
            "enable_safety_checker",
        },
    ),
    "flux-schnell": (
        {},
        {"image_size", "output_format", "num_inference_steps", "enable_safety_checker"},
    ),
    "flux-lora": (
        {"loras": [{"id": "lora-a"}]},
        {
            "image_size",
            "output_format",
            "num_inference_steps",
            "guidance_scale",
            "loras",
            "enable_safety_checker",
        },
    ),
    "flux-pro": (
        {},
        {"image_size", "output_format", "safety_tolerance", "enable_safety_checker"},
    ),
    "flux-kontext": (
        {"imageUrl": IMAGE_URL, "aspectRatio": "1:1"},
        {"aspect_ratio", "output_format", "image_url", "guidance_scale", "safety_tolerance"},
    ),
    "sdxl": (
        {},
        {
            "image_size",
            "format",
            "num_inference_steps",
            "guidance_scale",
            "negative_prompt",
            "enable_safety_checker",
        },
    ),
}


def test_fal_names_table_covers_the_registry() -> None:
    assert set(FAL_NAMES) == set(MODELS)


@pytest.mark.parametrize("model_id", sorted(FAL_NAMES))
def test_fal_arguments_names_for_every_model(model_id: str) -> None:
    fields, names = FAL_NAMES[model_id]
    request = validated(model=model_id, seed=3, **fields)
    gen = from_request(request, loras=[LORA_A] if "loras" in fields else None)
    part = plan_parts(1, request.spec, 3)[0]
    args = fal_arguments(gen, part, [URL_A] if "loras" in fields else None)
    assert set(args) == {"prompt", "num_images", "seed", *names}
    assert args["seed"] == 3
    assert gen.fal_app == MODELS[model_id].fal_app


# --- effective prompt -----------------------------------------------------------------------


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_effective_prompt_is_what_fal_receives(model_id: str) -> None:
    fields, _ = FAL_NAMES[model_id]
    request = validated(model=model_id, **fields)
    gen = from_request(
        request,
        effective_prompt="tok-a, a lighthouse at dusk",
        loras=[LORA_A] if "loras" in fields else None,
    )
    args = fal_arguments(gen, ONE, [URL_A] if "loras" in fields else None)
    assert args["prompt"] == "tok-a, a lighthouse at dusk"


@pytest.mark.parametrize("effective", [None, ""], ids=repr)
def test_prompt_is_used_without_an_effective_prompt(effective: str | None) -> None:
    gen = generation(dict(BASE_PARAMETERS), effective_prompt=effective)
    assert fal_arguments(gen, ONE)["prompt"] == "a lighthouse at dusk"
