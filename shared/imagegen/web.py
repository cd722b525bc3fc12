"""The HTTP edge shared by the HTTP functions: bodies in, JSON out, errors mapped once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import flask
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, RoutingException

from imagegen.errors import (
    ImageGenError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    UnsupportedMediaTypeError,
)
from imagegen.logging_setup import bind_trace, trace_from_header, unbind_trace
from imagegen.settings import get_settings

log = logging.getLogger(__name__)
JSON_TYPES = ("application/json", "application/cloudevents+json")


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> flask.Response:
    return flask.Response(
        json.dumps(body, separators=(",", ":"), default=str),
        status=status,
        headers=headers,
        mimetype="application/json",
    )


def error_response(error: ImageGenError) -> flask.Response:
    headers = None
    if isinstance(error, RateLimitedError):
        headers = {"Retry-After": str(error.retry_after)}
    elif error.status == 503:
        headers = {"Retry-After": "1"}
    return json_response(error.to_body(), error.status, headers)


def read_body(request: flask.Request, max_bytes: int, *, require_json: bool = True) -> bytes:
    """The raw body, refused with 413 past `max_bytes` whether or not a length was declared."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadTooLargeError(f"Request body is larger than {max_bytes} bytes")
    content_type = (request.mimetype or "").lower()
    if require_json and content_type and content_type not in JSON_TYPES:
        raise UnsupportedMediaTypeError("Content-Type must be application/json")
    data = request.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"Request body is larger than {max_bytes} bytes")
    return data


def framework_error(error: HTTPException) -> flask.Response:
    """An error the functions framework answers before the function runs, in the product's
    JSON shape rather than Flask's HTML page: its own router refuses a path with a newline
    (`/v1/images/generations/a%0Ab`), for one. Registered by each HTTP entry point."""
    status = error.code or 500
    if status == 404:
        return error_response(NotFoundError(f"No route for {flask.request.path[:128]}"))
    code = error.name.lower().replace(" ", "_") if status < 500 else "internal"
    message = error.description if status < 500 else "Internal error"
    body = {"error": {"code": code, "message": message, "details": None}}
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    return json_response(body, status, headers)


Handler = Callable[..., flask.Response]


def dispatch(
    request: flask.Request, url_map: Map, handlers: Mapping[str, Handler]
) -> flask.Response:
    """Routes a request and turns every failure into the product's JSON error shape."""
    token = bind_trace(
        trace_from_header(
            request.headers.get("X-Cloud-Trace-Context") or request.headers.get("traceparent"),
            get_settings().gcp_project,
        )
    )
    try:
        return _route(request, url_map, handlers)
    finally:
        unbind_trace(token)


def _route(request: flask.Request, url_map: Map, handlers: Mapping[str, Handler]) -> flask.Response:
    try:
        endpoint, args = url_map.bind_to_environ(request.environ).match()
        return handlers[endpoint](request, **args)
    except NotFound:
        return error_response(NotFoundError(f"No route for {request.path}"))
    except MethodNotAllowed as exc:
        response = error_response(MethodNotAllowedError(f"{request.method} is not allowed here"))
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods or []))
        return response
    except RoutingException:
        # e.g. a redirect to a canonical path: an API client would not follow it anyway.
        return error_response(NotFoundError(f"No route for {request.path}"))
    except ImageGenError as exc:
        if exc.status >= 500:
            log.warning("request failed: %s", exc.message, extra={"code": exc.code})
        return error_response(exc)
    except Exception:
        log.exception("unhandled error")
        return error_response(ImageGenError("Internal error"))
