"""The api's router maps every rule up front and imports a resource's module only when a
request first reaches it; each module serves exactly the endpoints the router gives it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from imagegen import api

SHARED = Path(__file__).resolve().parents[2] / "shared"


def test_each_resource_module_serves_exactly_its_rules_endpoints() -> None:
    for resource in api.RESOURCES:
        module = resource.load()
        endpoints = {rule.endpoint for rule in resource.rules}
        assert set(module.HANDLERS) == endpoints, module.__name__
        described = {(op.method, op.path) for op in module.OPERATIONS}
        routed = {(m, r.rule) for r in resource.rules for m in r.methods - {"HEAD", "OPTIONS"}}
        assert described == routed, module.__name__


def test_every_endpoint_resolves_to_its_handler() -> None:
    assert len(api.HANDLERS) == sum(len(r.rules) for r in api.RESOURCES)
    for resource in api.RESOURCES:
        for rule in resource.rules:
            assert api.HANDLERS[rule.endpoint] is resource.load().HANDLERS[rule.endpoint]


def _routes_loaded_after(script: str) -> list[str]:
    """The resource modules a fresh interpreter has imported after running `script`."""
    probe = (
        f"{script}\nimport json, sys\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('imagegen.routes.'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(SHARED), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_importing_the_router_imports_no_resource_module() -> None:
    assert _routes_loaded_after("import imagegen.api") == ["imagegen.routes.paths"]


def test_a_request_imports_only_the_module_that_serves_it() -> None:
    script = (
        "import flask\nfrom imagegen import api\n"
        "with flask.Flask('t').test_request_context('/healthz'):\n"
        "    assert api.handle(flask.request).status_code == 200\n"
    )
    assert _routes_loaded_after(script) == ["imagegen.routes.health", "imagegen.routes.paths"]
