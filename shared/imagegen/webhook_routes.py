"""fal.ai's webhook (the `webhook` function): verify, attribute, ingest.

Answers: 200 once the result is recorded, or when there is nothing to do (duplicate,
unknown request: fal must stop retrying); 401 for a bad signature, with nothing changed;
503 for a transient failure, so fal delivers again.
"""

from __future__ import annotations

import flask
import pydantic
from werkzeug.routing import Map, Rule

from imagegen import context, webhook_url
from imagegen.errors import AuthenticationError, BadRequestError
from imagegen.ingest import Collaborators, ingest
from imagegen.models.events import FalWebhook
from imagegen.settings import get_settings
from imagegen.web import dispatch, json_response, read_body

# fal's webhook body carries image URLs, never image bytes.
MAX_WEBHOOK_BYTES = 1024 * 1024

URL_MAP = Map(
    [
        Rule("/healthz", endpoint="health", methods=["GET"]),
        Rule("/", endpoint="receive", methods=["POST"]),
    ],
    strict_slashes=False,
)


def health(_: flask.Request) -> flask.Response:
    return json_response({"status": "ok"})


def receive(request: flask.Request) -> flask.Response:
    settings = get_settings()
    body = read_body(request, MAX_WEBHOOK_BYTES, require_json=False)
    verified = context.webhook_verifier().verify(request.headers, body)
    try:
        webhook = FalWebhook.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise BadRequestError(
            "Webhook body is not a fal webhook",
            code="malformed_webhook",
            details=[e["msg"] for e in exc.errors()][:5],
        ) from None
    if webhook.request_id != verified.request_id:
        raise AuthenticationError(
            "Signed request id does not match the body", code="request_id_mismatch"
        )
    ref = webhook_url.parse(request.args.to_dict(), settings.webhook_hmac_key_bytes())
    outcome = ingest(
        webhook,
        ref,
        Collaborators(context.generations(), context.image_store(), context.image_fetcher()),
    )
    return json_response({"status": outcome.value})


HANDLERS = {"health": health, "receive": receive}


def handle(request: flask.Request) -> flask.Response:
    return dispatch(request, URL_MAP, HANDLERS)
