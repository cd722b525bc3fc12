"""Queued requests and their state, shared between the HTTP threads and the job threads."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .apps import AppSpec, ErrorDetail
from .config import SimConfig
from .faults import Outcome
from .render import OutputFormat


class Status(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


@dataclass(frozen=True)
class Failure:
    """Why a request completed without output, in the three places fal reports it."""

    http_status: int  # of GET .../requests/{id}
    message: str  # "error" in the status response and the webhook
    detail: Any  # "detail" of the result body and of the webhook payload
    error_type: str | None = None


CANCELLED = Failure(
    http_status=400, message="Request was cancelled", detail="Request was cancelled"
)


def validation_failure(errors: list[ErrorDetail]) -> Failure:
    """Bad input, or input the app could not use (a URL it failed to download).

    fal reports both as the app's 422: the status and webhook ``error`` only say so, the
    result and webhook payload carry the per-field ``detail``.
    """
    return Failure(http_status=422, message="Invalid status code: 422", detail=errors)


@dataclass(frozen=True)
class DeliveryAttempt:
    copy: int  # which delivery (webhook modes "twice", "burst"... make several)
    attempt: int
    at: float  # when the answer (or the error) came
    status_code: int | None
    error: str | None
    timestamp: int  # the X-Fal-Webhook-Timestamp it carried
    # "valid", or the webhook fault it carried: "bad_signature" | "stale_timestamp" |
    # "unknown_key"
    signature: str = "valid"


@dataclass(frozen=True)
class InputFetch:
    """One download of an input URL (LoRA weights, an input image) by "the app"."""

    kind: str  # FetchKind value: "lora" | "image"
    url: str  # without query string or credentials: signed URLs carry a signature
    status: int | None  # HTTP status, None if no response (or a data: URI)
    bytes: int  # body bytes received
    error: str | None


@dataclass(eq=False)
class Job:
    app: AppSpec
    arguments: Any  # the body as submitted
    input: dict[str, Any]  # validated, defaults filled in
    input_errors: list[ErrorDetail]  # non-empty only in deferred validation mode
    webhook_url: str | None
    base_url: str  # scheme://host:port the client reached us at
    config: SimConfig
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    submitted_at: float = field(default_factory=time.time)
    status: Status = Status.IN_QUEUE
    started_at: float | None = None
    completed_at: float | None = None
    output: dict[str, Any] | None = None
    images: list[bytes] = field(default_factory=list)
    image_format: OutputFormat | None = None
    failure: Failure | None = None
    logs: list[dict[str, str]] = field(default_factory=list)
    deliveries: list[DeliveryAttempt] = field(default_factory=list)
    input_fetches: list[InputFetch] = field(default_factory=list)
    cancel_requested: bool = False
    # The request's fault markers (as written) and those ignored, with why.
    fault_markers: tuple[str, ...] = ()
    fault_marker_errors: tuple[str, ...] = ()
    # Statuses of earlier submits of the same prompt refused by its submit markers.
    rejected_submits: tuple[int, ...] = ()
    # True once the simulator will send no more webhooks for this request.
    webhooks_finished: bool = False
    # Set by cancel or discard: cuts the queue/inference waits short.
    wake: threading.Event = field(default_factory=threading.Event)
    # Set by discard only: also stops webhook delivery, which cancel must not.
    discarded: threading.Event = field(default_factory=threading.Event)

    @property
    def response_url(self) -> str:
        return f"{self.base_url}/{self.app.route_prefix}/requests/{self.request_id}"

    @property
    def status_url(self) -> str:
        return f"{self.response_url}/status"

    @property
    def cancel_url(self) -> str:
        return f"{self.response_url}/cancel"

    @property
    def lost(self) -> bool:
        """fal "lost" it after accepting it: unknown to the queue API, never completes."""
        return self.config.faults.outcome is Outcome.LOST

    @property
    def inference_time(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return round(self.completed_at - self.started_at, 3)


class JobStore:
    """All requests since start (or the last reset).

    Readers hold ``lock`` while reading a job's mutable fields, to see them consistent.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        # Reentrant so a reader holding it can still call queue_position().
        self.lock = threading.RLock()

    def add(self, job: Job) -> None:
        with self.lock:
            self._jobs[job.request_id] = job

    def get(self, request_id: str) -> Job | None:
        with self.lock:
            return self._jobs.get(request_id)

    def all(self) -> list[Job]:
        with self.lock:
            return list(self._jobs.values())

    def queue_position(self, job: Job) -> int:
        """Requests submitted earlier that are still waiting (fal's position is 0-based)."""
        with self.lock:
            return sum(
                1
                for other in self._jobs.values()
                if other.status is Status.IN_QUEUE
                and not other.lost
                and other.submitted_at < job.submitted_at
            )

    def start(self, job: Job, log_message: str) -> None:
        with self.lock:
            if job.status is Status.IN_QUEUE:
                job.status = Status.IN_PROGRESS
                job.started_at = time.time()
                job.logs.append(_log(log_message))

    def complete(
        self,
        job: Job,
        *,
        output: dict[str, Any] | None = None,
        images: list[bytes] | None = None,
        image_format: OutputFormat | None = None,
        failure: Failure | None = None,
    ) -> bool:
        """Move to COMPLETED; False if it already was. A pending cancel wins over output."""
        with self.lock:
            if job.status is Status.COMPLETED:
                return False
            if job.cancel_requested:
                output, images, image_format, failure = None, None, None, CANCELLED
            job.status = Status.COMPLETED
            job.completed_at = time.time()
            if job.started_at is None:
                job.started_at = job.completed_at
            job.output = output
            job.images = images or []
            job.image_format = image_format
            job.failure = failure
            job.logs.append(_log(failure.message if failure else "Request completed"))
            return True

    def request_cancel(self, job: Job) -> bool:
        """False if the request already completed."""
        with self.lock:
            if job.status is Status.COMPLETED:
                return False
            job.cancel_requested = True
        job.wake.set()
        return True

    def record_fetch(self, job: Job, fetch: InputFetch, log_message: str) -> None:
        with self.lock:
            job.input_fetches.append(fetch)
            job.logs.append(_log(log_message))

    def record_delivery(self, job: Job, attempt: DeliveryAttempt) -> None:
        with self.lock:
            job.deliveries.append(attempt)

    def finish_webhooks(self, job: Job) -> None:
        with self.lock:
            job.webhooks_finished = True

    def discard_all(self) -> None:
        """Forget every request and stop its thread, so nothing leaks into the next test."""
        with self.lock:
            jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            job.discarded.set()
            job.wake.set()


def _log(message: str) -> dict[str, str]:
    return {
        "message": message,
        "level": "INFO",
        "source": "user",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
    }
