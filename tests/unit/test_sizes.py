"""Unit tests for output sizes: aspect ratios near 1 MP and fal's presets."""

from __future__ import annotations

import pytest

from imagegen.registry import ASPECT_RATIOS, DEFAULT_IMAGE_SIZE, IMAGE_SIZE_PRESETS
from imagegen.sizes import (
    SIZE_STEP,
    TARGET_PIXELS,
    parse_ratio,
    preset_size,
    size_for_aspect_ratio,
)

# The issue's list, written out so a change to the registry's list is noticed.
ISSUE_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3")

# What size_for_aspect_ratio gives today (sqrt(1 MiB · r) per side, rounded to 16 px).
EXPECTED_SIZES = {
    "1:1": (1024, 1024),
    "4:3": (1184, 880),
    "3:4": (880, 1184),
    "16:9": (1360, 768),
    "9:16": (768, 1360),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
}


def test_the_registry_offers_the_issues_ratios() -> None:
    assert tuple(ASPECT_RATIOS) == ISSUE_RATIOS


def test_constants() -> None:
    assert TARGET_PIXELS == 1024 * 1024
    assert SIZE_STEP == 16


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_sides_are_multiples_of_16(ratio: str) -> None:
    width, height = size_for_aspect_ratio(ratio)
    assert width % 16 == 0
    assert height % 16 == 0
    assert width > 0 and height > 0


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_pixels_within_10_percent_of_one_mebipixel(ratio: str) -> None:
    width, height = size_for_aspect_ratio(ratio)
    assert abs(width * height - 1024 * 1024) <= 0.10 * 1024 * 1024


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_ratio_kept_within_one_16_px_step(ratio: str) -> None:
    width, height = size_for_aspect_ratio(ratio)
    r = parse_ratio(ratio)
    # Each side is at most one step away from the exact side for the other one.
    assert abs(width - height * r) <= 16
    assert abs(height - width / r) <= 16


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_orientation_follows_the_ratio(ratio: str) -> None:
    width, height = size_for_aspect_ratio(ratio)
    w, h = (int(x) for x in ratio.split(":"))
    assert (width > height) == (w > h)
    assert (width == height) == (w == h)


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_sides_fit_the_custom_size_limits(ratio: str) -> None:
    # A ratio's size is also a valid custom size: 256..2048 a side, multiples of 8, <= 4 MP.
    width, height = size_for_aspect_ratio(ratio)
    assert 256 <= width <= 2048 and 256 <= height <= 2048
    assert width * height <= 4_000_000


@pytest.mark.parametrize(("ratio", "size"), sorted(EXPECTED_SIZES.items()))
def test_exact_sizes(ratio: str, size: tuple[int, int]) -> None:
    assert size_for_aspect_ratio(ratio) == size


@pytest.mark.parametrize(("ratio", "mirror"), [("4:3", "3:4"), ("16:9", "9:16"), ("3:2", "2:3")])
def test_mirrored_ratios_swap_sides(ratio: str, mirror: str) -> None:
    width, height = size_for_aspect_ratio(ratio)
    assert size_for_aspect_ratio(mirror) == (height, width)


@pytest.mark.parametrize(("ratio", "value"), [("1:1", 1.0), ("16:9", 16 / 9), ("2:3", 2 / 3)])
def test_parse_ratio(ratio: str, value: float) -> None:
    assert parse_ratio(ratio) == pytest.approx(value)


# --- presets ------------------------------------------------------------------------------

PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}


def test_the_presets_are_fals() -> None:
    assert IMAGE_SIZE_PRESETS == PRESETS


@pytest.mark.parametrize(("name", "size"), sorted(PRESETS.items()))
def test_preset_size(name: str, size: tuple[int, int]) -> None:
    assert preset_size(name) == size


def test_default_preset() -> None:
    assert DEFAULT_IMAGE_SIZE == "landscape_4_3"
    assert preset_size(DEFAULT_IMAGE_SIZE) == (1024, 768)


def test_unknown_preset_raises() -> None:
    with pytest.raises(KeyError):
        preset_size("huge")
