"""Splitting a generation into fal requests and building each request's fal arguments."""

from __future__ import annotations

from typing import Any

from imagegen.models.records import Generation, GenerationPart
from imagegen.registry import ModelSpec


def plan_parts(num_images: int, spec: ModelSpec, seed: int | None) -> list[GenerationPart]:
    """Consecutive seeds per part keep a seeded multi-part generation reproducible."""
    parts: list[GenerationPart] = []
    first = 0
    while first < num_images:
        count = min(spec.max_images_per_request, num_images - first)
        part_seed = None if seed is None else str(seed + len(parts))
        parts.append(
            GenerationPart(index=len(parts), num_images=count, first_image=first, seed=part_seed)
        )
        first += count
    return parts


def fal_arguments(generation: Generation, part: GenerationPart) -> dict[str, Any]:
    params = generation.parameters
    arguments: dict[str, Any] = {
        "prompt": generation.prompt,
        "image_size": params["image_size"],
        "num_images": part.num_images,
        "output_format": params["output_format"],
        "enable_safety_checker": params["enable_safety_checker"],
    }
    if "steps" in params:
        arguments["num_inference_steps"] = params["steps"]
    if "guidance_scale" in params:
        arguments["guidance_scale"] = params["guidance_scale"]
    if part.seed is not None:
        arguments["seed"] = int(part.seed)
    return arguments
