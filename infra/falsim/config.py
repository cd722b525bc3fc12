"""Runtime configuration: timings, webhook retry policy, validation mode and fault modes.

Every request copies the configuration current at its submit, so changing it through
``POST /_sim/config`` affects later requests only. On the wire the configuration is one
flat object: the fault modes sit next to the timings (``{"inference_delay": 0.5,
"webhook": "twice"}``), though in code they live in ``Faults``; ``faults`` lists them, and
how a request's prompt markers override them for that request.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .faults import FAULT_MODES, Faults


class ValidationMode(StrEnum):
    # Bad input fails the submit call itself with 422.
    SUBMIT = "submit"
    # Bad input is queued and fails when "the app" runs it: status COMPLETED with an
    # error, result 422, webhook status ERROR. fal behaves like this for many apps.
    DEFERRED = "deferred"


@dataclass(frozen=True)
class SimConfig:
    queue_delay: float = 0.2
    inference_delay: float = 1.0
    webhook_delay: float = 0.0
    # Per delivery: tries before giving up, and the first pause (doubling after each try).
    webhook_attempts: int = 5
    webhook_backoff: float = 0.5
    validation: ValidationMode = ValidationMode.SUBMIT
    faults: Faults = field(default_factory=Faults)

    def updated(self, patch: Mapping[str, Any]) -> SimConfig:
        """Apply a partial flat JSON patch; ValueError naming the bad key."""
        changes: dict[str, Any] = {}
        fault_patch: dict[str, Any] = {}
        for key, raw in patch.items():
            if key in _SECONDS:
                changes[key] = _seconds(key, raw)
            elif key == "webhook_attempts":
                if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                    raise ValueError("webhook_attempts must be an integer >= 1")
                changes[key] = raw
            elif key == "validation":
                changes[key] = ValidationMode(raw)
            elif key in FAULT_MODES:
                fault_patch[key] = raw
            else:
                known = sorted({*_SECONDS, "webhook_attempts", "validation", *FAULT_MODES})
                raise ValueError(f"unknown config key {key!r}; known: {known}")
        if fault_patch:
            changes["faults"] = self.faults.updated(fault_patch)
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in _SECONDS},
            "webhook_attempts": self.webhook_attempts,
            "validation": self.validation.value,
            **self.faults.to_json(),
        }


class RuntimeConfig:
    """The live configuration, shared by the HTTP threads."""

    def __init__(self, initial: SimConfig) -> None:
        self._initial = initial
        self._current = initial
        self._lock = threading.Lock()

    def current(self) -> SimConfig:
        with self._lock:
            return self._current

    def update(self, patch: Mapping[str, Any]) -> SimConfig:
        with self._lock:
            self._current = self._current.updated(patch)
            return self._current

    def reset(self) -> SimConfig:
        with self._lock:
            self._current = self._initial
            return self._current

    def take_submit_error(self) -> int | None:
        """Consume one simulated submit failure, if any is configured."""
        with self._lock:
            status, faults = self._current.faults.take_submit_error()
            self._current = dataclasses.replace(self._current, faults=faults)
            return status


_SECONDS = ("queue_delay", "inference_delay", "webhook_delay", "webhook_backoff")


def _seconds(key: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
        raise ValueError(f"{key} must be a non-negative number of seconds")
    return float(raw)
