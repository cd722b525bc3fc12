"""Fault modes: ways the simulator misbehaves on purpose, for a whole run or one request.

Per run: ``POST /_sim/config`` with any of the keys below (flat, next to the timings). A
request keeps the faults current at its submit, so a change affects later requests only.

Per request: the product cannot add headers to its fal calls, so a request picks faults
with markers in its prompt: ``[fault:<name>]`` or ``[fault:<name>=<arg>]``, anywhere in
the prompt, several allowed (``"a cat [fault:webhook_late=5] [fault:image_bomb]"``). Names
are case-insensitive; the prompt is otherwise used (and echoed back) as is. A marker
overrides the config key it maps to, for that request only; the other keys keep the run's
values. When two markers set the same key the last one wins. A marker with an unknown name
or a bad argument is ignored and listed in the request's ``fault_marker_errors``.

==========================  ========================================================
marker                      behaviour (run-wide config equivalent)
==========================  ========================================================
submit_429[=N]              the first N (default 1) submits whose prompt is exactly
                            this one answer 429, later ones go through: counted per
                            distinct prompt, so resubmitting the same generation
                            eventually succeeds. (``submit_errors``: {status, count}
                            fails the next ``count`` submits, whatever their prompt.)
submit_500[=N]              the same with 500, which fal_client does not retry.
                            With both markers the 429s come first, then the 500s.
submit_422                  every submit with this prompt answers 422 with a fal
                            model-error detail (``content_policy_violation`` at
                            ``body.prompt``). (``submit_errors`` with status 422.)
webhook_twice               two deliveries, one after the other (``webhook: twice``).
webhook_burst[=N]           N (default ``webhook_burst``, 20) concurrent deliveries of
                            one signed webhook: same body, same headers
                            (``webhook: burst``, ``webhook_burst: N``).
webhook_late[=S]            delivered S seconds (default ``webhook_late``, 10) after
                            completion, signed when sent (``webhook: late``).
webhook_never               no webhook (``webhook: none``).
webhook_out_of_order        copy A is signed, then (the next second) copy B; B is
                            delivered, then A: the older signature arrives last, both
                            valid, same body (``webhook: out_of_order``).
webhook_bad_signature       the signature's bytes inverted (``webhook: bad_signature``).
webhook_stale_timestamp     timestamp 10 minutes old, signed consistently
                            (``webhook: stale_timestamp``).
webhook_unknown_key         signed with a key that is not in the JWKS
                            (``webhook: unknown_key``).
                            For these three every attempt (retries included) is bad
                            and no good delivery follows: a receiver must recover the
                            result by polling status/result, as with ``webhook_never``.
image_redirect_loopback[=P] image URLs answer 302 to ``http://127.0.0.1:P/...``
                            (default: the simulator's own port)
                            (``image: redirect_loopback``, ``image_redirect_port``).
image_redirect_metadata     image URLs answer 302 to
                            ``http://169.254.169.254/computeMetadata/v1/``
                            (``image: redirect_metadata``).
image_huge[=MB]             image URLs stream MB megabytes (default ``image_huge_mb``,
                            40) of JPEG header plus padding, chunked, without a
                            Content-Length (``image: huge``).
image_bomb                  image URLs serve a PNG of under 1 KB that declares
                            50000x50000 pixels (``image: bomb``).
image_not_image             image URLs answer ``Content-Type: image/jpeg`` with an HTML
                            page (``image: not_image``).
nsfw                        every image flagged NSFW, as does a ``nsfw-test`` token in
                            the prompt (``nsfw: true``).
status_error                the app fails while processing: status COMPLETED with an
                            error, result 500, webhook status ERROR with a detail
                            (``outcome: status_error``).
lost                        fal loses the request once accepted: status, result and
                            cancel answer 404 and no webhook is ever sent
                            (``outcome: lost``).
==========================  ========================================================

A mode is a field of ``Faults`` with a parser in ``_PARSERS``, plus a row in ``_MARKERS``
for its marker; the code that acts on it reads ``Job.config.faults``, which already has the
request's markers applied (``/_sim/requests/{id}`` shows it as ``faults``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class WebhookMode(StrEnum):
    NONE = "none"
    NORMAL = "normal"
    TWICE = "twice"
    BURST = "burst"
    LATE = "late"
    OUT_OF_ORDER = "out_of_order"
    BAD_SIGNATURE = "bad_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    UNKNOWN_KEY = "unknown_key"


class ImageFault(StrEnum):
    """What the output image URLs serve instead of the images."""

    NONE = "none"
    REDIRECT_LOOPBACK = "redirect_loopback"
    REDIRECT_METADATA = "redirect_metadata"
    HUGE = "huge"
    BOMB = "bomb"
    NOT_IMAGE = "not_image"


class Outcome(StrEnum):
    NORMAL = "normal"
    STATUS_ERROR = "status_error"
    LOST = "lost"


@dataclass(frozen=True)
class SubmitErrors:
    """Answer the next ``count`` submits with HTTP ``status`` instead of queueing them."""

    status: int
    count: int


MAX_BURST = 200


@dataclass(frozen=True)
class Faults:
    submit_errors: SubmitErrors | None = None
    webhook: WebhookMode = WebhookMode.NORMAL
    webhook_burst: int = 20  # deliveries in a burst
    webhook_late: float = 10.0  # seconds a late webhook waits
    image: ImageFault = ImageFault.NONE
    image_redirect_port: int | None = None  # None: the simulator's own port
    image_huge_mb: int = 40
    outcome: Outcome = Outcome.NORMAL
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
            "webhook_burst": self.webhook_burst,
            "webhook_late": self.webhook_late,
            "image": self.image.value,
            "image_redirect_port": self.image_redirect_port,
            "image_huge_mb": self.image_huge_mb,
            "outcome": self.outcome.value,
            "nsfw": self.nsfw,
        }


# -- prompt markers --------------------------------------------------------------------

MARKER_RE = re.compile(r"\[fault:([a-z0-9_]+)(?:=([^\]\s]*))?\]", re.IGNORECASE)


@dataclass(frozen=True)
class _Marker:
    """A marker's fixed config patch, and the config key its argument sets, if any."""

    patch: Mapping[str, Any]
    arg_key: str | None = None


