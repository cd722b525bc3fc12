"""Downloading fal's output images: only from fal's CDN, bounded in bytes and time, and
decoded before trusted.

A webhook body tells us which URLs to fetch. fal signs it, but every URL and byte is still
treated as hostile, so that nobody can use the webhook to make this service fetch what it
should not (server-side request forgery) or store what it should not:

- the URL must be https and its host (for a shared host, also its path prefix) on an
  allow-list; every redirect hop is checked again;
- the host must resolve to global addresses only, and the address actually connected to is
  checked before the body is read (a name may resolve differently at connect time);
- the download stops at a byte limit and a deadline;
- the content type must be one we store, and Pillow must decode the bytes as exactly that
  format, within a pixel limit checked before any pixel is decoded.

IMAGE_FETCH_INSECURE_HOSTS names host:port pairs exempt from the https and address rules:
the local fal simulator. It must be empty in production.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from imagegen import tls
from imagegen.errors import RetryableError, UpstreamRejectedError
from imagegen.fetch_hosts import parse_allowed_host, parse_insecure_host

CONTENT_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
# The ceiling for IMAGE_MAX_PIXELS; thumbnails use it as Pillow's limit as well.
MAX_PIXELS = 4096 * 4096
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    content_type: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.content_type]


def _is_global(address: str) -> bool:
    """Whether `address` is publicly routable: not loopback, private, link-local (cloud
    metadata at 169.254.169.254), shared, reserved, unspecified or multicast."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.partition("%")[0]  # an IPv6 zone id
        )
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address carried inside an IPv6 one is judged by where it leads.
        nat64 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        ip = ip.ipv4_mapped or ip.sixtofour or nat64 or ip
    # is_global alone admits multicast.
    return ip.is_global and not ip.is_multicast


