"""The load process of `make bench` (see infra/bench.py): fixed concurrency for a fixed time.

    python -m infra.bench_load http  --concurrency 8 --duration 5 --url URL --keys-file F
    python -m infra.bench_load floor --concurrency 8 --duration 5

`http` POSTs generations to the api (one API key per worker thread: different users, as
in production); `floor` does what an accepted generation minimally costs (one Firestore
create and one Pub/Sub publish) from a plain script. Both print one JSON summary line.
Every loop is bounded by time and by count.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

MAX_REQUESTS_PER_WORKER = 20_000
WARMUP_SECONDS = 1.0


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _run(workers: list[Callable[[], bool]], duration: float) -> dict[str, Any]:
    """Runs each worker's operation in its own thread until `duration` has passed; counts
    only what starts after the warm-up."""
    latencies: list[float] = []
    every: list[float] = []  # warm-up included: a run that completes nothing in the window
    errors: list[int] = [0]
    lock = threading.Lock()
    start = time.monotonic() + WARMUP_SECONDS
    end = start + duration

    def loop(operation: Callable[[], bool]) -> None:
        for _ in range(MAX_REQUESTS_PER_WORKER):
            began = time.monotonic()
            if began >= end:
                return
            try:
                ok = operation()
            except Exception:
                ok = False
            took = time.monotonic() - began
            with lock:
                every.append(took)
                if began >= start:
                    latencies.append(took)
                # A failure that ends in the window counts, even if it started in the warm-up.
                errors[0] += 0 if ok or began + took < start else 1

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + WARMUP_SECONDS + 60)
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "duration_s": duration,
        "rps": len(latencies) / duration,
        # No request started and finished in the window: its latency is at least the window.
        "p50_s": _percentile(latencies, 0.5) or max([duration, *every]),
        "p99_s": _percentile(latencies, 0.99) or max([duration, *every]),
        "max_s": max(every, default=None),
    }


def http_workers(url: str, keys: list[str], concurrency: int) -> list[Callable[[], bool]]:
    import httpx

    body = {"prompt": "bench accept", "imageSize": "square_hd"}

    def make(key: str) -> Callable[[], bool]:
        client = httpx.Client(base_url=url, timeout=30.0)
        headers = {"Authorization": f"Bearer {key}"}

        def post() -> bool:
            response = client.post("/v1/images/generations", json=body, headers=headers)
            return response.status_code == 202

        return post

    return [make(keys[i % len(keys)]) for i in range(concurrency)]


def floor_workers(concurrency: int) -> list[Callable[[], bool]]:
    operation = floor_operation()
    return [operation for _ in range(concurrency)]


def emulator_publisher() -> Any:
    """The GAPIC publisher on the emulator: one synchronous Publish call per publish, as the
    product's (imagegen.clients.publish_api)."""
    import grpc
    from google.pubsub_v1 import PublisherClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    channel = grpc.insecure_channel(os.environ["PUBSUB_EMULATOR_HOST"])
    return PublisherClient(transport=PublisherGrpcTransport(channel=channel))


def floor_operation() -> Callable[[], bool]:
    """One accepted generation's minimal I/O: a Firestore create and a Pub/Sub publish.
    Also served over HTTP by `bench/bare/main.py:bare_accept` (the served floor)."""
    from google.cloud import firestore
    from google.pubsub_v1 import PubsubMessage

    project = os.environ["GCP_PROJECT"]
    db = firestore.Client(project=project)
    publisher = emulator_publisher()
    topic = f"projects/{project}/topics/{os.environ['GENERATIONS_TOPIC']}"

    def create_and_publish() -> bool:
        generation_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        db.collection("benchFloor").document(generation_id).create(
            {
                "id": generation_id,
                "user_id": "bench-floor",
                "status": "queued",
                "prompt": "bench accept",
                "model": "flux-dev",
                "fal_app": "fal-ai/flux/dev",
                "parameters": {"image_size": "square_hd", "output_format": "jpeg"},
                "num_images": 1,
                "width": 1024,
                "height": 1024,
                "parts": [{"index": 0, "num_images": 1, "first_image": 0, "status": "pending"}],
                "images": [],
                "created_at": now,
                "updated_at": now,
            }
        )
        data = json.dumps({"generationId": generation_id}).encode()
        message = PubsubMessage(data=data, attributes={"generationId": generation_id})
        publisher.publish(topic=topic, messages=[message], timeout=10)
        return True

    return create_and_publish


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.bench_load")
    parser.add_argument("mode", choices=["http", "floor"])
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--url")
    parser.add_argument("--keys-file")
    args = parser.parse_args()
    if args.mode == "http":
        with open(args.keys_file) as f:
            keys = json.load(f)
        workers = http_workers(args.url, keys, args.concurrency)
    else:
        workers = floor_workers(args.concurrency)
    print(json.dumps(_run(workers, args.duration)), flush=True)
    os._exit(0)  # the Pub/Sub client's threads need not be joined


if __name__ == "__main__":
    main()
