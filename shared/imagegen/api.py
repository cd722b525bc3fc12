"""The `api` function's router: every resource module's rules in one map."""

from __future__ import annotations

import flask
from werkzeug.routing import Map

from imagegen.routes import admin, batches, generations, health, loras, models, usage
from imagegen.web import dispatch

MODULES = (health, generations, batches, models, loras, usage, admin)

URL_MAP = Map(
    [rule for module in MODULES for rule in module.RULES],
    strict_slashes=False,
    merge_slashes=False,
)
HANDLERS = {name: handler for module in MODULES for name, handler in module.HANDLERS.items()}
assert len(HANDLERS) == sum(len(m.HANDLERS) for m in MODULES), "endpoint names must be unique"


def handle(request: flask.Request) -> flask.Response:
    return dispatch(request, URL_MAP, HANDLERS)
