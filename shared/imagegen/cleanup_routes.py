"""The `cleanup` function: Cloud Scheduler calls it to run one sweep (`imagegen.cleanup`).

`POST /` runs a sweep and answers 200 with its report, whether it finished or stopped at
its time budget (the next run resumes); a sweep another one is running answers 200 with
`skipped: true`. The body is optional: `{"timeBudgetSeconds", "batchSize"}` may only make
a sweep smaller than configured. 401/403 for a caller that is not Cloud Scheduler's service
account (when `CLEANUP_INVOKER` is set), 422 for a body it cannot use. `GET /healthz`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import flask
import pydantic
from pydantic import ConfigDict, Field
from werkzeug.routing import Map, Rule

from imagegen import clients, context
from imagegen.bodies import load_body, problems_from_pydantic, raise_validation
from imagegen.cleanup import MAX_BATCH_SIZE, FirestoreCleanupStore, SweepConfig, Sweeper
from imagegen.models.base import Model
from imagegen.settings import Settings, get_settings
from imagegen.task_auth import authorize_task_call
from imagegen.web import dispatch, json_response, read_body

URL_MAP = Map(
    [
        Rule("/healthz", endpoint="health", methods=["GET"]),
        Rule("/", endpoint="sweep", methods=["POST"]),
    ],
    strict_slashes=False,
)


class SweepRequest(Model):
    """What a caller may ask of one sweep: less time, smaller batches."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    time_budget_seconds: float | None = Field(None, alias="timeBudgetSeconds", ge=0)
    batch_size: int | None = Field(None, alias="batchSize", ge=1, le=MAX_BATCH_SIZE)


def health(_: flask.Request) -> flask.Response:
    return json_response({"status": "ok"})


def _sweep_request(body: bytes) -> SweepRequest:
    # Cloud Scheduler sends its body as application/octet-stream unless told otherwise.
    if not body.strip():
        return SweepRequest()
    try:
        return SweepRequest.model_validate(load_body(body))
    except pydantic.ValidationError as exc:
        raise_validation(problems_from_pydantic(exc))
        raise


def sweep(request: flask.Request) -> flask.Response:
    settings = get_settings()
    authorize_task_call(
        request.headers.get("Authorization"),
        settings.cleanup_invoker,
        settings.cleanup_url.split("?")[0],
    )
    options = _sweep_request(read_body(request, 16 * 1024, require_json=False))
    sweeper = Sweeper(
        FirestoreCleanupStore(clients.firestore_client()),
        context.generations(),
        context.image_store(),
        lambda generation_id: _republish(settings, generation_id),
        SweepConfig.from_settings(
            settings,
            time_budget_seconds=options.time_budget_seconds,
            batch_size=options.batch_size,
        ),
        now=lambda: datetime.now(UTC),
    )
    return json_response(sweeper.run().to_json())


HANDLERS = {"health": health, "sweep": sweep}


def handle(request: flask.Request) -> flask.Response:
    return dispatch(request, URL_MAP, HANDLERS)


def _republish(settings: Settings, generation_id: str) -> None:
    # Imported on use: a sweep that re-publishes nothing never loads the accept path.
    from imagegen.accept import publish_generation

    publish_generation(settings, generation_id)
