"""A small `make chaos`: 30 generations under mixed fal faults, 10 at a time, with the webhook
and the dispatcher crashed once each, on a stack of its own (it kills processes, so it must
not share the session's). The harness judges the run (`infra/chaos.py`) and exits non-zero
on any violated invariant; its table and report are in the failure message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from infra.stack import ROOT

pytestmark = pytest.mark.e2e

GENERATIONS = 30
CONCURRENCY = 10
# Seconds of soak (submitting and draining) the harness allows itself; the stack's start-up
# (about 25 s) and the judging come on top.
SOAK_SECONDS = 110
TIMEOUT = 220


@pytest.mark.timeout(TIMEOUT + 20)
def test_a_small_chaos_run_keeps_every_invariant(tmp_path) -> None:
    report = tmp_path / "chaos.json"
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "infra.chaos",
                "--generations",
                str(GENERATIONS),
                "--concurrency",
                str(CONCURRENCY),
                "--timeout",
                str(SOAK_SECONDS),
                "--output",
                str(report),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the chaos run did not end within {TIMEOUT} s:\n{exc.stdout or ''}")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert report.exists()
