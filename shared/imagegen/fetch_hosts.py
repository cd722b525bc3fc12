"""The host entries of IMAGE_FETCH_ALLOWED_HOSTS / IMAGE_FETCH_INSECURE_HOSTS.

Apart from `imagegen.image_fetch` so that settings can validate them without loading the
HTTP client at start-up.
"""

from __future__ import annotations

import ipaddress
import re

_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def parse_allowed_host(entry: str) -> tuple[str, str]:
    """`host` or `host/path-prefix` as (host, "/path-prefix" or ""); ValueError if malformed."""
    host, _, path = entry.strip().partition("/")
    host = host.lower()
    segments = [segment for segment in path.split("/") if segment]
    if not _HOST_NAME.fullmatch(host) or not all(
        _PATH_SEGMENT.fullmatch(segment) and segment.strip(".") for segment in segments
    ):
        raise ValueError(f"not a host or host/path-prefix: {entry!r}")
    return host, "".join(f"/{segment}" for segment in segments)


def parse_insecure_host(entry: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) as (host, port); ValueError if malformed."""
    host, _, port = entry.strip().rpartition(":")
    host = host.lower().removeprefix("[").removesuffix("]")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536) or not (
        _HOST_NAME.fullmatch(host) or _is_ip(host)
    ):
        raise ValueError(f"not host:port: {entry!r}")
    return host, int(port)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
