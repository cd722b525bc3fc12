"""The HTTP request and response the API works with, independent of the socket server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    base_url: str  # https://host:port as the client addressed us


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    # A body too large to hold in memory: produced chunk by chunk and sent with chunked
    # transfer encoding (no Content-Length), ``body`` unused.
    stream: Callable[[], Iterator[bytes]] | None = None


def json_response(
    status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    return HttpResponse(status, json.dumps(data).encode(), "application/json", headers)
