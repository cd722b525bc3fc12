"""Downloading a request's input URLs (LoRA weights, input images) as a fal app does.

fal's apps download their inputs once the request is running, not at submit, so a URL
that works when the request is queued but not when it runs (an expired signed URL, a
bucket the runner cannot read) fails the request then: COMPLETED with an error, result
422 with a ``file_download_error`` (or ``image_load_error``, ``file_too_large``) detail
located at the field. The simulator downloads for real, so a test proves the product's
signed URL works from outside the product: plain http is allowed (a local GCS emulator),
https trusts the system roots (and ``SSL_CERT_FILE``) plus certifi's.

Nothing here ever reports a URL's query string or user info: signed URLs carry their
credentials there.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urlsplit, urlunsplit

import certifi
import httpx
from PIL import Image, ImageOps

from .apps import ErrorDetail, FetchKind, InputUrl
from .jobs import Failure, InputFetch, validation_failure

FETCH_TIMEOUT_SECONDS = 10.0  # per URL, from connect to the last byte
MAX_BYTES: dict[FetchKind, int] = {
    FetchKind.LORA: 2 * 1024**3,  # streamed and counted, never kept
    FetchKind.IMAGE: 50 * 1024**2,  # kept to decode
}
_CHUNK = 1024 * 1024
_ERRORS_DOC = "https://docs.fal.ai/errors#"
_DOWNLOAD_MSG = "Failed to download the file. Please check if the URL is accessible and try again."
_IMAGE_MSG = (
    "Failed to load the image. Please ensure the image file is not corrupted and is in a "
    "supported format."
)
_WHAT = {FetchKind.LORA: "LoRA weights", FetchKind.IMAGE: "input image"}


@dataclass
class FetchedInputs:
    """What the downloads gave the render step, or why the request fails."""

    counts: dict[FetchKind, int] = field(default_factory=dict)
    image: Image.Image | None = None  # the (first) decoded input image, RGB
    failure: Failure | None = None


class _FetchError(Exception):
    def __init__(self, type_: str, msg: str, reason: str, status: int | None, size: int):
        super().__init__(reason)
        self.type = type_
        self.msg = msg
        self.reason = reason
        self.status = status
        self.size = size


def redact_url(url: str) -> str:
    """The URL without user info, query or fragment; a data: URI without its payload."""
    parts = urlsplit(url)
    if parts.scheme == "data":
        return f"data:{parts.path.partition(',')[0]}"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def fetch_inputs(
    urls: list[InputUrl],
    *,
    record: Callable[[InputFetch, str], None],
    stop: threading.Event,
) -> FetchedInputs:
    """Download ``urls`` in order, recording each; stop at the first failure (as fal does).

    ``stop`` (cancel, discard) ends the loop between downloads; the caller checks it.
    """
    fetched = FetchedInputs()
    if not urls:
        return fetched
    with httpx.Client(
        verify=_ssl_context(),
        # Inputs often live on 127.0.0.1 emulators: environment proxies must not capture them.
        trust_env=False,
        follow_redirects=True,
        timeout=FETCH_TIMEOUT_SECONDS,
    ) as client:
        for item in urls:
            if stop.is_set():
                break
            safe_url = redact_url(item.url)
            started = time.monotonic()
            try:
                status, body, size = _download(client, item)
                if item.kind is FetchKind.IMAGE:
                    image = _decode(body, status, size)
                    fetched.image = fetched.image or image
            except _FetchError as exc:
                reason = _scrub(exc.reason, item.url, safe_url)
                record(
                    InputFetch(item.kind.value, safe_url, exc.status, exc.size, reason),
                    f"Failed to download {_WHAT[item.kind]} from {safe_url}: {reason}",
                )
                fetched.failure = validation_failure([_detail(item, safe_url, exc, reason)])
                return fetched
            elapsed = time.monotonic() - started
            record(
                InputFetch(item.kind.value, safe_url, status, size, None),
                f"Downloaded {_WHAT[item.kind]} from {safe_url} ({size} bytes, {elapsed:.2f}s)",
            )
            fetched.counts[item.kind] = fetched.counts.get(item.kind, 0) + 1
    return fetched


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # The system's roots (create_default_context honours SSL_CERT_FILE / SSL_CERT_DIR),
    # plus certifi's for machines without a system store.
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=certifi.where())
    return context


def _download(client: httpx.Client, item: InputUrl) -> tuple[int | None, bytes, int]:
    """(HTTP status or None, body if it is kept, body size)."""
    cap = MAX_BYTES[item.kind]
    keep = item.kind is FetchKind.IMAGE
    scheme = urlsplit(item.url).scheme.lower()
    if scheme == "data":
        body = _data_uri(item.url)
        if len(body) > cap:
            raise _too_large(None, len(body), cap)
        return None, body if keep else b"", len(body)
    if scheme not in ("http", "https"):
        reason = f"unsupported URL scheme {scheme!r}" if scheme else "not a URL"
        raise _FetchError("file_download_error", _DOWNLOAD_MSG, reason, None, 0)

    deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
    chunks: list[bytes] = []
    size = 0
    status: int | None = None
    try:
        with client.stream("GET", item.url) as response:
            status = response.status_code
            if not 200 <= status < 300:
                reason = f"HTTP {status} {response.reason_phrase}".rstrip()
                raise _FetchError("file_download_error", _DOWNLOAD_MSG, reason, status, 0)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _too_large(status, 0, cap)
            for chunk in response.iter_bytes(_CHUNK):
                size += len(chunk)
                if size > cap:
                    raise _too_large(status, size, cap)
                if time.monotonic() > deadline:
                    reason = f"timed out after {FETCH_TIMEOUT_SECONDS:g}s"
                    raise _FetchError("file_download_error", _DOWNLOAD_MSG, reason, status, size)
                if keep:
                    chunks.append(chunk)
    except httpx.HTTPError as exc:
        reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
        raise _FetchError("file_download_error", _DOWNLOAD_MSG, reason, status, size) from exc
    return status, b"".join(chunks), size


def _data_uri(url: str) -> bytes:
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise _FetchError("file_download_error", _DOWNLOAD_MSG, "malformed data URI", None, 0)
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            reason = f"malformed base64 in data URI: {exc}"
            raise _FetchError("file_download_error", _DOWNLOAD_MSG, reason, None, 0) from exc
    return unquote_to_bytes(payload)


def _decode(body: bytes, status: int | None, size: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(body)) as opened:
            # Upright as a viewer shows it: the ratio must follow the EXIF orientation.
            return ImageOps.exif_transpose(opened).convert("RGB")
    except Exception as exc:  # Pillow raises many types for bad or hostile files
        reason = f"not a decodable image ({type(exc).__name__}: {exc})"
        raise _FetchError("image_load_error", _IMAGE_MSG, reason, status, size) from exc


def _too_large(status: int | None, size: int, cap: int) -> _FetchError:
    msg = f"File size exceeds the maximum allowed size of {cap} bytes."
    return _FetchError("file_too_large", msg, f"larger than {cap} bytes", status, size)


def _scrub(text: str, url: str, safe_url: str) -> str:
    """Keep a URL's credentials out of an exception message that might quote it."""
    text = text.replace(url, safe_url)
    parts = urlsplit(url)
    for secret in (parts.query, parts.password, parts.username):
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def _detail(item: InputUrl, safe_url: str, exc: _FetchError, reason: str) -> ErrorDetail:
    """fal's model-error shape (https://docs.fal.ai/errors), located at the URL's field."""
    return {
        "loc": list(item.loc),
        "msg": f"{exc.msg} ({_WHAT[item.kind]} {safe_url}: {reason})",
        "type": exc.type,
        "url": _ERRORS_DOC + exc.type,
        "input": safe_url,
    }
