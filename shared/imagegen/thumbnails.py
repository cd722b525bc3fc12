"""Thumbnails: a small WebP preview of every stored image, made from the bytes the webhook
already downloaded (no second download).

The longest side is scaled down to 256 pixels with LANCZOS, keeping the aspect ratio;
an image already smaller is never scaled up. Transparency survives (WebP has alpha).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from imagegen.errors import UpstreamRejectedError

THUMBNAIL_MAX_SIDE = 256
THUMBNAIL_QUALITY = 80
THUMBNAIL_CONTENT_TYPE = "image/webp"
THUMBNAIL_EXTENSION = "webp"


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    width: int
    height: int
    content_type: str = THUMBNAIL_CONTENT_TYPE


def make_thumbnail(
    data: bytes, max_side: int = THUMBNAIL_MAX_SIDE, quality: int = THUMBNAIL_QUALITY
) -> Thumbnail:
    """A WebP thumbnail of `data` (JPEG, PNG or WebP); UpstreamRejectedError if unreadable."""
    from PIL import Image

    from imagegen.image_fetch import CONTENT_TYPES, MAX_PIXELS

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data), formats=list(CONTENT_TYPES.values())) as image:
            # thumbnail() lets JPEG decode at a reduced scale (draft), then resamples.
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            has_alpha = image.mode in ("RGBA", "LA", "PA") or (
                image.mode == "P" and "transparency" in image.info
            )
            small = image.convert("RGBA" if has_alpha else "RGB")
    except (Image.DecompressionBombError, Image.UnidentifiedImageError, OSError) as exc:
        raise UpstreamRejectedError(
            "fal returned an image that cannot be decoded", code="invalid_image"
        ) from exc
    buffer = io.BytesIO()
    small.save(buffer, format="WEBP", quality=quality, method=4)
    return Thumbnail(buffer.getvalue(), small.width, small.height)
