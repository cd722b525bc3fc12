"""Placeholder images that stand in for FLUX output.

Deterministic in (seed, index, prompt, size, format, notes, inset) so tests can compare
bytes, and labelled with the prompt and seed so a human looking at the local stack's
gallery can tell which request produced which picture. ``notes`` are extra caption lines
("loras: 2", "NSFW flagged"); ``inset`` is an input image, pasted scaled at the right edge
so an image-to-image result visibly used its input.
"""

from __future__ import annotations

import functools
import io
import random
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps


@dataclass(frozen=True)
class OutputFormat:
    content_type: str
    extension: str
    pil_format: str


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "jpeg": OutputFormat("image/jpeg", "jpg", "JPEG"),
    "png": OutputFormat("image/png", "png", "PNG"),
}

_MAX_PROMPT_LINES = 8
_ELLIPSIS = " ..."
_CIRCLES = 3
# The inset takes at most this share of each side of the output.
_INSET_SHARE = 0.4


def render_image(
    *,
    prompt: str,
    seed: int,
    index: int,
    width: int,
    height: int,
    output_format: str,
    notes: Sequence[str] = (),
    inset: Image.Image | None = None,
) -> bytes:
    """Encode image ``index`` of a request with base ``seed``."""
    rng = random.Random(f"falsim:{seed}:{index}")
    image = _gradient(width, height, _colour(rng), _colour(rng))
    draw = ImageDraw.Draw(image)
    for _ in range(_CIRCLES):
        radius = rng.randint(1, max(1, min(width, height) // 4))
        x, y = rng.randrange(width), rng.randrange(height)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=_colour(rng))
    if inset is not None:
        _paste_inset(image, inset)
    footer = "\n".join([*notes, f"seed {seed}  image {index}  {width}x{height}"])
    _draw_caption(draw, prompt, footer, width, height)

    fmt = OUTPUT_FORMATS[output_format]
    buffer = io.BytesIO()
    if fmt.pil_format == "PNG":
        # Level 1: default compression makes a 1024x1024 PNG several times slower.
        image.save(buffer, "PNG", compress_level=1)
    else:
        image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _paste_inset(image: Image.Image, inset: Image.Image) -> None:
    """Paste ``inset``, scaled to fit, at the middle of the right edge, in a white frame.

    Drawn before the caption, whose outlined text stays legible over it.
    """
    width, height = image.size
    border = max(1, min(width, height) // 200)
    box = (int(width * _INSET_SHARE), int(height * _INSET_SHARE))
    scaled = ImageOps.contain(inset, box)  # up or down, keeping the ratio
    x = width - scaled.width - 2 * border - 4 * border
    y = (height - scaled.height) // 2 - border
    framed = Image.new("RGB", (scaled.width + 2 * border, scaled.height + 2 * border), "white")
    framed.paste(scaled, (border, border))
    image.paste(framed, (max(0, x), y))


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def _gradient(
    width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]
) -> Image.Image:
    # Stretching Pillow's built-in 256x256 ramp is far faster than drawing row by row.
    mask = Image.linear_gradient("L").resize((width, height))
    return Image.composite(
        Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), mask
    )


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_caption(
    draw: ImageDraw.ImageDraw, prompt: str, footer: str, width: int, height: int
) -> None:
    size = max(8, min(width, height) // 24)
    font = _font(size)
    margin = size
    line_height = size + size // 3
    # TextWrapper refuses a width that cannot fit the ellipsis; tiny images just clip.
    chars_per_line = max(len(_ELLIPSIS) + 1, int((width - 2 * margin) / (size * 0.55)))
    footer_lines = footer.count("\n") + 1
    lines_available = max(1, (height - 2 * margin) // line_height - 1 - footer_lines)
    wrapper = textwrap.TextWrapper(
        width=chars_per_line,
        max_lines=min(_MAX_PROMPT_LINES, lines_available),
        placeholder=_ELLIPSIS,
    )
    _outlined_text(draw, (margin, margin), "\n".join(wrapper.wrap(prompt)), font, size)
    footer_top = height - margin - size - (footer_lines - 1) * line_height
    _outlined_text(draw, (margin, footer_top), footer, font, size)


def _outlined_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: int,
) -> None:
    # The black outline keeps white text legible on any background colour.
    draw.multiline_text(
        xy,
        text,
        font=font,
        fill="white",
        spacing=size // 3,
        stroke_width=max(1, size // 12),
        stroke_fill="black",
    )
