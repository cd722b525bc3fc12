"""Downloading fal's output images: bounded in bytes and time, and decoded before trusted.

A webhook body tells us which URLs to fetch, so every byte is treated as hostile: the
download stops at a byte limit, the content type must be an image type we store, and
Pillow must recognise it (with an explicit format list and a pixel limit) before it is
uploaded anywhere.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import httpx

from imagegen.errors import RetryableError, UpstreamRejectedError

CONTENT_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
MAX_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    content_type: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.content_type]


def _inspect(data: bytes, content_type: str) -> tuple[int, int]:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data), formats=[CONTENT_TYPES[content_type]]) as image:
            width, height = image.size
    except (Image.DecompressionBombError, Image.UnidentifiedImageError, OSError) as exc:
        raise UpstreamRejectedError(
            f"fal returned an unreadable {content_type} image", code="invalid_image"
        ) from exc
    if width * height > MAX_PIXELS:
        raise UpstreamRejectedError("fal returned an image that is too large", code="invalid_image")
    return width, height


class ImageFetcher:
    def __init__(self, max_bytes: int, timeout_seconds: float) -> None:
        self._max_bytes = max_bytes
        # One pooled client per instance: fal serves every image of a request from one host.
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_seconds), follow_redirects=False)

    def fetch(self, url: str) -> FetchedImage:
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 500 or response.status_code == 429:
                    raise RetryableError(
                        f"image host answered {response.status_code}", code="image_unavailable"
                    )
                if response.status_code != 200:
                    raise UpstreamRejectedError(
                        f"image download answered {response.status_code}", code="image_unavailable"
                    )
                content_type = response.headers.get("content-type", "").split(";")[0].strip()
                if content_type not in CONTENT_TYPES:
                    raise UpstreamRejectedError(
                        f"image has unsupported content type '{content_type[:64]}'",
                        code="invalid_image",
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self._max_bytes:
                    raise UpstreamRejectedError(
                        "image is larger than allowed", code="image_too_large"
                    )
                buffer = bytearray()
                for chunk in response.iter_bytes():
                    buffer += chunk
                    if len(buffer) > self._max_bytes:
                        raise UpstreamRejectedError(
                            "image is larger than allowed", code="image_too_large"
                        )
        except httpx.TransportError as exc:
            raise RetryableError(
                f"image download failed: {type(exc).__name__}", code="image_unavailable"
            ) from None
        data = bytes(buffer)
        width, height = _inspect(data, content_type)
        return FetchedImage(data, content_type, width, height)