def _origin(url: httpx.URL) -> str:
    """scheme://host[:port] for messages: paths and queries of signed URLs carry credentials."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.raw_host.decode('ascii', 'replace')}{port}"[:200]


@dataclass(frozen=True)
class Target:
    """A URL the policy admits; `insecure` if its host:port is a local exception."""

    url: httpx.URL
    host: str
    port: int
    insecure: bool


class UrlPolicy:
    """Which URLs may be fetched: https on port 443 to an allowed host (and path prefix), or
    anything (http or https) to an exact insecure host:port."""

    def __init__(self, allowed_hosts: Iterable[str], insecure_hosts: Iterable[str]) -> None:
        self._allowed = [parse_allowed_host(entry) for entry in allowed_hosts]
        self._insecure = {parse_insecure_host(entry) for entry in insecure_hosts}

    def check(
        self, url: str, code: str = "image_host_not_allowed", base: httpx.URL | None = None
    ) -> Target:
        try:
            parsed = base.join(url) if base is not None else httpx.URL(url)
            host = parsed.raw_host.decode("ascii").lower()  # IDNA-encoded by httpx
        except (httpx.InvalidURL, UnicodeError, TypeError):
            raise UpstreamRejectedError("image URL is malformed", code=code) from None
        https = parsed.scheme == "https"
        port = parsed.port or (443 if https else 80)
        insecure = parsed.scheme in ("http", "https") and (host, port) in self._insecure
        allowed = insecure or (https and port == 443 and self._allows(host, parsed))
        if not allowed or parsed.userinfo:
            raise UpstreamRejectedError(
                f"images may not be fetched from {_origin(parsed)}", code=code
            )
        return Target(parsed, host, port, insecure)

    def _allows(self, host: str, url: httpx.URL) -> bool:
        if any(segment in (".", "..") for segment in url.path.split("/")):
            return False  # an encoded dot segment (%2e%2e) could climb out of a path prefix
        # The raw path, so that an encoded slash cannot fake a prefix (/falserverless%2f..).
        path = url.raw_path.partition(b"?")[0].decode("ascii")
        return any(
            host == allowed and (not prefix or path.startswith(prefix + "/"))
            for allowed, prefix in self._allowed
        )


def _rejected(code: str, message: str) -> UpstreamRejectedError:
    return UpstreamRejectedError(message, code=code)


def _unavailable(message: str) -> RetryableError:
    return RetryableError(message, code="image_unavailable")


# catch_warnings swaps the process-wide filter list on entry and exit: two threads doing it
# at once could leave the "error" filter installed for good, so decodes take turns here.
_WARNINGS_LOCK = threading.Lock()


def pillow():  # noqa: ANN201 (PIL.Image, imported on first use)
    """PIL.Image with the three formats we read and write registered. Registered up front,
    `Image.open(formats=...)` and `save(format="WEBP")` find them; otherwise Pillow imports
    all of its ~40 format plugins on first use (~70 ms of a cold instance's first request)."""
    from PIL import Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401

    return Image


def _decode(data: bytes, content_type: str, max_pixels: int) -> tuple[int, int]:
    Image = pillow()

    # Pillow's limit is process-wide: tighten it, never loosen it. Past twice the limit
    # open() raises before allocating anything; between once and twice it only warns,
    # so the warning is made an error around our own open.
    if not Image.MAX_IMAGE_PIXELS or Image.MAX_IMAGE_PIXELS > MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    too_many = _rejected("image_too_many_pixels", "fal returned an image with too many pixels")
    invalid = _rejected("invalid_image", f"fal returned an unreadable {content_type} image")
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[CONTENT_TYPES[content_type]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_many from exc
    except Exception as exc:  # hostile bytes can fail a decoder in many ways
        raise invalid from exc
    with image:
        width, height = image.size  # from the header: no pixel decoded yet
        if width * height > max_pixels:
            raise too_many
        # A JPEG is checked at 1/8 scale: every byte of the stream is still decoded (a
        # truncated or corrupt one still fails) but the costly inverse DCT mostly is not.
        image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
        try:
            image.load()  # bounded by the check above; refuses truncated or corrupt data
        except Exception as exc:
            raise invalid from exc
    return width, height


class ImageFetcher:
    def __init__(
        self,
        max_bytes: int,
        timeout_seconds: float,
        *,
        allowed_hosts: Iterable[str] | None = None,
        insecure_hosts: Iterable[str] | None = None,
        max_pixels: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Unset keyword arguments come from the settings (IMAGE_FETCH_*, IMAGE_MAX_PIXELS)."""
        if allowed_hosts is None or insecure_hosts is None or max_pixels is None:
            from imagegen.settings import get_settings

            settings = get_settings()
            if allowed_hosts is None:
                allowed_hosts = settings.image_fetch_allowed_hosts
            if insecure_hosts is None:
                insecure_hosts = settings.image_fetch_insecure_hosts
            if max_pixels is None:
                max_pixels = settings.image_max_pixels
        if not 0 < max_pixels <= MAX_PIXELS:
            raise ValueError(f"max_pixels must be between 1 and {MAX_PIXELS}")
        self.policy = UrlPolicy(allowed_hosts, insecure_hosts)
        self._max_bytes = max_bytes
        self._timeout = timeout_seconds
        self._max_pixels = max_pixels
        # An explicit transport, so that no proxy from the environment stands between us
        # and the address we check; it still honours SSL_CERT_FILE (the simulator's CA).
        # One pooled client per instance: fal serves every image of a request from one host.
        self._http = httpx.Client(
            transport=transport or httpx.HTTPTransport(verify=tls.client_context()),
            follow_redirects=False,
            headers={"Accept": ", ".join(CONTENT_TYPES), "Accept-Encoding": "identity"},
        )

    def fetch(self, url: str) -> FetchedImage:
        deadline = time.monotonic() + self._timeout
        target = self.policy.check(url)
        try:
            data, content_type = self._download(target, deadline)
        except httpx.TransportError as exc:
            raise _unavailable(
                f"image download from {_origin(target.url)} failed: {type(exc).__name__}"
            ) from None
        width, height = _decode(data, content_type, self._max_pixels)
        return FetchedImage(data, content_type, width, height)

    def _download(self, target: Target, deadline: float) -> tuple[bytes, str]:
        redirects = 0
        while True:
            self._check_addresses(target)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _unavailable(f"image download from {_origin(target.url)} timed out")
            with self._http.stream("GET", target.url, timeout=remaining) as response:
                self._check_peer(target, response)
                if response.status_code not in REDIRECT_STATUSES:
                    return self._read(target, response, deadline)
                # Followed by hand: every hop must pass the same rules as the first URL.
                redirects += 1
                location = response.headers.get("location")
                if redirects > MAX_REDIRECTS or not location:
                    raise _rejected(
                        "image_redirect_refused",
                        f"image download from {_origin(target.url)} redirected too often",
                    )
                target = self.policy.check(location, "image_redirect_refused", base=target.url)

    @staticmethod
    def _check_addresses(target: Target) -> None:
        if target.insecure:
            return
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise _unavailable(f"cannot resolve {_origin(target.url)}") from None
        if not infos or not all(_is_global(str(info[4][0])) for info in infos):
            raise _rejected(
                "image_address_not_allowed",
                f"{_origin(target.url)} resolves to a non-public address",
            )

    @staticmethod
    def _check_peer(target: Target, response: httpx.Response) -> None:
        """The address actually connected to: the name may have resolved differently."""
        if target.insecure:
            return
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if not peer or not _is_global(str(peer[0])):
            raise _rejected(
                "image_address_not_allowed",
                f"{_origin(target.url)} connected to a non-public address",
            )

    def _read(self, target: Target, response: httpx.Response, deadline: float) -> tuple[bytes, str]:
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise _unavailable(f"image host {_origin(target.url)} answered {status}")
        if status != 200:
            raise _rejected(
                "image_unavailable", f"image host {_origin(target.url)} answered {status}"
            )
        content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if content_type not in CONTENT_TYPES:
            raise _rejected(
                "image_unsupported_type", f"image has unsupported type {content_type[:64]!r}"
            )
        if encoding not in ("", "identity"):
            # Refused, not decompressed: a small gzip body can inflate past any byte limit.
            raise _rejected(
                "image_unsupported_type", f"image is sent with content encoding {encoding[:32]!r}"
            )
        declared = response.headers.get("content-length", "")
        too_large = _rejected("image_too_large", f"image is larger than {self._max_bytes} bytes")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise too_large
        buffer = bytearray()
        for chunk in response.iter_raw():  # raw: no decompression behind our back
            buffer += chunk
            if len(buffer) > self._max_bytes:
                raise too_large
            if time.monotonic() > deadline:
                raise _unavailable(f"image download from {_origin(target.url)} timed out")
        return bytes(buffer), content_type
