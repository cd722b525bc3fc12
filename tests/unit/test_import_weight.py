"""What each function's `main.py` loads of the package when an instance starts: only what
its own requests use (bench/README.md, cold start). The generation request's rules (its
models, the model registry's validation) belong to the api and the dispatcher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API_ONLY = ("imagegen.validation", "imagegen.models.requests")


def _loaded_by(function: str) -> set[str]:
    probe = "import main, sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT / "functions" / function,
        env={"PYTHONPATH": f"{ROOT / 'shared'}:.", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("function", ["webhook", "watchdog", "deadletter", "cleanup"])
def test_functions_that_read_no_generation_request_do_not_load_its_rules(function: str) -> None:
    loaded = _loaded_by(function)
    assert "imagegen.logging_setup" in loaded  # the probe did import the function
    assert not loaded & set(API_ONLY)


def test_the_watchdog_parses_its_body_with_the_shared_helpers() -> None:
    assert "imagegen.bodies" in _loaded_by("watchdog")
