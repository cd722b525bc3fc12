"""The one place that talks to fal.ai's queue API, through the official fal_client.

fal errors are sorted here into the product's two kinds: transient ones (rate limits,
server errors, timeouts, connection failures) become `RetryableError` so the Pub/Sub
delivery is retried; everything else fal refuses becomes `UpstreamRejectedError`, which
fails the generation with fal's own reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from imagegen.errors import RetryableError, UpstreamRejectedError

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
IN_CALL_ATTEMPTS = 2


@dataclass(frozen=True)
class Submission:
    request_id: str


class CancelOutcome(StrEnum):
    # fal accepted the cancellation (202): no result will be produced.
    REQUESTED = "requested"
    # fal answered 400 ALREADY_COMPLETED: the result exists and its webhook is on its way.
    ALREADY_COMPLETED = "already_completed"
    # fal does not know the request (404): nothing is running.
    NOT_FOUND = "not_found"


def _cancel_refusal(exc: Any) -> str | None:
    """fal's `status` in a refused cancel's body (e.g. ALREADY_COMPLETED)."""
    try:
        body = exc.response.json()
    except ValueError:
        return None
    return body.get("status") if isinstance(body, dict) else None


def describe_fal_detail(detail: Any) -> str:
    """fal's 422 detail is a list of {loc, msg, type}; make it one readable sentence."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}".strip(": "))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, str):
        return detail
    return json.dumps(detail)[:500]


class FalGateway:
    def __init__(self, key: str, timeout_seconds: float) -> None:
        self._key = key
        self._timeout = timeout_seconds
        self._client = None

    def _sync_client(self):  # noqa: ANN202 - fal_client is imported lazily
        if self._client is None:
            import fal_client

            # Retrying belongs to Pub/Sub and Cloud Tasks (with backoff, then a dead letter):
            # fal_client's own ten in-call attempts would hold one delivery for ~40 s and
            # outlive the part's submit lease.
            fal_client.client.MAX_ATTEMPTS = IN_CALL_ATTEMPTS
            self._client = fal_client.SyncClient(key=self._key, default_timeout=self._timeout)
        return self._client

    def submit(self, app: str, arguments: dict[str, Any], webhook_url: str) -> Submission:
        import fal_client
        import httpx

        try:
            handle = self._sync_client().submit(app, arguments, webhook_url=webhook_url)
        except fal_client.client.FalClientHTTPError as exc:
            status = exc.status_code
            if status >= 500 or status in TRANSIENT_STATUSES:
                raise RetryableError(
                    f"fal.ai answered {status}", code="fal_unavailable", details={"status": status}
                ) from None
            raise UpstreamRejectedError(
                describe_fal_detail(exc.message) or f"fal.ai refused the request ({status})",
                code="fal_rejected",
                details={"status": status, "detail": exc.message},
            ) from None
        except (httpx.TransportError, fal_client.client.FalClientTimeoutError) as exc:
            raise RetryableError(
                f"fal.ai unreachable: {type(exc).__name__}", code="fal_unreachable"
            ) from None
        return Submission(request_id=handle.request_id)

    def cancel(self, app: str, request_id: str) -> CancelOutcome:
        """PUTs the request's cancel_url at fal; transient failures raise RetryableError,
        any other refusal UpstreamRejectedError."""
        import fal_client
        import httpx

        try:
            self._sync_client().cancel(app, request_id)
        except fal_client.client.FalClientHTTPError as exc:
            status = exc.status_code
            if status == 400 and _cancel_refusal(exc) == "ALREADY_COMPLETED":
                return CancelOutcome.ALREADY_COMPLETED
            if status == 404:
                return CancelOutcome.NOT_FOUND
            if status >= 500 or status in TRANSIENT_STATUSES:
                raise RetryableError(
                    f"fal.ai answered {status} to a cancel",
                    code="fal_unavailable",
                    details={"status": status},
                ) from None
            raise UpstreamRejectedError(
                f"fal.ai refused to cancel ({status}): {describe_fal_detail(exc.message)}"[:500],
                code="fal_rejected",
                details={"status": status},
            ) from None
        except (httpx.TransportError, fal_client.client.FalClientTimeoutError) as exc:
            raise RetryableError(
                f"fal.ai unreachable: {type(exc).__name__}", code="fal_unreachable"
            ) from None
        return CancelOutcome.REQUESTED

    def status(self, app: str, request_id: str) -> FalStatus:
        """Where fal's queue says a request is (the watchdog's question)."""
        import fal_client

        try:
            status = self._sync_client().status(app, request_id, with_logs=False)
        except fal_client.client.FalClientHTTPError as exc:
            if exc.status_code == 404:
                return FalStatus(FalState.LOST)
            raise _classify(exc, "a status request") from None
        except Exception as exc:
            raise _classify(exc, "a status request") from None
        if isinstance(status, fal_client.Queued):
            return FalStatus(FalState.QUEUED)
        if isinstance(status, fal_client.InProgress):
            return FalStatus(FalState.RUNNING)
        return FalStatus(FalState.COMPLETED, getattr(status, "error", None))

    def result(self, app: str, request_id: str) -> dict[str, Any]:
        """A completed request's output, fetched from fal (when its webhook never came)."""
        import fal_client

        client = self._sync_client()
        try:
            response = client._client.get(client.get_handle(app, request_id).response_url)
            fal_client.client._raise_for_status(response)
            return response.json()
        except Exception as exc:
            raise _classify(exc, "a result request") from None


class FalState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    LOST = "lost"  # fal answers 404: it has no such request


@dataclass(frozen=True)
class FalStatus:
    state: FalState
    error: str | None = None


def _classify(exc: Exception, action: str) -> Exception:
    """fal_client's errors as the product's: transient → RetryableError, else rejected."""
    import fal_client
    import httpx

    if isinstance(exc, fal_client.client.FalClientHTTPError):
        status = exc.status_code
        if status >= 500 or status in TRANSIENT_STATUSES:
            return RetryableError(f"fal.ai answered {status} to {action}", code="fal_unavailable")
        return UpstreamRejectedError(
            f"fal.ai refused {action} ({status}): {describe_fal_detail(exc.message)}"[:500],
            code="fal_rejected",
        )
    if isinstance(exc, httpx.TransportError | fal_client.client.FalClientTimeoutError):
        return RetryableError(f"fal.ai unreachable: {type(exc).__name__}", code="fal_unreachable")
    return exc