_MARKERS: dict[str, _Marker] = {
    "webhook_twice": _Marker({"webhook": "twice"}),
    "webhook_burst": _Marker({"webhook": "burst"}, "webhook_burst"),
    "webhook_late": _Marker({"webhook": "late"}, "webhook_late"),
    "webhook_never": _Marker({"webhook": "none"}),
    "webhook_out_of_order": _Marker({"webhook": "out_of_order"}),
    "webhook_bad_signature": _Marker({"webhook": "bad_signature"}),
    "webhook_stale_timestamp": _Marker({"webhook": "stale_timestamp"}),
    "webhook_unknown_key": _Marker({"webhook": "unknown_key"}),
    "image_redirect_loopback": _Marker({"image": "redirect_loopback"}, "image_redirect_port"),
    "image_redirect_metadata": _Marker({"image": "redirect_metadata"}),
    "image_huge": _Marker({"image": "huge"}, "image_huge_mb"),
    "image_bomb": _Marker({"image": "bomb"}),
    "image_not_image": _Marker({"image": "not_image"}),
    "nsfw": _Marker({"nsfw": True}),
    "status_error": _Marker({"outcome": "status_error"}),
    "lost": _Marker({"outcome": "lost"}),
}
# Submit faults act before a request exists, so they are not config patches.
_SUBMIT_FAILURES = {"submit_429": 429, "submit_500": 500}
_SUBMIT_REFUSAL = "submit_422"
MARKER_NAMES = frozenset({*_MARKERS, *_SUBMIT_FAILURES, _SUBMIT_REFUSAL})


@dataclass(frozen=True)
class PromptFaults:
    """What the markers of one prompt ask for."""

    patch: dict[str, Any] = field(default_factory=dict)  # over the run's Faults
    # Statuses of the first submits of this prompt, in order (submit_429, submit_500).
    submit_failures: tuple[int, ...] = ()
    refuse_submit: bool = False  # submit_422
    applied: tuple[str, ...] = ()  # as written, e.g. "webhook_burst=5"
    errors: tuple[str, ...] = ()

    @property
    def affects_submit(self) -> bool:
        return bool(self.submit_failures) or self.refuse_submit


