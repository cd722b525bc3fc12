"""What a request's image URLs serve when it has an image fault (``faults.ImageFault``).

A faulty request's output points at ``/fault-images/{fault}/{request_id}/{index}.{ext}``
instead of ``/files/...``. These endpoints are stateless (what they serve depends only on
the URL), so they keep working after ``/_sim/reset`` and can be fetched directly:

  redirect_loopback  302 to ``http://127.0.0.1:{port}/files/{request_id}/{index}.{ext}``,
                     ``port`` from the query (``image_redirect_port``), else the simulator's
  redirect_metadata  302 to GCP's metadata server, ``http://169.254.169.254/computeMetadata/v1/``
  huge               ``mb`` (query) megabytes, streamed: a JPEG header then zero padding,
                     chunked, with no Content-Length, never held in memory
  bomb               a PNG of under 1 KB whose header declares 50000x50000 RGB pixels
  not_image          ``Content-Type: image/jpeg`` with an HTML page as the body
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Iterator, Mapping
from urllib.parse import urlencode, urlsplit

from .faults import Faults, ImageFault
from .messages import HttpResponse

ROUTE = "fault-images"
METADATA_URL = "http://169.254.169.254/computeMetadata/v1/"
BOMB_SIDE = 50_000
_MB = 1024 * 1024
_MAX_MB = 1024
# SOI, then a JFIF APP0 segment (version 1.1, 1:1 aspect, no thumbnail) and a comment.
_JPEG_HEADER = (
    b"\xff\xd8"
    + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    + b"\xff\xfe\x00\x12falsim image_huge"
)
_NOT_IMAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Access denied</title></head>"
    b"<body><h1>Access denied</h1><p>This is an HTML page, not an image.</p></body></html>\n"
)


def image_url(base_url: str, request_id: str, index: int, extension: str, faults: Faults) -> str:
    """Where output image ``index`` of a request with ``faults`` is served."""
    name = f"{request_id}/{index}.{extension}"
    if faults.image is ImageFault.NONE:
        return f"{base_url}/files/{name}"
    query: dict[str, int] = {}
    if faults.image is ImageFault.REDIRECT_LOOPBACK and faults.image_redirect_port is not None:
        query["port"] = faults.image_redirect_port
    elif faults.image is ImageFault.HUGE:
        query["mb"] = faults.image_huge_mb
    suffix = f"?{urlencode(query)}" if query else ""
    return f"{base_url}/{ROUTE}/{faults.image.value}/{name}{suffix}"


def serve(
    fault: str, request_id: str, filename: str, query: Mapping[str, str], base_url: str
) -> HttpResponse | None:
    """The response for ``/fault-images/{fault}/{request_id}/{filename}``; None if unknown."""
    try:
        kind = ImageFault(fault)
    except ValueError:
        return None
    match kind:
        case ImageFault.REDIRECT_LOOPBACK:
            port = _int(query.get("port")) or urlsplit(base_url).port or 443
            location = f"http://127.0.0.1:{port}/files/{request_id}/{filename}"
            return _redirect(location)
        case ImageFault.REDIRECT_METADATA:
            return _redirect(METADATA_URL)
        case ImageFault.HUGE:
            size = min(_int(query.get("mb")) or 40, _MAX_MB) * _MB
            return HttpResponse(200, content_type="image/jpeg", stream=lambda: _huge_jpeg(size))
        case ImageFault.BOMB:
            return HttpResponse(200, bomb_png(), "image/png")
        case ImageFault.NOT_IMAGE:
            return HttpResponse(200, _NOT_IMAGE, "image/jpeg")
    return None


def _redirect(location: str) -> HttpResponse:
    return HttpResponse(302, b"", "text/plain", headers=(("Location", location),))


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and int(text) > 0 else None


def _huge_jpeg(size: int) -> Iterator[bytes]:
    yield _JPEG_HEADER
    padding = bytes(_MB)
    remaining = size - len(_JPEG_HEADER)
    while remaining > 0:
        chunk = padding[: min(remaining, _MB)]
        remaining -= len(chunk)
        yield chunk


@functools.cache
def bomb_png() -> bytes:
    """A valid PNG stream declaring BOMB_SIDE x BOMB_SIDE RGB: a decompression bomb.

    Only a few rows of (zero) pixel data follow, so it is tiny; a decoder that trusts
    the header allocates 7.5 GB before finding the data short.
    """
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 2, 0, 0, 0)
    row = bytes(1 + 3 * BOMB_SIDE)  # filter byte "none", then black pixels
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * 4, 9))
        + _png_chunk(b"IEND", b"")
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
