from __future__ import annotations

import flask

from imagegen.models.base import ResponseModel
from imagegen.openapi import Operation
from imagegen.web import json_response


class Health(ResponseModel):
    status: str


OPERATIONS = [
    Operation("GET", "/healthz", "Liveness check", "meta", auth="none", responses={200: Health})
]


def health(_: flask.Request) -> flask.Response:
    return json_response({"status": "ok"})


HANDLERS = {"health": health}
