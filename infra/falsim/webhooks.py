"""Delivering fal-style signed webhooks, with retries, and recording every attempt.

How many copies go out, when, and how they are signed follows the request's webhook mode
(``faults.WebhookMode``); fal signs at send time, so each attempt is signed afresh except
where a mode's point is one fixed signature (a burst of identical deliveries, two copies
arriving in the wrong order).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .faults import WebhookMode
from .jobs import DeliveryAttempt, Job, JobStore
from .signing import HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_webhook

USER_ID = "sim-user"
_TIMEOUT_SECONDS = 10.0
# webhook mode "stale_timestamp": how old the signed timestamp is.
STALE_SECONDS = 600
# The modes whose every delivery is invalid on purpose: the value recorded for them.
_BAD_SIGNING = (WebhookMode.BAD_SIGNATURE, WebhookMode.STALE_TIMESTAMP, WebhookMode.UNKNOWN_KEY)

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
        # Signs mode "unknown_key": a valid ED25519 key that no JWKS ever publishes.
        self._unknown_key = Ed25519PrivateKey.generate()
        self._store = store
        self._user_id = user_id
        # Targets are local receivers: environment proxies must not capture 127.0.0.1.
        # No connection cap: a burst's deliveries must really go out at once.
        self._client = httpx.Client(
            timeout=_TIMEOUT_SECONDS,
            trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        )

    def deliver(self, job: Job) -> None:
        """Send the completed job's webhook as its mode says; blocks through retries."""
        url = job.webhook_url
        if url is None:
            return
        faults = job.config.faults
        body = json.dumps(webhook_payload(job)).encode()
        match faults.webhook:
            case WebhookMode.NONE:
                return
            case WebhookMode.TWICE:
                for copy in range(2):
                    self._deliver_copy(job, url, body, copy)
            case WebhookMode.LATE:
                if not job.discarded.wait(faults.webhook_late):
                    self._deliver_copy(job, url, body, 0)
            case WebhookMode.BURST:
                self._burst(job, url, body, faults.webhook_burst)
            case WebhookMode.OUT_OF_ORDER:
                older = self._sign(job, body)
                # Timestamps are whole seconds: the newer copy is signed in the next one.
                now = time.time()
                if job.discarded.wait(math.floor(now) + 1 - now + 0.01):
                    return
                newer = self._sign(job, body)
                self._deliver_copy(job, url, body, 0, newer)
                self._deliver_copy(job, url, body, 1, older)
            case _:  # normal, and the three invalid signings
                self._deliver_copy(job, url, body, 0)

    def close(self) -> None:
        self._client.close()

    def _sign(self, job: Job, body: bytes) -> dict[str, str]:
        mode = job.config.faults.webhook
        key = self._unknown_key if mode is WebhookMode.UNKNOWN_KEY else self._private_key
        timestamp = None
        if mode is WebhookMode.STALE_TIMESTAMP:
            timestamp = int(time.time()) - STALE_SECONDS
        headers = sign_webhook(key, job.request_id, self._user_id, body, timestamp=timestamp)
        if mode is WebhookMode.BAD_SIGNATURE:
            signature = bytes.fromhex(headers[HEADER_SIGNATURE])
            headers[HEADER_SIGNATURE] = bytes(byte ^ 0xFF for byte in signature).hex()
        return {"Content-Type": "application/json", **headers}

    def _burst(self, job: Job, url: str, body: bytes, count: int) -> None:
        """``count`` deliveries of one signed webhook, released together."""
        signed = self._sign(job, body)
        start = threading.Barrier(count)

        def one(copy: int) -> None:
            # Broken (a thread failed to start in time): send anyway.
            with contextlib.suppress(threading.BrokenBarrierError):
                start.wait(timeout=5)
            self._deliver_copy(job, url, body, copy, signed)

        threads = [
            threading.Thread(target=one, args=(copy,), name=f"falsim-burst-{copy}", daemon=True)
            for copy in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _deliver_copy(
        self, job: Job, url: str, body: bytes, copy: int, signed: dict[str, str] | None = None
    ) -> None:
        """One delivery with retries; ``signed`` headers are reused, else each try signs anew."""
        attempts = job.config.webhook_attempts
        mode = job.config.faults.webhook
        signature = mode.value if mode in _BAD_SIGNING else "valid"
        for attempt in range(1, attempts + 1):
            if job.discarded.is_set():
                return
            headers = signed or self._sign(job, body)
            status_code: int | None = None
            error: str | None = None
            try:
                status_code = self._client.post(url, content=body, headers=headers).status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self._store.record_delivery(
                job,
                DeliveryAttempt(
                    copy,
                    attempt,
                    time.time(),
                    status_code,
                    error,
                    timestamp=int(headers[HEADER_TIMESTAMP]),
                    signature=signature,
                ),
            )
            if status_code is not None and 200 <= status_code < 300:
                return
            log.warning(
                "webhook %s copy %d attempt %d/%d to %s failed: %s",
                job.request_id,
                copy,
                attempt,
                attempts,
                url,
                error or f"HTTP {status_code}",
            )
            backoff = job.config.webhook_backoff * 2 ** (attempt - 1)
            if attempt < attempts and job.discarded.wait(backoff):
                return