def prompt_faults(prompt: str | None) -> PromptFaults:
    """Parse the fault markers of a prompt (a request without a string prompt has none)."""
    if prompt is None:
        return PromptFaults()
    patch: dict[str, Any] = {}
    failure_counts: dict[int, int] = {}
    refuse = False
    applied: list[str] = []
    errors: list[str] = []
    for match in MARKER_RE.finditer(prompt):
        name, arg = match.group(1).lower(), match.group(2)
        text = name if arg is None else f"{name}={arg}"
        try:
            if name in _SUBMIT_FAILURES:
                count = 1 if arg is None else _parse_count(_arg_value(arg))
                failure_counts[_SUBMIT_FAILURES[name]] = count
            elif name == _SUBMIT_REFUSAL:
                if arg is not None:
                    raise ValueError("takes no argument")
                refuse = True
            elif name in _MARKERS:
                marker = _MARKERS[name]
                this = dict(marker.patch)
                if arg is not None:
                    if marker.arg_key is None:
                        raise ValueError("takes no argument")
                    this[marker.arg_key] = _arg_value(arg)
                Faults().updated(this)  # validates the argument
                patch.update(this)
            else:
                raise ValueError(f"unknown fault marker; known: {sorted(MARKER_NAMES)}")
        except ValueError as exc:
            errors.append(f"{text}: {exc}")
            continue
        applied.append(text)
    return PromptFaults(
        patch=patch,
        # 429s first: fal's ingress rate-limits before the app can fail.
        submit_failures=tuple(
            status for status in sorted(failure_counts) for _ in range(failure_counts[status])
        ),
        refuse_submit=refuse,
        applied=tuple(applied),
        errors=tuple(errors),
    )


def _arg_value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


class SubmitCounter:
    """Submits seen per distinct prompt, for the per-request submit faults."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._refused: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def take(self, prompt: str, faults: PromptFaults) -> int | None:
        """The status this submit of ``prompt`` fails with, or None to accept it."""
        with self._lock:
            seen = self._seen.get(prompt, 0)
            self._seen[prompt] = seen + 1
            if seen < len(faults.submit_failures):
                status: int | None = faults.submit_failures[seen]
            else:
                status = 422 if faults.refuse_submit else None
            if status is not None:
                self._refused.setdefault(prompt, []).append(status)
            return status

    def refused(self, prompt: str) -> list[int]:
        """The statuses earlier submits of ``prompt`` were refused with, in order."""
        with self._lock:
            return list(self._refused.get(prompt, []))

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()
            self._refused.clear()


# -- submit failure bodies ---------------------------------------------------------------

_ERRORS_DOC = "https://docs.fal.ai/errors#"


def submit_error_body(status: int, prompt: str | None = None) -> tuple[bytes, str]:
    """Body and content type of a simulated submit failure.

    For 502/503/504 it is an nginx page: fal_client retries those only when they look
    like they came from fal's ingress rather than from the app. A 422 is fal's model-error
    shape, a refusal of the prompt.
    """
    if status in (502, 503, 504):
        page = (
            f"<html><head><title>{status}</title></head>"
            f"<body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>"
        )
        return page.encode(), "text/html"
    if status == 422:
        type_ = "content_policy_violation"
        error = {
            "loc": ["body", "prompt"],
            "msg": "The content could not be processed because it contained material "
            "flagged by a content checker (simulated refusal).",
            "type": type_,
            "url": _ERRORS_DOC + type_,
            "input": prompt,
        }
        return json.dumps({"detail": [error]}).encode(), "application/json"
    body = {"detail": f"Simulated submit failure ({status})"}
    return json.dumps(body).encode(), "application/json"


# -- parsers -----------------------------------------------------------------------------


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


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return raw

    return parse


_parse_count = _int_in(1, 1000)


def _parse_seconds(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= 3600:
        raise ValueError("expected seconds from 0 to 3600")
    return float(raw)


def _parse_port(raw: Any) -> int | None:
    return None if raw is None else _int_in(1, 65535)(raw)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "submit_errors": _parse_submit_errors,
    "webhook": WebhookMode,
    "webhook_burst": _int_in(1, MAX_BURST),
    "webhook_late": _parse_seconds,
    "image": ImageFault,
    "image_redirect_port": _parse_port,
    "image_huge_mb": _int_in(1, 1024),
    "outcome": Outcome,
    "nsfw": _parse_bool,
}
FAULT_MODES = frozenset(_PARSERS)
