"""fal.ai's webhook (the `webhook` function): verify, attribute, ingest.

Answers: 200 once the result is recorded, or when there is nothing to do (duplicate,
unknown request: fal must stop retrying); 401 for a bad signature, with nothing changed;
503 for a transient failure, so fal delivers again.
"""

from __future__ import annotations

import contextvars
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import flask
import pydantic
from werkzeug.routing import Map, Rule

from imagegen import context, webhook_url
from imagegen.errors import AuthenticationError, BadRequestError
from imagegen.ingest import Collaborators, ingest
from imagegen.models.events import FalWebhook
from imagegen.settings import get_settings
from imagegen.web import dispatch, json_response, read_body

log = logging.getLogger(__name__)
# Copies run on these threads, so the request can answer fal in time however long they take.
_copiers = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ingest")

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
    verified = context.webhook_verifier().verify(dict(request.headers.items()), body)
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
    collaborators = Collaborators(
        context.generations(), context.image_store(), context.image_fetcher()
    )
    # The copy logs under this request's trace: the worker thread runs in its context.
    # fal waits for the answer: the images download while the part is being claimed.
    run = contextvars.copy_context().run
    work = _copiers.submit(run, ingest, webhook, ref, collaborators, prefetch=True)
    try:
        outcome = work.result(timeout=settings.webhook_ingest_budget_seconds)
    except FutureTimeout:
        return _hand_off(webhook, ref, collaborators, work)
    return json_response({"status": outcome.value})


def _log_late_failure(work: Future[Any]) -> None:
    """A handed-off copy that fails is taken over by the watchdog; it must still be seen."""
    if not work.cancelled() and work.exception() is not None:
        log.error("handed-off copy failed", exc_info=work.exception())


def _hand_off(
    webhook: FalWebhook,
    ref: webhook_url.PartRef | None,
    collaborators: Collaborators,
    work: Future[Any],
) -> flask.Response:
    """fal waits 15 s for an answer. The copy goes on here while it can; an immediate
    watchdog check takes over if this instance stops (it fetches the result from fal and
    ingests it through the same code path), so answering 200 now loses nothing."""
    located = ref
    if located is None:
        found = collaborators.repo.find_fal_request(webhook.request_id)
        located = webhook_url.PartRef(found.generation_id, found.part_index) if found else None
    generation = collaborators.repo.get(located.generation_id) if located else None
    if located is not None and generation is not None:
        context.watchdog().schedule(
            generation, located.part_index, webhook.request_id, delay=0, kind="handoff"
        )
    log.warning("copy handed off to the watchdog", extra={"falRequestId": webhook.request_id})
    work.add_done_callback(_log_late_failure)
    return json_response({"status": "deferred"})


HANDLERS = {"health": health, "receive": receive}


def handle(request: flask.Request) -> flask.Response:
    return dispatch(request, URL_MAP, HANDLERS)
