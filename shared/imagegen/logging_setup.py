"""Structured logs in Cloud Logging's JSON format: one object per line on stdout.

Cloud Functions forward stdout lines that parse as JSON to Cloud Logging, reading
`severity` and `message`; every `extra=` field (e.g. `generationId`) becomes a field of
the entry, so a generation's whole life can be filtered with one query.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime

from imagegen.settings import get_settings

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


# The trace of the request being handled, so Cloud Logging groups a request's lines.
_trace: ContextVar[str | None] = ContextVar("trace", default=None)
TRACE_FIELD = "logging.googleapis.com/trace"


def trace_from_header(header: str | None, project: str) -> str | None:
    """`X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1` (or W3C `traceparent`) as Cloud
    Logging's trace name, `projects/P/traces/TRACE_ID`."""
    if not header:
        return None
    if header.count("-") == 3 and len(header) >= 55:  # traceparent: 00-<32 hex>-<16 hex>-01
        trace_id = header.split("-")[1]
    else:
        trace_id = header.split("/", 1)[0].split(";", 1)[0].strip()
    if not (1 <= len(trace_id) <= 64 and all(c in "0123456789abcdefABCDEF" for c in trace_id)):
        return None
    return f"projects/{project}/traces/{trace_id.lower()}"


def bind_trace(trace: str | None) -> Token[str | None]:
    return _trace.set(trace)


def unbind_trace(token: Token[str | None]) -> None:
    _trace.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        if (trace := _trace.get()) is not None:
            entry[TRACE_FIELD] = trace
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging() -> None:
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(get_settings().log_level.upper())
    # Client libraries are chatty at INFO; their warnings still come through.
    for noisy in ("httpx", "httpcore", "urllib3", "google", "fal_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
