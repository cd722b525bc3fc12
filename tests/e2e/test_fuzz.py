"""A small schemathesis run against the session's stack (`make fuzz` is the full one):
no input gives a 5xx, and every answer matches the API's own description."""

from __future__ import annotations

import uuid

import pytest

from infra.fuzz import fuzz
from infra.stack import LocalStack

pytestmark = pytest.mark.e2e


def test_fuzzed_requests_get_no_5xx_and_documented_answers(stack: LocalStack) -> None:
    suffix = uuid.uuid4().hex[:8]  # users of its own: other tests' limits and history stay theirs
    keys = {
        "user": stack.create_api_key(f"fuzz-user-{suffix}", "user"),
        "admin": stack.create_api_key(f"fuzz-admin-{suffix}", "admin"),
    }
    report = fuzz(
        stack.env["API_URL"],
        keys,
        max_examples=80,
        seed=1,
        time_limit=50,
        coverage_per_operation=3,
        log=lambda _: None,
    )
    assert report.ok, f"{report.summary()}\n{report.table()}\n\n{report.failures_text()}"
    assert not report.out_of_time, report.summary()
    assert report.total >= 150, report.summary()
    assert set(report.phase_totals) == {"edges", "coverage", "fuzzing"}
