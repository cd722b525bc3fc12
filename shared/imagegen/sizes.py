"""Output sizes: fal presets, custom sizes within limits, and aspect ratios near 1 MP."""

from __future__ import annotations

import math

from imagegen.registry import IMAGE_SIZE_PRESETS

TARGET_PIXELS = 1024 * 1024  # "near 1 MP": FLUX's native resolution
SIZE_STEP = 16  # FLUX latents are 16-pixel aligned


def parse_ratio(ratio: str) -> float:
    width, height = ratio.split(":")
    return int(width) / int(height)


def size_for_aspect_ratio(ratio: str) -> tuple[int, int]:
    """The size closest to 1 MP with exactly this ratio's orientation, sides multiples of 16.

    width = sqrt(P·r) and height = sqrt(P/r) give P pixels at ratio r; each side is then
    rounded to the nearest multiple of 16, so the ratio is kept to within one step.
    """
    r = parse_ratio(ratio)
    width = round(math.sqrt(TARGET_PIXELS * r) / SIZE_STEP) * SIZE_STEP
    height = round(math.sqrt(TARGET_PIXELS / r) / SIZE_STEP) * SIZE_STEP
    return width, height


def preset_size(name: str) -> tuple[int, int]:
    return IMAGE_SIZE_PRESETS[name]
