"""Structured logs in Cloud Logging's JSON format: one object per line on stdout.

Cloud Functions forward stdout lines that parse as JSON to Cloud Logging, reading
`severity` and `message`; every `extra=` field (e.g. `generationId`) becomes a field of
the entry, so a generation's whole life can be filtered with one query.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from imagegen.settings import get_settings

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
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
