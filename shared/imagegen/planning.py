"""Splitting a generation into fal requests and building each request's fal arguments."""

from __future__ import annotations

from typing import Any

from imagegen.models.records import Generation, GenerationPart
from imagegen.registry import Kind, ModelSpec, get_model


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


def fal_arguments(
    generation: Generation, part: GenerationPart, lora_urls: list[str] | None = None
) -> dict[str, Any]:
    """fal's input for one part. `lora_urls` are fresh signed URLs, in the record's order."""
    spec = get_model(generation.model)
    if spec is None:
        raise ValueError(f"model {generation.model!r} is no longer in the registry")
    params = generation.parameters
    arguments: dict[str, Any] = {
        "prompt": generation.effective_prompt or generation.prompt,
        "num_images": part.num_images,
        spec.output_format_name: params["output_format"],
    }
    for size_key in ("image_size", "aspect_ratio"):
        if params.get(size_key) is not None:
            arguments[size_key] = params[size_key]
    for parameter in spec.parameters:
        if parameter.kind is Kind.LORAS:
            if generation.loras:
                urls = lora_urls or []
                if len(urls) != len(generation.loras):
                    raise ValueError("every LoRA of the generation needs a URL")
                arguments["loras"] = [
                    {"path": url, "scale": lora.scale}
                    for url, lora in zip(urls, generation.loras, strict=True)
                ]
            continue
        value = params.get(parameter.name)
        if value is not None:
            arguments[parameter.fal_name] = value
    if part.seed is not None:
        arguments["seed"] = int(part.seed)
    return arguments
