"""`make demo`: start the stack, generate two images through the public API, save them.

Everything goes through HTTP as a frontend would, with the command-line client
(`python -m imagegen.cli`): POST the generation, poll its record, download the signed image
URLs into demo-output/.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.stack import ROOT, LocalStack

OUTPUT = ROOT / "demo-output"
REQUEST: dict[str, Any] = {
    "prompt": "a lighthouse on a cliff at dusk, oil painting",
    "numImages": 2,
    "imageSize": "landscape_4_3",
    "seed": 1234,
}


def run(stack: LocalStack) -> int:
    """The command-line client (imagegen.cli) does it all: it prints the generation id, its
    status as it goes, and each downloaded file with its size."""
    env = {**os.environ, "API_URL": stack.env["API_URL"], "API_KEY": stack.env["DEV_API_KEY"]}
    command = [sys.executable, "-m", "imagegen.cli", "generate", REQUEST["prompt"]]
    command += ["--n", str(REQUEST["numImages"]), "--size", REQUEST["imageSize"]]
    command += ["--seed", str(REQUEST["seed"]), "--out", str(OUTPUT.relative_to(ROOT))]
    print(f"$ python -m imagegen.cli generate {shlex.join(command[4:])}", flush=True)
    return subprocess.run(command, env=env, cwd=ROOT, timeout=180).returncode


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="imagegen-demo-") as state:
        stack = LocalStack(state_dir=Path(state))
        print("starting the local stack (emulators, fal simulator, functions)...")
        try:
            stack.start()
            print(f"stack ready in {time.monotonic() - started:.1f} s")
            code = run(stack)
        finally:
            stack.stop()
    print(f"done in {time.monotonic() - started:.1f} s; stack stopped.")
    sys.exit(code)


if __name__ == "__main__":
    main()
