"""Unit tests for splitting a generation into fal requests and building their arguments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from imagegen.models.records import Generation, GenerationPart
from imagegen.planning import fal_arguments, plan_parts
from imagegen.registry import MODELS, ModelSpec

FOUR_PER_REQUEST = ModelSpec(
    id="test-model", fal_app="test/app", max_images_per_request=4, price_per_megapixel_usd=0.01
)

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
    spec = ModelSpec(
        id="small",
        fal_app="test/small",
        max_images_per_request=max_per_request,
        price_per_megapixel_usd=0.01,
    )
    parts = plan_parts(7, spec, 100)
    assert all(p.num_images <= max_per_request for p in parts)
    assert [p.first_image for p in parts] == list(range(0, 7, max_per_request))
    assert sum(p.num_images for p in parts) == 7
    assert [p.seed for p in parts] == [str(100 + i) for i in range(len(parts))]


def test_plan_parts_parts_start_pending() -> None:
    part = plan_parts(1, FOUR_PER_REQUEST, None)[0]
    assert part.status == "pending"
    assert part.fal_request_id is None


def generation(parameters: dict[str, Any], *, model: str = "flux-dev") -> Generation:
    return Generation(
        id="gen-1",
        user_id="user-1",
        prompt="a lighthouse at dusk",
        model=model,
        fal_app=MODELS[model].fal_app,
        parameters=parameters,
        num_images=6,
        width=1024,
        height=768,
        parts=[],
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


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
    args = fal_arguments(
        generation(dict(BASE_PARAMETERS)), GenerationPart(index=0, num_images=1, first_image=0)
    )
    assert "num_inference_steps" not in args


def test_fal_arguments_passes_custom_size_through() -> None:
    size = {"width": 640, "height": 320}
    gen = generation({**BASE_PARAMETERS, "image_size": size, "steps": 28})
    args = fal_arguments(gen, GenerationPart(index=0, num_images=1, first_image=0))
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
