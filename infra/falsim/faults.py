"""Fault modes: ways the simulator can misbehave on purpose, set through ``/_sim/config``.

A mode is a field of ``Faults`` plus a parser in ``_PARSERS``; ``Faults.updated`` applies
a partial JSON patch, so adding a mode touches only this module and the code that acts
on it. Like the rest of the configuration, a request keeps the faults current at its
submit (``Job.config``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class WebhookMode(StrEnum):
    NONE = "none"
    NORMAL = "normal"
    TWICE = "twice"

    @property
    def copies(self) -> int:
        """How many separate deliveries (each with its own retries) fal makes."""
        return {WebhookMode.NONE: 0, WebhookMode.NORMAL: 1, WebhookMode.TWICE: 2}[self]


@dataclass(frozen=True)
class SubmitErrors:
    """Answer the next ``count`` submits with HTTP ``status`` instead of queueing them."""

    status: int
    count: int


@dataclass(frozen=True)
class Faults:
    submit_errors: SubmitErrors | None = None
    webhook: WebhookMode = WebhookMode.NORMAL
    # Flag every image of every request as NSFW (a prompt with "nsfw-test" does it alone).
    nsfw: bool = False

    def updated(self, patch: Mapping[str, Any]) -> Faults:
        """Apply a partial JSON patch; raises ValueError naming the bad key."""
        changes: dict[str, Any] = {}
        for key, raw in patch.items():
            parser = _PARSERS.get(key)
            if parser is None:
                raise ValueError(f"unknown fault mode {key!r}; known: {sorted(FAULT_MODES)}")
            try:
                changes[key] = parser(raw)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{key}: {exc}") from exc
        return dataclasses.replace(self, **changes)

    def take_submit_error(self) -> tuple[int | None, Faults]:
        """The status to fail this submit with (None: let it through) and the faults after it."""
        if self.submit_errors is None:
            return None, self
        remaining = self.submit_errors.count - 1
        after = SubmitErrors(self.submit_errors.status, remaining) if remaining > 0 else None
        return self.submit_errors.status, dataclasses.replace(self, submit_errors=after)

    def to_json(self) -> dict[str, Any]:
        return {
            "submit_errors": dataclasses.asdict(self.submit_errors) if self.submit_errors else None,
            "webhook": self.webhook.value,
            "nsfw": self.nsfw,
        }


def submit_error_body(status: int) -> tuple[bytes, str]:
    """Body and content type of a simulated submit failure.

    For 502/503/504 it is an nginx page: fal_client retries those only when they look
    like they came from fal's ingress rather than from the app.
    """
    if status in (502, 503, 504):
        page = (
            f"<html><head><title>{status}</title></head>"
            f"<body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>"
        )
        return page.encode(), "text/html"
    body = {"detail": f"Simulated submit failure ({status})"}
    return json.dumps(body).encode(), "application/json"


def _parse_submit_errors(raw: Any) -> SubmitErrors | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"status", "count"}:
        raise ValueError('expected null or {"status": <int>, "count": <int>}')
    status, count = raw["status"], raw["count"]
    if not (isinstance(status, int) and 400 <= status <= 599):
        raise ValueError("status must be an HTTP error code (400-599)")
    if not (isinstance(count, int) and count >= 0):
        raise ValueError("count must be a non-negative integer")
    return SubmitErrors(status, count) if count else None


def _parse_bool(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ValueError("expected true or false")
    return raw


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "submit_errors": _parse_submit_errors,
    "webhook": WebhookMode,
    "nsfw": _parse_bool,
}
FAULT_MODES = frozenset(_PARSERS)
