"""Delivering fal-style signed webhooks, with retries, and recording every attempt."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .jobs import DeliveryAttempt, Job, JobStore
from .signing import sign_webhook

USER_ID = "sim-user"
_TIMEOUT_SECONDS = 10.0

log = logging.getLogger(__name__)


def webhook_payload(job: Job) -> dict[str, Any]:
    body: dict[str, Any] = {"request_id": job.request_id, "gateway_request_id": job.request_id}
    if job.failure is None:
        return {**body, "status": "OK", "payload": job.output, "error": None}
    return {
        **body,
        "status": "ERROR",
        "payload": {"detail": job.failure.detail},
        "error": job.failure.message,
    }


class WebhookSender:
    def __init__(self, private_key: Ed25519PrivateKey, store: JobStore, user_id: str = USER_ID):
        self._private_key = private_key
        self._store = store
        self._user_id = user_id
        # Targets are local receivers: environment proxies must not capture 127.0.0.1.
        self._client = httpx.Client(timeout=_TIMEOUT_SECONDS, trust_env=False)

    def deliver(self, job: Job) -> None:
        """Send the completed job's webhook as its fault mode says; blocks through retries."""
        if job.webhook_url is None:
            return
        body = json.dumps(webhook_payload(job)).encode()
        for copy in range(job.config.faults.webhook.copies):
            self._deliver_copy(job, job.webhook_url, body, copy)

    def close(self) -> None:
        self._client.close()

    def _deliver_copy(self, job: Job, url: str, body: bytes, copy: int) -> None:
        attempts = job.config.webhook_attempts
        for attempt in range(1, attempts + 1):
            if job.discarded.is_set():
                return
            # Signed afresh per attempt: a retry carries a new timestamp, as fal's do.
            headers = {
                "Content-Type": "application/json",
                **sign_webhook(self._private_key, job.request_id, self._user_id, body),
            }
            status_code: int | None = None
            error: str | None = None
            try:
                status_code = self._client.post(url, content=body, headers=headers).status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self._store.record_delivery(
                job, DeliveryAttempt(copy, attempt, time.time(), status_code, error)
            )
            if status_code is not None and 200 <= status_code < 300:
                return
            log.warning(
                "webhook %s attempt %d/%d to %s failed: %s",
                job.request_id,
                attempt,
                attempts,
                url,
                error or f"HTTP {status_code}",
            )
            backoff = job.config.webhook_backoff * 2 ** (attempt - 1)
            if attempt < attempts and job.discarded.wait(backoff):
                return
