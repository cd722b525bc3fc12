"""Each request's life in its own thread.

Queue wait, then IN_PROGRESS: download the input URLs (LoRAs, input image; a failure
completes the request with fal's 422), "inference", completion, webhook. Everything
app-specific comes from the request's ``AppSpec``; the request's faults (outcome
``status_error`` / ``lost``, image faults, NSFW) from its ``config.faults``.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from typing import Any

from .apps import FetchKind
from .faults import Outcome
from .image_faults import image_url
from .inputs import FetchedInputs, fetch_inputs
from .jobs import CANCELLED, Failure, Job, JobStore, validation_failure
from .render import OUTPUT_FORMATS, OutputFormat, render_image
from .webhooks import WebhookSender

log = logging.getLogger(__name__)

_RENDER_FAILED = Failure(
    http_status=500,
    message="Simulator failed to render the output",
    detail="Simulator failed to render the output",
    error_type="internal_error",
)
# Fault outcome "status_error": the app raised while generating.
_APP_FAILED = Failure(
    http_status=500,
    message="Simulated app failure (fault status_error)",
    detail="The model raised an error while generating the image (simulated: status_error)",
)
# fal seeds are 64-bit; keep them positive and within a signed int64.
_SEED_LIMIT = 2**63
# A prompt with this token gets every image flagged NSFW (as does the "nsfw" config key).
NSFW_TEST_TOKEN = re.compile(r"(?<![\w-])nsfw-test(?![\w-])", re.IGNORECASE)


class JobRunner:
    def __init__(self, store: JobStore, webhooks: WebhookSender) -> None:
        self._store = store
        self._webhooks = webhooks

    def launch(self, job: Job) -> None:
        threading.Thread(
            target=self._run, args=(job,), name=f"falsim-{job.request_id[:8]}", daemon=True
        ).start()

    def _run(self, job: Job) -> None:
        config = job.config
        if job.lost:
            # Accepted, then never heard of again: no progress, no webhook.
            self._store.finish_webhooks(job)
            return
        # wait() returns True when cancel or discard cut the wait short.
        if job.wake.wait(config.queue_delay):
            self._interrupted(job)
            return
        if job.input_errors:
            self._store.complete(job, failure=validation_failure(job.input_errors))
            self._notify(job)
            return
        self._store.start(job, f"Generating {job.input['num_images']} image(s)")
        fetched = fetch_inputs(
            job.app.input_urls(job.input),
            record=lambda fetch, message: self._store.record_fetch(job, fetch, message),
            stop=job.wake,
        )
        if job.wake.is_set():
            self._interrupted(job)
            return
        if fetched.failure is not None:
            self._store.complete(job, failure=fetched.failure)
        elif job.wake.wait(config.inference_delay):
            self._interrupted(job)
            return
        elif config.faults.outcome is Outcome.STATUS_ERROR:
            self._store.complete(job, failure=_APP_FAILED)
        else:
            try:
                output, images, image_format = _generate(job, fetched)
            except Exception:
                log.exception("rendering %s failed", job.request_id)
                self._store.complete(job, failure=_RENDER_FAILED)
            else:
                self._store.complete(job, output=output, images=images, image_format=image_format)
        self._notify(job)

    def _interrupted(self, job: Job) -> None:
        if job.discarded.is_set():
            return
        self._store.complete(job, failure=CANCELLED)
        self._notify(job)

    def _notify(self, job: Job) -> None:
        try:
            if job.webhook_url is None or job.discarded.wait(job.config.webhook_delay):
                return
            self._webhooks.deliver(job)
        finally:
            self._store.finish_webhooks(job)


def _generate(job: Job, fetched: FetchedInputs) -> tuple[dict[str, Any], list[bytes], OutputFormat]:
    """The image app's output and the encoded images its URLs point at."""
    app, args = job.app, job.input
    seed = args["seed"] if args["seed"] is not None else secrets.randbelow(_SEED_LIMIT)
    input_size = fetched.image.size if fetched.image is not None else None
    width, height = app.output_size(args, input_size)
    format_name = args[app.format_field]
    fmt = OUTPUT_FORMATS[format_name]
    faults = job.config.faults
    nsfw = faults.nsfw or bool(NSFW_TEST_TOKEN.search(args["prompt"]))
    notes = _notes(app.fetch_kinds, fetched, nsfw)
    images = [
        render_image(
            prompt=args["prompt"],
            seed=seed,
            index=index,
            width=width,
            height=height,
            output_format=format_name,
            notes=notes,
            inset=fetched.image,
        )
        for index in range(args["num_images"])
    ]
    started = job.started_at or time.time()
    output = {
        "images": [
            {
                "url": image_url(job.base_url, job.request_id, index, fmt.extension, faults),
                "width": width,
                "height": height,
                "content_type": fmt.content_type,
            }
            for index in range(len(images))
        ],
        "seed": seed,
        # fal flags each image separately; the simulator flags all or none.
        "has_nsfw_concepts": [nsfw] * len(images),
        "timings": {"inference": round(time.time() - started, 3)},
        "prompt": args["prompt"],
    }
    return output, images, fmt


def _notes(kinds: frozenset[FetchKind], fetched: FetchedInputs, nsfw: bool) -> list[str]:
    """Caption lines showing what the request used, for a person looking at the image."""
    notes = []
    if FetchKind.LORA in kinds:
        notes.append(f"loras: {fetched.counts.get(FetchKind.LORA, 0)}")
    if fetched.image is not None:
        notes.append("input image: {}x{}".format(*fetched.image.size))
    if nsfw:
        notes.append("NSFW flagged")
    return notes
