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
    for level in result["accept"].values():
        assert {"api", "floor", "rps_ratio", "p99_ratio", "met"} <= set(level)
        assert level["floor"]["rps"]["median"] > 0
    assert result["ingest"]["images"] == 5 and result["ingest"]["ratio"]["median"] > 0
    cold = result["coldstart"]
    assert cold["bare_http_s"]["median"] > 0 and cold["api"]["start_s"]["median"] > 0
    assert cold["api"]["importtime"]["top"]
    memory = result["memory_peak_rss_mib"]
    assert memory["accept"]["api"] > 0 and memory["ingest"]["webhook"] > 0
    assert result["seconds"]["total"] > 0
