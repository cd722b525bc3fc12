"""GET /openapi.json: the API description, generated from the code (imagegen.openapi)."""

from __future__ import annotations

import flask

from imagegen import openapi
from imagegen.web import json_response

OPERATIONS = [
    openapi.Operation(
        "GET", "/openapi.json", "This document", "meta", auth="none", responses={200: None}
    ),
]


def openapi_document(_: flask.Request) -> flask.Response:
    return json_response(openapi.document())


HANDLERS = {"openapi_document": openapi_document}
