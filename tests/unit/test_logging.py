"""Structured logs in Cloud Logging's format, with the request's trace on every line."""

from __future__ import annotations

import json
import logging

import pytest

from imagegen.logging_setup import (
    TRACE_FIELD,
    JsonFormatter,
    bind_trace,
    trace_from_header,
    unbind_trace,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "105445aa7843bc8bf206b12000100000/1;o=1",
            "projects/p/traces/105445aa7843bc8bf206b12000100000",
        ),
        ("105445AA7843BC8BF206B12000100000", "projects/p/traces/105445aa7843bc8bf206b12000100000"),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (None, None),
        ("", None),
        ("not-hex/1", None),
        ("x" * 500, None),
    ],
)
def test_trace_header_parsing(header: str | None, expected: str | None) -> None:
    assert trace_from_header(header, "p") == expected


def _line(record: logging.LogRecord) -> dict:
    return json.loads(JsonFormatter().format(record))


def test_a_line_has_severity_message_extras_and_the_bound_trace() -> None:
    record = logging.makeLogRecord(
        {
            "levelname": "WARNING",
            "msg": "state change: %s",
            "args": ("queued",),
            "name": "imagegen.repository",
            "generationId": "g-1",
        }
    )
    token = bind_trace("projects/p/traces/abc")
    try:
        line = _line(record)
    finally:
        unbind_trace(token)
    assert line["severity"] == "WARNING"
    assert line["message"] == "state change: queued"
    assert line["generationId"] == "g-1"
    assert line[TRACE_FIELD] == "projects/p/traces/abc"
    assert TRACE_FIELD not in _line(record)  # unbound: no trace


def test_exceptions_are_kept_as_a_stack_trace() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.makeLogRecord(
            {"levelname": "ERROR", "msg": "failed", "exc_info": sys.exc_info()}
        )
    assert "ValueError: boom" in _line(record)["stack_trace"]
