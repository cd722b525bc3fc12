"""`make bench` in miniature: every phase once, with minimal repetitions, on its own stack;
checks the shape of the JSON it writes, not the performance targets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.stack import ROOT

pytestmark = pytest.mark.e2e


def test_bench_smoke_writes_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "infra.bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| Phase |" in done.stdout
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    for count in ("1_image", "4_image"):
        pipeline = result["pipeline"][count]
        assert {"pipeline_s", "floor_s", "p50_ratio", "p95_ratio", "met"} <= set(pipeline)
        assert pipeline["pipeline_s"]["median"] > 0 and pipeline["floor_s"]["median"] > 0
    assert result["pipeline"]["pubsub_hop_s"]["median"] > 0
    for level in result["accept"].values():
        assert {"api", "floor", "rps_ratio", "p99_ratio", "met"} <= set(level)
        assert level["floor"]["rps"]["median"] > 0
    assert result["ingest"]["images"] == 5 and result["ingest"]["ratio"]["median"] > 0
    cold = result["coldstart"]
    assert cold["bare_http_s"]["median"] > 0 and cold["bare_event_s"]["median"] > 0
    for name in ("api", "dispatcher"):
        start = cold[name]
        assert start["first_s"]["median"] > 0 and start["ready_s"]["median"] > 0
        assert start["allowance_s"]["median"] > 0 and start["target_s"] > 0
        assert {"met", "ratio_to_bare", "needed", "last_check"} <= set(start)
        imports = start["importtime"]
        assert imports["top"] and imports["top_modules"]
        assert "google-cloud-firestore" in imports["libraries_s"]
        assert not imports["needed_not_loaded"], imports["needed_not_loaded"]
        # Only what the function's bundle installs is importable (bench/bare/deployed).
        assert imports["not_in_deployment"] == [], imports["not_in_deployment"]
        # The same function with its libraries preloaded: its own import and first request,
        # each request checked by the bench (a 2xx that did its work).
        loaded = start["libraries_loaded"]
        assert loaded["import_s"]["median"] > 0 and loaded["first_s"]["median"] > 0
        assert loaded["warm_s"]["median"] > 0
    # The real first requests did their work: a generation accepted, one submitted to fal.
    assert cold["api"]["last_check"]["status"] == 202
    assert cold["dispatcher"]["last_check"]["fal_request_id"]
    assert "google-cloud-pubsub" in cold["api"]["importtime"]["libraries_s"]
    assert "fal-client" in cold["dispatcher"]["importtime"]["libraries_s"]
    memory = result["memory_peak_rss_mib"]
    assert memory["accept"]["api"] > 0 and memory["ingest"]["webhook"] > 0
    assert result["seconds"]["total"] > 0
