"""The simulator's HTTP API, independent of the socket server that carries it.

Routes:
  POST {app}                                 submit (``?fal_webhook=URL``)
  GET  {owner}/{alias}/requests/{id}/status  status (``?logs=1``); 202 pending, 200 done
  GET  {owner}/{alias}/requests/{id}         result
  PUT  {owner}/{alias}/requests/{id}/cancel  cancel
  GET  /files/{id}/{index}.{jpg|png}         generated images (public, like fal's CDN)
  GET  /fault-images/{fault}/{id}/{file}     what a request with an image fault points at
  GET  /.well-known/jwks.json                webhook verification key
  GET  /healthz
  GET  /_sim/requests, /_sim/requests/{id}, /_sim/config; POST /_sim/config, /_sim/reset

A ``/_sim/requests`` entry shows the request's arguments, validated input, status, output,
``input_fetches`` (each input URL the app downloaded: kind, URL without its query string,
HTTP status, bytes, error), ``webhook_deliveries`` (every attempt: copy, attempt, time,
HTTP status or error, the signed timestamp and ``signature``: "valid" or the signing fault;
``finished`` once no more will be sent), and the request's faults: ``faults`` (the run's
config with the prompt's markers applied), ``fault_markers`` (those applied, as written),
``fault_marker_errors`` and ``rejected_submits`` (statuses that earlier submits of the same
prompt were refused with by its submit markers). See ``faults`` for the fault modes.

fal hands out request URLs without the endpoint sub-path (``fal-ai/flux/requests/...``
for ``fal-ai/flux/dev``) and fal_client builds them the same way; the full app id is
accepted there too.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from urllib.parse import urlsplit

from . import image_faults
from .apps import get_app
from .config import RuntimeConfig, ValidationMode
from .faults import SubmitCounter, prompt_faults, submit_error_body
from .jobs import Job, JobStore, Status
from .messages import HttpRequest, HttpResponse, json_response
from .runner import JobRunner

__all__ = ["HttpRequest", "HttpResponse", "SimulatorApi", "json_response"]

_NOT_FOUND = json_response(404, {"detail": "Not Found"})


class SimulatorApi:
    def __init__(
        self,
        *,
        config: RuntimeConfig,
        jobs: JobStore,
        runner: JobRunner,
        jwks: dict[str, Any],
        expected_key: str | None,
    ) -> None:
        self._config = config
        self._jobs = jobs
        self._runner = runner
        self._jwks = jwks
        self._expected_key = expected_key
        self._submits = SubmitCounter()

    def handle(self, request: HttpRequest) -> HttpResponse:
        segments = [segment for segment in request.path.split("/") if segment]
        match (request.method, segments):
            case ("GET", ["healthz"]):
                return json_response(200, {"status": "ok"})
            case ("GET", [".well-known", "jwks.json"]):
                return json_response(200, self._jwks)
            case ("GET", ["files", request_id, filename]):
                return self._file(request_id, filename)
            case ("GET", [image_faults.ROUTE, fault, request_id, filename]):
                served = image_faults.serve(
                    fault, request_id, filename, request.query, request.base_url
                )
                return served or _NOT_FOUND
            case (_, ["_sim", *rest]):
                return self._control(request, rest)
            case (_, ["healthz" | ".well-known" | "files" | image_faults.ROUTE, *_]):
                return _NOT_FOUND
        return self._queue(request, segments)

    # -- queue API -------------------------------------------------------------------

    def _queue(self, request: HttpRequest, segments: list[str]) -> HttpResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        if "requests" in segments[2:]:
            at = segments.index("requests", 2)
            return self._request_route(request, "/".join(segments[:at]), segments[at + 1 :])
        if request.method == "POST" and len(segments) >= 2:
            return self._submit(request, "/".join(segments))
        return _NOT_FOUND

    def _authorize(self, request: HttpRequest) -> HttpResponse | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "key" or not key:
            detail = "Missing or malformed Authorization header, expected 'Key <fal key>'"
            return json_response(401, {"detail": detail})
        if self._expected_key is not None and key != self._expected_key:
            return json_response(401, {"detail": "No user found for Key ID and Secret"})
        return None

    def _submit(self, request: HttpRequest, app_id: str) -> HttpResponse:
        arguments, decode_error = _parse_body(request.body)
        prompt = _prompt_of(arguments)
        markers = prompt_faults(prompt)
        if prompt is not None and markers.affects_submit:
            # The prompt's own submit faults replace the run's for this submit.
            failed_status = self._submits.take(prompt, markers)
        else:
            failed_status = self._config.take_submit_error()
        if failed_status is not None:
            body, content_type = submit_error_body(failed_status, prompt)
            return HttpResponse(failed_status, body, content_type)
        app = get_app(app_id)
        if app is None:
            return json_response(404, {"detail": f"Application '{app_id}' not found"})
        webhook_url = request.query.get("fal_webhook")
        if webhook_url is not None and urlsplit(webhook_url).scheme not in ("http", "https"):
            return json_response(400, {"detail": "fal_webhook must be an http(s) URL"})
        if decode_error is not None:
            return decode_error

        config = self._config.current()
        if markers.patch:
            config = dataclasses.replace(config, faults=config.faults.updated(markers.patch))
        values, errors = app.validate(arguments)
        if errors and config.validation is ValidationMode.SUBMIT:
            return json_response(422, {"detail": errors})
        job = Job(
            app=app,
            arguments=arguments,
            input=values,
            input_errors=errors,
            webhook_url=webhook_url,
            base_url=request.base_url,
            config=config,
            fault_markers=markers.applied,
            fault_marker_errors=markers.errors,
            rejected_submits=tuple(self._submits.refused(prompt)) if prompt else (),
        )
        self._jobs.add(job)
        self._runner.launch(job)
        return json_response(
            200,
            {
                "status": Status.IN_QUEUE.value,
                "request_id": job.request_id,
                "gateway_request_id": job.request_id,
                "response_url": job.response_url,
                "status_url": job.status_url,
                "cancel_url": job.cancel_url,
                "queue_position": self._jobs.queue_position(job),
            },
        )

    def _request_route(self, request: HttpRequest, prefix: str, rest: list[str]) -> HttpResponse:
        job = self._jobs.get(rest[0]) if rest else None
        if job is None or job.lost or prefix not in (job.app.route_prefix, job.app.app_id):
            return json_response(404, {"detail": "Request not found"})
        match (request.method, rest[1:]):
            case ("GET", []):
                return self._result(job)
            case ("GET", ["status"]):
                with_logs = request.query.get("logs", "").lower() in ("1", "true")
                return self._status(job, with_logs)
            case ("PUT", ["cancel"]):
                if self._jobs.request_cancel(job):
                    return json_response(202, {"status": "CANCELLATION_REQUESTED"})
                return json_response(400, {"status": "ALREADY_COMPLETED"})
        return _NOT_FOUND

    def _status(self, job: Job, with_logs: bool) -> HttpResponse:
        with self._jobs.lock:
            body: dict[str, Any] = {
                "status": job.status.value,
                "request_id": job.request_id,
                "response_url": job.response_url,
                "status_url": job.status_url,
                "cancel_url": job.cancel_url,
                # fal_client reads "logs" unconditionally for IN_PROGRESS and COMPLETED.
                "logs": list(job.logs) if with_logs else None,
            }
            if job.status is Status.IN_QUEUE:
                body["queue_position"] = self._jobs.queue_position(job)
                return json_response(202, body)
            if job.status is Status.IN_PROGRESS:
                return json_response(202, body)
            body["metrics"] = {"inference_time": job.inference_time}
            if job.failure is not None:
                body["error"] = job.failure.message
                body["error_type"] = job.failure.error_type
            return json_response(200, body)

    def _result(self, job: Job) -> HttpResponse:
        with self._jobs.lock:
            if job.status is not Status.COMPLETED:
                return json_response(400, {"detail": "Request is still in progress"})
            failure = job.failure
            if failure is None:
                return json_response(200, job.output)
        if failure.error_type is None:
            return json_response(failure.http_status, {"detail": failure.detail})
        return json_response(
            failure.http_status,
            {"detail": failure.detail, "error_type": failure.error_type},
            headers=(("X-Fal-Error-Type", failure.error_type),),
        )

    def _file(self, request_id: str, filename: str) -> HttpResponse:
        job = self._jobs.get(request_id)
        stem, _, extension = filename.partition(".")
        if job is None or not stem.isdigit():
            return _NOT_FOUND
        with self._jobs.lock:
            images, image_format = job.images, job.image_format
        index = int(stem)
        if image_format is None or index >= len(images) or extension != image_format.extension:
            return _NOT_FOUND
        return HttpResponse(200, images[index], image_format.content_type)

    # -- test control ----------------------------------------------------------------

    def _control(self, request: HttpRequest, rest: list[str]) -> HttpResponse:
        match (request.method, rest):
            case ("GET", ["requests"]):
                return json_response(200, [self._describe(job) for job in self._jobs.all()])
            case ("GET", ["requests", request_id]):
                job = self._jobs.get(request_id)
                if job is None:
                    return json_response(404, {"detail": "Request not found"})
                return json_response(200, self._describe(job))
            case ("GET", ["config"]):
                return json_response(200, self._config.current().to_json())
            case ("POST", ["config"]):
                try:
                    patch = json.loads(request.body or b"{}")
                    if not isinstance(patch, dict):
                        raise ValueError("expected a JSON object")
                    return json_response(200, self._config.update(patch).to_json())
                except ValueError as exc:  # JSONDecodeError is a ValueError
                    return json_response(400, {"detail": str(exc)})
            case ("POST", ["reset"]):
                self._jobs.discard_all()
                self._submits.reset()
                return json_response(200, self._config.reset().to_json())
        return _NOT_FOUND

    def _describe(self, job: Job) -> dict[str, Any]:
        with self._jobs.lock:
            deliveries = list(job.deliveries)
            failure = job.failure
            return {
                "request_id": job.request_id,
                "app": job.app.app_id,
                "arguments": job.arguments,
                "input": job.input,
                "input_errors": job.input_errors,
                "webhook_url": job.webhook_url,
                "response_url": job.response_url,
                "status_url": job.status_url,
                "cancel_url": job.cancel_url,
                "status": job.status.value,
                "cancel_requested": job.cancel_requested,
                "error": failure.message if failure else None,
                "error_type": failure.error_type if failure else None,
                "output": job.output,
                "submitted_at": job.submitted_at,
                "started_at": job.started_at,
                "completed_at": job.completed_at,
                "input_fetches": [dataclasses.asdict(f) for f in job.input_fetches],
                "faults": job.config.faults.to_json(),
                "fault_markers": list(job.fault_markers),
                "fault_marker_errors": list(job.fault_marker_errors),
                "rejected_submits": list(job.rejected_submits),
                "webhook_deliveries": {
                    "count": len(deliveries),
                    "succeeded": sum(
                        1 for d in deliveries if d.status_code and 200 <= d.status_code < 300
                    ),
                    "last_status": deliveries[-1].status_code if deliveries else None,
                    "last_error": deliveries[-1].error if deliveries else None,
                    "attempts": [dataclasses.asdict(d) for d in deliveries],
                    "finished": job.webhooks_finished,
                },
            }


def _parse_body(body: bytes) -> tuple[Any, HttpResponse | None]:
    """The submitted JSON, or the 422 fal answers for a body that is not JSON."""
    try:
        return (json.loads(body) if body else None), None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        error = {
            "loc": ["body", position],
            "msg": "JSON decode error",
            "type": "json_invalid",
            "input": {},
            "ctx": {"error": str(exc)},
        }
        return None, json_response(422, {"detail": [error]})


def _prompt_of(arguments: Any) -> str | None:
    prompt = arguments.get("prompt") if isinstance(arguments, dict) else None
    return prompt if isinstance(prompt, str) else None
