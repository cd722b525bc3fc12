"""Each request's life in its own thread: queue wait, "inference", completion, webhook."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from .apps import image_dimensions
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
# fal seeds are 64-bit; keep them positive and within a signed int64.
_SEED_LIMIT = 2**63


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
        # wait() returns True when cancel or discard cut the wait short.
        if job.wake.wait(config.queue_delay):
            self._interrupted(job)
            return
        if job.input_errors:
            self._store.complete(job, failure=validation_failure(job.input_errors))
        else:
            self._store.start(job, f"Generating {job.input['num_images']} image(s)")
            if job.wake.wait(config.inference_delay):
                self._interrupted(job)
                return
            try:
                output, images, image_format = _generate(job)
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
        if job.webhook_url is None or job.discarded.wait(job.config.webhook_delay):
            return
        self._webhooks.deliver(job)


def _generate(job: Job) -> tuple[dict[str, Any], list[bytes], OutputFormat]:
    """The image app's output and the encoded images its URLs point at."""
    args = job.input
    seed = args["seed"] if args["seed"] is not None else secrets.randbelow(_SEED_LIMIT)
    width, height = image_dimensions(args["image_size"])
    fmt = OUTPUT_FORMATS[args["output_format"]]
    images = [
        render_image(
            prompt=args["prompt"],
            seed=seed,
            index=index,
            width=width,
            height=height,
            output_format=args["output_format"],
        )
        for index in range(args["num_images"])
    ]
    started = job.started_at or time.time()
    output = {
        "images": [
            {
                "url": f"{job.base_url}/files/{job.request_id}/{index}.{fmt.extension}",
                "width": width,
                "height": height,
                "content_type": fmt.content_type,
            }
            for index in range(len(images))
        ],
        "seed": seed,
        "has_nsfw_concepts": [False] * len(images),
        "timings": {"inference": round(time.time() - started, 3)},
        "prompt": args["prompt"],
    }
    return output, images, fmt
