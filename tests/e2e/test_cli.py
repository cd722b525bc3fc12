"""The command-line client (`python -m imagegen.cli`) as a user runs it: a subprocess against
the session's stack, configured by API_URL and API_KEY in its environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from infra.stack import LocalStack
from tests.support import Api

pytestmark = pytest.mark.e2e


def cli(stack: LocalStack, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "API_URL": stack.env["API_URL"],
        "API_KEY": key or stack.env["DEV_API_KEY"],
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "imagegen.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generate_downloads_the_images_then_history_and_delete(
    stack: LocalStack, api: Api, tmp_path: Path
) -> None:
    prompt = f"a paper boat on a pond {uuid.uuid4().hex[:6]}"
    done = cli(stack, "generate", prompt, "--n", "2", "--size", "square", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    generation_id = re.search(r"generation: (\S+)", done.stdout)
    assert generation_id, done.stdout
    generation_id_text = generation_id[1]
    assert "completed" in done.stderr  # the progress display's last word

    files = sorted(tmp_path.iterdir())
    assert len(files) == 2
    for path in files:
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
        assert f"{path}  512x512  {path.stat().st_size:,} bytes" in done.stdout

    history = cli(stack, "history", "--per-page", "50")
    assert history.returncode == 0, history.stderr
    assert generation_id_text in history.stdout

    deleted = cli(stack, "delete", generation_id_text)
    assert deleted.returncode == 0, deleted.stderr
    assert api.get(generation_id_text).status_code == 404

    again = cli(stack, "delete", generation_id_text)
    assert again.returncode == 0  # deleting twice is a 204 too


def test_api_errors_are_reported_with_their_fields(stack: LocalStack) -> None:
    invalid = cli(stack, "generate", "a cat", "--n", "9")
    assert invalid.returncode == 1
    assert "numImages" in invalid.stderr
    assert "less than or equal to 5" in invalid.stderr
    assert "HTTP 422" in invalid.stderr

    missing = cli(stack, "cancel", "no-such-generation")
    assert missing.returncode == 1
    assert "not found" in missing.stderr.lower()

    unauthorized = cli(stack, "usage", key="igk_not-a-real-key")
    assert unauthorized.returncode == 1
    assert "HTTP 401" in unauthorized.stderr


def test_usage_and_loras_list(stack: LocalStack) -> None:
    usage = cli(stack, "usage")
    assert usage.returncode == 0, usage.stderr
    assert "generations:" in usage.stdout
    loras = cli(stack, "loras", "list")
    assert loras.returncode == 0, loras.stderr
    assert "LoRAs" in loras.stdout
