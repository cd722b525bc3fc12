from __future__ import annotations

import flask
from werkzeug.routing import Rule

from imagegen.web import json_response

RULES = [Rule("/healthz", endpoint="health", methods=["GET"])]


def health(_: flask.Request) -> flask.Response:
    return json_response({"status": "ok"})


HANDLERS = {"health": health}
