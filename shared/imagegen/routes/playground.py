"""The web playground: a static page (`GET /`) and its assets (`GET /assets/<name>`), served
from `imagegen/static/` with no build step and no CDN. (Not under `/static/`: the Functions
Framework's Flask app answers that prefix itself, before the function sees the request.)
The page talks to this API with the API key the user pastes; the same files also work
deployed as plain static files (index.html at the root, the rest under assets/; the page's
sign-in then takes the API's URL).

Only the flat files of that folder are served: a name with a slash, a dot-dot, or a suffix
outside CONTENT_TYPES is a 404, so no path can reach anything else on the disk."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import flask
from pydantic import BaseModel

from imagegen.errors import NotFoundError
from imagegen.openapi import Operation

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}")
# The page itself is revalidated every time (a deploy shows at once); the assets for an hour
# at most, and revalidated cheaply with their ETag.
PAGE_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=3600, must-revalidate"
# Scripts, styles and calls only from here; images also from the signed storage URLs.
CSP = (
    "default-src 'self'; img-src 'self' data: blob: http: https:; "
    "connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

# HTML, JavaScript and CSS rather than JSON: the 200 names no schema.
PAGE_RESPONSES: dict[int, type[BaseModel] | None] = {200: None}
OPERATIONS = [
    Operation(
        "GET", "/", "The web playground (HTML)", "playground", "none", responses=PAGE_RESPONSES
    ),
    Operation(
        "GET",
        "/assets/<path:name>",
        "The playground's scripts and styles",
        "playground",
        "none",
        responses=PAGE_RESPONSES,
    ),
]


def static_file(name: str) -> Path:
    """The file `name` names in STATIC_DIR, or NotFoundError for anything else."""
    if (
        not SAFE_NAME.fullmatch(name)
        or ".." in name
        or Path(name).suffix.lower() not in CONTENT_TYPES
    ):
        raise NotFoundError(f"No file /assets/{name}")
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR or not path.is_file():
        raise NotFoundError(f"No file /assets/{name}")
    return path


def _serve(request: flask.Request, path: Path, cache_control: str) -> flask.Response:
    body = path.read_bytes()
    response = flask.Response(body, status=200, content_type=CONTENT_TYPES[path.suffix.lower()])
    response.headers["Cache-Control"] = cache_control
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if path.suffix == ".html":
        response.headers["Content-Security-Policy"] = CSP
    response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    response.make_conditional(request)  # 304 when the ETag matches; the same object
    return response


def playground_page(request: flask.Request) -> flask.Response:
    return _serve(request, static_file("index.html"), PAGE_CACHE)


def playground_asset(request: flask.Request, name: str) -> flask.Response:
    return _serve(request, static_file(name), ASSET_CACHE)


HANDLERS = {"playground_page": playground_page, "playground_asset": playground_asset}
