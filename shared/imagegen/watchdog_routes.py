"""The `watchdog` function: Cloud Tasks calls it to check on a fal request.

200 ends the task (whatever the verdict); 503 makes Cloud Tasks retry it with the queue's
backoff; 401/403 for a caller that is not Cloud Tasks; 400/422 for a body that can never
be handled (Cloud Tasks retries those too, so they are logged loudly).
"""

from __future__ import annotations

import flask
from werkzeug.routing import Map, Rule

from imagegen import context
from imagegen.bodies import parse_body
from imagegen.ingest import Collaborators
from imagegen.settings import get_settings
from imagegen.task_auth import authorize_task_call
from imagegen.watchdog import WatchdogCheck, run_check
from imagegen.web import dispatch, json_response, read_body

URL_MAP = Map(
    [
        Rule("/healthz", endpoint="health", methods=["GET"]),
        Rule("/", endpoint="check", methods=["POST"]),
    ],
    strict_slashes=False,
)


def health(_: flask.Request) -> flask.Response:
    return json_response({"status": "ok"})


def check(request: flask.Request) -> flask.Response:
    settings = get_settings()
    authorize_task_call(
        request.headers.get("Authorization"),
        settings.watchdog_invoker,
        settings.watchdog_url.split("?")[0],
    )
    task = parse_body(WatchdogCheck, read_body(request, 16 * 1024))
    verdict = run_check(
        task,
        Collaborators(context.generations(), context.image_store(), context.image_fetcher()),
        context.fal_gateway(),
        context.watchdog(),
        settings,
    )
    return json_response({"verdict": verdict.value})


HANDLERS = {"health": health, "check": check}


def handle(request: flask.Request) -> flask.Response:
    return dispatch(request, URL_MAP, HANDLERS)
