"""What each function's `main.py` does when an instance starts (bench/README.md, cold start):
it loads only what its own requests use (the generation request's rules, its models and the
model registry's validation, belong to the api and the dispatcher), and it sets the garbage
collector for the first request's imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from imagegen.gc_settings import YOUNG_GENERATION_THRESHOLD

ROOT = Path(__file__).resolve().parents[2]
API_ONLY = ("imagegen.validation", "imagegen.models.requests")


FUNCTIONS = ["api", "dispatcher", "webhook", "watchdog", "deadletter", "cleanup"]


def _after_import(function: str, expression: str) -> Any:
    """`expression`'s value in a fresh interpreter that imported the function's main.py."""
    probe = f"import main, gc, sys, json; print(json.dumps({expression}))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT / "functions" / function,
        env={"PYTHONPATH": f"{ROOT / 'shared'}:.", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def _loaded_by(function: str) -> set[str]:
    return set(_after_import(function, "sorted(sys.modules)"))


@pytest.mark.parametrize("function", ["webhook", "watchdog", "deadletter", "cleanup"])
def test_functions_that_read_no_generation_request_do_not_load_its_rules(function: str) -> None:
    loaded = _loaded_by(function)
    assert "imagegen.logging_setup" in loaded  # the probe did import the function
    assert not loaded & set(API_ONLY)


def test_the_watchdog_parses_its_body_with_the_shared_helpers() -> None:
    assert "imagegen.bodies" in _loaded_by("watchdog")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_an_instance_freezes_what_it_loaded_and_collects_young_objects_less_often(
    function: str,
) -> None:
    threshold, frozen = _after_import(function, "[gc.get_threshold(), gc.get_freeze_count()]")
    assert threshold == [YOUNG_GENERATION_THRESHOLD, 10, 10]
    assert frozen > 10_000  # the framework, the libraries main.py imports, our code
