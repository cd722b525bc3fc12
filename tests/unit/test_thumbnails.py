"""Unit tests for thumbnails: 256 on the longest side, aspect kept, never upscaled, WebP."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imagegen.errors import UpstreamRejectedError
from imagegen.thumbnails import THUMBNAIL_CONTENT_TYPE, THUMBNAIL_MAX_SIDE, make_thumbnail


def _encoded(size: tuple[int, int], fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    image = Image.new(mode, size, (200, 80, 40, 128) if mode == "RGBA" else (200, 80, 40))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1024, 768), (256, 192)),  # landscape 4:3
        ((1024, 576), (256, 144)),  # landscape 16:9
        ((768, 1024), (192, 256)),  # portrait 4:3
        ((576, 1024), (144, 256)),  # portrait 16:9
        ((1024, 1024), (256, 256)),  # square
        ((2048, 256), (256, 32)),  # very wide
    ],
    ids=str,
)
def test_longest_side_becomes_256_keeping_the_aspect(size, expected) -> None:
    thumbnail = make_thumbnail(_encoded(size))
    decoded = _decoded(thumbnail.data)
    assert decoded.format == "WEBP"
    assert decoded.size == expected == (thumbnail.width, thumbnail.height)
    assert max(decoded.size) == THUMBNAIL_MAX_SIDE


@pytest.mark.parametrize("size", [(256, 256), (200, 100), (64, 240), (1, 1)], ids=str)
def test_small_images_are_never_upscaled(size) -> None:
    thumbnail = make_thumbnail(_encoded(size, "PNG"))
    assert _decoded(thumbnail.data).size == size


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_stored_format_becomes_webp(fmt) -> None:
    thumbnail = make_thumbnail(_encoded((640, 480), fmt))
    assert thumbnail.content_type == THUMBNAIL_CONTENT_TYPE == "image/webp"
    decoded = _decoded(thumbnail.data)
    assert decoded.format == "WEBP" and decoded.size == (256, 192)
    # The colour survives (lossy, so roughly).
    red, green, blue = decoded.convert("RGB").getpixel((128, 96))
    assert abs(red - 200) < 12 and abs(green - 80) < 12 and abs(blue - 40) < 12


def test_transparency_is_kept() -> None:
    thumbnail = make_thumbnail(_encoded((512, 512), "PNG", "RGBA"))
    decoded = _decoded(thumbnail.data)
    assert decoded.mode == "RGBA"
    assert abs(decoded.getpixel((10, 10))[3] - 128) < 12


def test_thumbnail_is_much_smaller_than_the_image() -> None:
    noisy = Image.effect_noise((1024, 1024), 64).convert("RGB")
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    thumbnail = make_thumbnail(buffer.getvalue())
    assert len(thumbnail.data) < len(buffer.getvalue()) / 10


@pytest.mark.parametrize(
    "data", [b"", b"not an image", _encoded((300, 300))[:200], b"GIF89a" + b"\0" * 64]
)
def test_unreadable_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        make_thumbnail(data)
    assert caught.value.code == "invalid_image"
