"""`make demo`: start the stack, generate two images through the public API, save them.

Everything goes through HTTP as a frontend would: POST the generation, poll its record,
download the signed image URLs into demo-output/.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx

from infra.stack import ROOT, LocalStack

OUTPUT = ROOT / "demo-output"
REQUEST = {
    "prompt": "a lighthouse on a cliff at dusk, oil painting",
    "numImages": 2,
    "imageSize": "landscape_4_3",
    "seed": 1234,
}


def run(stack: LocalStack) -> int:
    env = stack.env
    api = httpx.Client(
        base_url=env["API_URL"],
        timeout=30.0,
        headers={"Authorization": f"Bearer {env['DEV_API_KEY']}"},
    )
    accepted = api.post("/v1/images/generations", json=REQUEST)
    if accepted.status_code != 202:
        print(f"generation refused: {accepted.status_code} {accepted.text}", file=sys.stderr)
        return 1
    generation_id = accepted.json()["id"]
    print(f"generation {generation_id} accepted; waiting for fal (simulated)...")
    deadline = time.monotonic() + 120
    status = "queued"
    while time.monotonic() < deadline:
        record = api.get(f"/v1/images/generations/{generation_id}").json()
        if record["status"] != status:
            status = record["status"]
            print(f"  status: {status}")
        if status in ("completed", "failed"):
            break
        time.sleep(0.2)
    if status != "completed":
        print(f"generation ended {status}: {record.get('error')}", file=sys.stderr)
        return 1
    OUTPUT.mkdir(exist_ok=True)
    print(
        f"\ngeneration {generation_id}: {status} in {record['generationTime']:.2f} s, "
        f"seed {record['seed']}"
    )
    for image in record["images"]:
        data = httpx.get(image["url"], timeout=30.0).content
        target = OUTPUT / f"{generation_id}-{Path(image['path']).name}"
        target.write_bytes(data)
        print(
            f"  {target.relative_to(ROOT)}  {image['width']}x{image['height']} "
            f"{image['contentType']}  {len(data):,} bytes"
        )
    return 0


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
