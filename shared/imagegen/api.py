"""The `api` function's router: every resource module's rules in one map, and their
operations in one API description."""

from __future__ import annotations

import flask
from werkzeug.routing import Map

from imagegen.openapi import Operation
from imagegen.routes import (
    admin,
    aliases,
    batches,
    generations,
    health,
    loras,
    models,
    openapi_doc,
    playground,
    usage,
)
from imagegen.web import dispatch

MODULES = (
    health,
    openapi_doc,
    generations,
    batches,
    models,
    loras,
    usage,
    admin,
    aliases,
    playground,
)

URL_MAP = Map(
    [rule for module in MODULES for rule in module.RULES],
    strict_slashes=False,
    merge_slashes=False,
)
HANDLERS = {name: handler for module in MODULES for name, handler in module.HANDLERS.items()}
assert len(HANDLERS) == sum(len(m.HANDLERS) for m in MODULES), "endpoint names must be unique"
OPERATIONS: list[Operation] = [op for m in MODULES for op in getattr(m, "OPERATIONS", [])]


def handle(request: flask.Request) -> flask.Response:
    return dispatch(request, URL_MAP, HANDLERS)
