"""`make bench`: the pipeline's performance on the local stack, each figure against a floor
measured side by side in the same run (the machine is shared and noisy).

    python -m infra.bench                 # the full run (< 10 minutes), bench/results/latest.json
    python -m infra.bench --smoke --out X # minimal repetitions (the e2e smoke test)
    python -m infra.bench --phases coldstart --out X   # some phases only (while working on one)

Phases (bench/README.md describes the method and the targets):
  pipeline  POST → record completed, 1 and 4 images, vs fal_client.subscribe + copy + 1 write
  accept    POST throughput/latency at concurrency 1, 8, 32 vs Firestore create + publish
  ingest    signed webhook → completed for 5 images vs a plain download-and-upload
  coldstart process start → first 2xx to each function's real first request (built from
            live state on the stack) vs a bare functions-framework function + the import
            time of the libraries it loaded on the way; importtime top entries per function;
            where the rest goes (the app's import and its first request, libraries preloaded)
  memory    peak RSS of each function process group during the accept and ingest phases
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

from infra.processes import Managed, free_port
from infra.stack import (
    DEAD_LETTER_SUBSCRIPTION,
    DEAD_LETTER_TOPIC,
    FUNCTIONS,
    MAX_DELIVERY_ATTEMPTS,
    PROJECT,
    PYTHON,
    ROOT,
    SUBSCRIPTION,
    TASKS_QUEUE,
    TOPIC,
    LocalStack,
)

RESULTS = ROOT / "bench" / "results"
FUNCTIONS_TF = ROOT / "terraform" / "modules" / "imagegen" / "functions.tf"
GENERATIONS = "/v1/images/generations"
POLL_SECONDS = 0.02

TARGETS = {
    "pipeline_p50_ratio_max": 1.5,
    "accept_rps_ratio_min": 0.7,
    "accept_p99_ratio_max": 3.0,
    "ingest_ratio_min": 0.8,
    "coldstart_ratio_max": 1.5,
}


def production_threads() -> dict[str, int]:
    """THREADS per function as Terraform sets it (= max_instance_request_concurrency)."""
    threads: dict[str, int] = {}
    name = None
    for line in FUNCTIONS_TF.read_text().splitlines():
        if m := re.match(r'\s*name\s*=\s*"(\w+)"', line):
            name = m.group(1)
        elif (m := re.match(r'\s*THREADS\s*=\s*"(\d+)"', line)) and name:
            threads[name] = int(m.group(1))
    return threads


class BenchStack(LocalStack):
    """The local stack with every function's gunicorn threads set as in production."""

    threads: dict[str, int] = {}

    def _spawn(
        self, name: str, argv: list[str], extra_env: dict[str, str] | None = None
    ) -> Managed:
        if name in self.threads:
            extra_env = {**(extra_env or {}), "THREADS": str(self.threads[name])}
        return super()._spawn(name, argv, extra_env)


# -- statistics --------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spread(values: list[float]) -> dict[str, float]:
    """Median with its spread (p25–p75 and min–max) over repeated runs."""
    return {
        "median": statistics.median(values),
        "p25": pct(values, 0.25),
        "p75": pct(values, 0.75),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


# -- memory ------------------------------------------------------------------------------


def _group_rss_kib(pgid: int) -> int:
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # field 5: pgrp
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total


@contextmanager
def peak_rss(stack: LocalStack, into: dict[str, float], interval: float = 0.2) -> Iterator[None]:
    """Samples the RSS of each function's process group (gunicorn arbiter + worker) while
    the block runs; `into` gets the peak per function in MiB."""
    stop = threading.Event()
    groups = {
        name: m.process.pid
        for name, m in stack.processes.items()
        if name in {f[0] for f in FUNCTIONS} and m.process is not None
    }

    def sample() -> None:
        for _ in range(100_000):
            for name, pgid in groups.items():
                into[name] = max(into.get(name, 0.0), _group_rss_kib(pgid) / 1024)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


# -- helpers -----------------------------------------------------------------------------


class Bench:
    def __init__(self, stack: LocalStack) -> None:
        import httpx
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import firestore, storage

        self.stack = stack
        env = stack.env
        self.api = httpx.Client(base_url=env["API_URL"], timeout=30.0)
        self.headers = {"Authorization": f"Bearer {env['DEV_API_KEY']}"}
        self.trust = ssl.create_default_context(capath=env["SSL_CERT_DIR"])
        self.sim = httpx.Client(base_url=env["FAL_SIM_URL"], verify=self.trust, timeout=30.0)
        self.images = httpx.Client(verify=self.trust, timeout=30.0)
        self.db = firestore.Client(project=env["GCP_PROJECT"])
        self.gcs = storage.Client(project=env["GCP_PROJECT"], credentials=AnonymousCredentials())
        self.bucket = self.gcs.bucket(env["IMAGES_BUCKET"])

    def sim_config(self, **changes: Any) -> None:
        response = self.sim.post("/_sim/config", json=changes)
        response.raise_for_status()

    def create(self, body: dict[str, Any]) -> str:
        response = self.api.post(GENERATIONS, json=body, headers=self.headers)
        if response.status_code != 202:
            raise RuntimeError(f"POST refused: {response.status_code} {response.text}")
        return response.json()["id"]

    def record(self, generation_id: str) -> dict[str, Any]:
        return self.db.collection("generations").document(generation_id).get().to_dict() or {}

    def wait_record(
        self, generation_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        """Reads the record straight from Firestore every POLL_SECONDS (20 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.record(generation_id)
            if record and done(record):
                return record
            time.sleep(POLL_SECONDS)
        raise TimeoutError(f"generation {generation_id}: {self.record(generation_id)}")

    def sim_request(self, request_id: str) -> dict[str, Any]:
        response = self.sim.get(f"/_sim/requests/{request_id}")
        response.raise_for_status()
        return response.json()

    def wait_sim(self, request_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.sim_request(request_id)
            if found["status"] == "COMPLETED":
                return found
            time.sleep(POLL_SECONDS)
        raise TimeoutError(f"fal request {request_id} never completed")


def _completed(record: dict[str, Any]) -> bool:
    if record.get("status") in ("failed", "canceled"):
        raise RuntimeError(f"generation ended {record['status']}: {record.get('error')}")
    return record.get("status") == "completed"


# -- phase 1: pipeline overhead ----------------------------------------------------------


def floor_pipeline(bench: Bench, app: str, arguments: dict[str, Any]) -> float:
    """fal_client.subscribe to the same simulator, download the images, one upload of each
    to the GCS emulator, one Firestore write."""
    import fal_client

    began = time.monotonic()
    result = fal_client.subscribe(app, arguments=arguments, with_logs=False, interval=0.02)
    for i, image in enumerate(result["images"]):
        data = bench.images.get(image["url"]).content
        bench.bucket.blob(f"bench-floor/{uuid.uuid4()}/{i}").upload_from_string(
            data, content_type=image.get("content_type") or "image/jpeg"
        )
    bench.db.collection("benchFloor").document(str(uuid.uuid4())).set(
        {"status": "completed", "images": result["images"], "seed": result.get("seed")}
    )
    return time.monotonic() - began


def phase_pipeline(bench: Bench, reps: int) -> dict[str, Any]:
    bench.sim_config(inference_delay=0, queue_delay=0, webhook="normal")
    out: dict[str, Any] = {}
    for count in (1, 4):
        body = {"prompt": f"bench pipeline {count}", "numImages": count, "imageSize": "square_hd"}
        pipeline, floor, ratios, paths = [], [], [], []
        arguments: dict[str, Any] | None = None
        app = ""
        for rep in range(reps + 1):  # the first pair warms both paths up, not counted
            began = time.monotonic()
            generation_id = bench.create(body)
            record = bench.wait_record(generation_id, _completed)
            took = time.monotonic() - began
            fal_id = record["parts"][0]["fal_request_id"]
            if arguments is None:
                described = bench.sim_request(fal_id)
                app, arguments = described["app"], described["arguments"]
            delivered = bench.sim_request(fal_id)["webhook_deliveries"]["succeeded"]
            floor_took = floor_pipeline(bench, app, arguments)
            if rep == 0:
                continue
            pipeline.append(took)
            floor.append(floor_took)
            ratios.append(took / floor_took)
            paths.append("webhook" if delivered else "watchdog")
        out[f"{count}_image"] = {
            "pipeline_s": {**spread(pipeline), "p95": pct(pipeline, 0.95)},
            "floor_s": {**spread(floor), "p95": pct(floor, 0.95)},
            "p50_ratio": statistics.median(pipeline) / statistics.median(floor),
            "p95_ratio": pct(pipeline, 0.95) / pct(floor, 0.95),
            "pair_ratio": spread(ratios),
            "completed_via": {p: paths.count(p) for p in set(paths)},
            "met": statistics.median(pipeline) / statistics.median(floor)
            <= TARGETS["pipeline_p50_ratio_max"],
        }
    hop = pubsub_hop(max(3, reps))
    out["pubsub_hop_s"] = spread(hop)
    return out


def pubsub_hop(samples: int) -> list[float]:
    """What the Pub/Sub hop alone costs on this stack: publish (one synchronous Publish, as
    the api does) until a pull already waiting on a subscription receives it (as the relay,
    Eventarc's stand-in, waits), on a topic of its own. Not in the floor, which calls fal
    directly; the product cannot go below floor + this."""
    from google.cloud import pubsub_v1
    from google.pubsub_v1 import PubsubMessage

    from infra.bench_load import emulator_publisher

    name = f"bench-hop-{uuid.uuid4().hex[:8]}"
    publisher = emulator_publisher()
    topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/{name}").name
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(PROJECT, name)
    subscriber.create_subscription(request={"name": path, "topic": topic})
    took: list[float] = []
    try:
        for _ in range(samples + 1):
            received: dict[str, float] = {}

            def pull(received: dict[str, float] = received) -> None:
                response = subscriber.pull(
                    subscription=path, max_messages=10, timeout=5.0, return_immediately=False
                )
                received["at"] = time.monotonic()
                ids = [m.ack_id for m in response.received_messages]
                if ids:
                    subscriber.acknowledge(subscription=path, ack_ids=ids)

            waiting = threading.Thread(target=pull)
            waiting.start()
            time.sleep(0.2)  # the pull is waiting, as the relay's always is
            began = time.monotonic()
            publisher.publish(topic=topic, messages=[PubsubMessage(data=b"hop")], timeout=10)
            waiting.join(timeout=10)
            if "at" in received:
                took.append(received["at"] - began)
    finally:
        with contextlib.suppress(Exception):
            subscriber.delete_subscription(subscription=path)
            publisher.delete_topic(topic=topic)
    return took[1:] or took


# -- phase 2: accept path ----------------------------------------------------------------


def _load(mode: str, concurrency: int, duration: float, env: dict[str, str], *extra: str):
    argv = [PYTHON, "-m", "infra.bench_load", mode, "--concurrency", str(concurrency)]
    argv += ["--duration", str(duration), *extra]
    done = subprocess.run(
        argv,
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load process failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def phase_accept(
    bench: Bench, levels: tuple[int, ...], reps: int, duration: float
) -> dict[str, Any]:
    stack = bench.stack
    # No background work: fal sends no webhook, and the relay (Eventarc) is stopped, so
    # accepted generations stay queued and the dispatcher stays idle.
    bench.sim_config(webhook="none", inference_delay=600)
    stack.processes["relay"].stop()
    keys = [stack.create_api_key(f"bench-admin-{i}", "admin") for i in range(max(levels))]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(keys, f)
    out: dict[str, Any] = {}
    served = _served_floor(stack)
    try:
        for c in levels:
            runs: dict[str, list[dict[str, Any]]] = {"api": [], "floor": [], "served": []}
            for _ in range(reps):
                http = ["--url", stack.env["API_URL"], "--keys-file", f.name]
                runs["api"].append(_load("http", c, duration, stack.env, *http))
                runs["floor"].append(_load("floor", c, duration, stack.env))
                bare = ["--url", served[1], "--keys-file", f.name]
                runs["served"].append(_load("http", c, duration, stack.env, *bare))
            pairs = list(zip(runs["api"], runs["floor"], strict=True))
            rps_ratio = [a["rps"] / b["rps"] for a, b in pairs]
            p99_ratio = [a["p99_s"] / b["p99_s"] for a, b in pairs]
            served_pairs = list(zip(runs["api"], runs["served"], strict=True))
            errors = sum(r["errors"] for r in runs["api"])
            out[str(c)] = {
                side: {
                    "rps": spread([r["rps"] for r in rs]),
                    "p50_s": spread([r["p50_s"] for r in rs]),
                    "p99_s": spread([r["p99_s"] for r in rs]),
                    "errors": sum(r["errors"] for r in rs),
                    "requests": sum(r["requests"] for r in rs),
                }
                for side, rs in runs.items()
            } | {
                "rps_ratio": spread(rps_ratio),
                "p99_ratio": spread(p99_ratio),
                # The same I/O behind the same server: what is left is the product's own.
                "rps_ratio_to_served": spread([a["rps"] / b["rps"] for a, b in served_pairs]),
                "served_rps_ratio_to_floor": spread(
                    [
                        b["rps"] / f["rps"]
                        for b, f in zip(runs["served"], runs["floor"], strict=True)
                    ]
                ),
                "met": statistics.median(rps_ratio) >= TARGETS["accept_rps_ratio_min"]
                and statistics.median(p99_ratio) <= TARGETS["accept_p99_ratio_max"]
                and errors == 0,
            }
    finally:
        served[0].stop()
        os.unlink(f.name)
    return out


def _served_floor(stack: LocalStack) -> tuple[Managed, str]:
    """bench/bare/main.py:bare_accept, the floor's create + publish as a functions-framework
    function started like the api (same server, THREADS as in Terraform)."""
    port = free_port()
    bin_ff = str(Path(PYTHON).parent / "functions-framework")
    source = str(ROOT / "bench" / "bare" / "main.py")
    argv = [bin_ff, "--source", source, "--target", "bare_accept", "--signature-type", "http"]
    env = {**os.environ, **stack.env, "THREADS": str(BenchStack.threads.get("api", 1))}
    log = stack.state_dir / "logs" / "served-floor.log"
    managed = Managed(
        "served-floor", [*argv, "--host", "127.0.0.1", "--port", str(port)], env, log, ROOT
    )
    managed.start()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 202:
                    return managed, url
        except OSError:
            pass
        if not managed.alive():
            raise RuntimeError(f"served floor exited:\n{managed.tail()}")
        time.sleep(0.05)
    managed.stop()
    raise TimeoutError(f"served floor not answering:\n{managed.tail()}")


# -- phase 3: ingest ---------------------------------------------------------------------


def _webhook_delivery(bench: Bench, done: dict[str, Any]) -> tuple[str, str, bytes, list[str]]:
    """What fal POSTs to the webhook for a completed request (unsigned): the callback URL,
    the request id, the body, and the image URLs in it."""
    output = bench.sim.get(
        done["response_url"], headers={"Authorization": f"Key {bench.stack.env['FAL_KEY']}"}
    ).json()
    payload = json.dumps(
        {
            "request_id": done["request_id"],
            "gateway_request_id": done["request_id"],
            "status": "OK",
            "payload": output,
            "error": None,
        }
    ).encode()
    urls = [image["url"] for image in output["images"]]
    return done["webhook_url"], done["request_id"], payload, urls


def phase_ingest(bench: Bench, reps: int, images: int = 5) -> dict[str, Any]:
    from infra.falsim.signing import load_private_key, sign_webhook

    env = bench.stack.env
    key = load_private_key(Path(env["FAL_SIM_PRIVATE_KEY_FILE"]))
    bench.sim_config(webhook="none", inference_delay=0, queue_delay=0)
    body = {"prompt": "bench ingest", "numImages": images, "imageSize": "square_hd"}
    ingest_rate, floor_rate, ratios = [], [], []
    thumbs_rate: list[float] = []
    thumbs_ratios: list[float] = []
    image_bytes = 0
    for rep in range(reps + 1):  # the first pair is a warm-up
        generation_id = bench.create(body)
        record = bench.wait_record(
            generation_id, lambda r: all(p.get("fal_request_id") for p in r.get("parts", [{}]))
        )
        deliveries = []
        urls: list[str] = []
        for part in record["parts"]:
            url, request_id, payload, part_urls = _webhook_delivery(
                bench, bench.wait_sim(part["fal_request_id"])
            )
            urls += part_urls
            deliveries.append((url, request_id, payload))
        import httpx

        # Signed and connected before the clock starts: fal's side of a delivery is not
        # the product's time (the floor's client is built beforehand too).
        signed = []
        for url, request_id, payload in deliveries:
            headers = sign_webhook(key, request_id, "sim-user", payload)
            headers["Content-Type"] = "application/json"
            signed.append((url, payload, headers))

        def deliver(delivery: tuple[str, bytes, dict[str, str]], client: httpx.Client) -> int:
            url, payload, headers = delivery
            return client.post(url, content=payload, headers=headers).status_code

        clients = [httpx.Client(timeout=60) for _ in signed]
        began = time.monotonic()
        with ThreadPoolExecutor(len(signed)) as pool:
            statuses = list(pool.map(deliver, signed, clients))
        for client in clients:
            client.close()
        bench.wait_record(generation_id, _completed)
        took = time.monotonic() - began
        if any(s != 200 for s in statuses):
            raise RuntimeError(f"webhook answered {statuses}")

        def copy(indexed: tuple[int, str], prefix: str = generation_id) -> int:
            i, url = indexed
            data = bench.images.get(url).content
            bench.bucket.blob(f"bench-floor/{prefix}/{i}").upload_from_string(
                data, content_type="image/jpeg"
            )
            return len(data)

        began = time.monotonic()
        with ThreadPoolExecutor(len(urls)) as pool:
            sizes = list(pool.map(copy, enumerate(urls)))
        floor_took = time.monotonic() - began

        def copy_with_thumbnail(indexed: tuple[int, str], prefix: str = generation_id) -> int:
            from imagegen.thumbnails import make_thumbnail

            i, url = indexed
            data = bench.images.get(url).content
            thumbnail = make_thumbnail(data)
            bench.bucket.blob(f"bench-floor-t/{prefix}/{i}").upload_from_string(
                data, content_type="image/jpeg"
            )
            bench.bucket.blob(f"bench-floor-t/{prefix}/{i}.webp").upload_from_string(
                thumbnail.data, content_type=thumbnail.content_type
            )
            return len(data)

        # The same copy with the thumbnail made and stored (what the product stores), still
        # without Firestore: tells the copy's cost from the record keeping's.
        began = time.monotonic()
        with ThreadPoolExecutor(len(urls)) as pool:
            list(pool.map(copy_with_thumbnail, enumerate(urls)))
        thumbs_took = time.monotonic() - began
        if rep == 0:
            continue
        image_bytes = sum(sizes) // len(sizes)
        ingest_rate.append(images / took)
        floor_rate.append(images / floor_took)
        thumbs_rate.append(images / thumbs_took)
        ratios.append(floor_took / took)
        thumbs_ratios.append(thumbs_took / took)
    bench.sim_config(webhook="normal")
    return {
        "images": images,
        "mean_image_bytes": image_bytes,
        "ingest_images_per_s": spread(ingest_rate),
        "floor_images_per_s": spread(floor_rate),
        "ratio": spread(ratios),
        "floor_with_thumbnails_images_per_s": spread(thumbs_rate),
        "ratio_to_floor_with_thumbnails": spread(thumbs_ratios),
        "met": statistics.median(ratios) >= TARGETS["ingest_ratio_min"],
    }


# -- phase 4: cold start -----------------------------------------------------------------
#
# Each function is started cold and sent the first request of the kind it exists for, built
# from real state (a generation accepted, its Pub/Sub message, a completed fal request, a
# signed webhook); the time from process start to that request's 2xx is compared with a bare
# functions-framework function started the same way, plus an allowance: the import time of
# the third-party libraries the function loaded on the way (found with importtime, less any
# client library that request does not need, NEEDED), timed without importtime overhead in
# a fresh interpreter. /healthz (or a malformed event) is timed too ("ready"), and the next
# request of the same kind on the warm process ("warm"). Libraries run from bytecode
# compiled once, the product's code from source (as deployed: see phase_coldstart). What
# the product adds beyond bare + allowance is then taken apart: with the libraries already
# imported, the app's import and its first and next requests (LOADED_SNIPPET).

COLD_BODY = {"prompt": "bench cold start", "numImages": 1, "imageSize": "square"}
# Libraries are distributions (as in requirements.txt), found from the files they install.
# The client libraries, with the modules the import tracer watches for each:
CLIENT_LIBRARIES: dict[str, tuple[str, ...]] = {
    "google-cloud-firestore": ("google.cloud.firestore", "google.cloud.firestore_v1"),
    "google-cloud-pubsub": ("google.cloud.pubsub", "google.cloud.pubsub_v1", "google.pubsub_v1"),
    "google-cloud-storage": ("google.cloud.storage", "google.cloud._storage_v2"),
    "google-cloud-tasks": ("google.cloud.tasks", "google.cloud.tasks_v2"),
    "fal-client": ("fal_client",),
    "pillow": ("PIL",),
    "httpx": ("httpx",),
    "cryptography": ("cryptography",),
}
# The heavy ones: each is flagged where a first request loads it without needing it.
HEAVY = (
    "pillow",
    "google-cloud-pubsub",
    "fal-client",
    "google-cloud-storage",
    "google-cloud-tasks",
)
# The client libraries each function's first request needs, read from its code path
# (shared/imagegen), and why. A client library loaded but not listed is left out of the
# allowance (its import time is reported as "unneeded"); a heavy one is flagged.
NEEDED: dict[str, tuple[tuple[str, ...], str]] = {
    "api": (
        ("google-cloud-firestore", "google-cloud-pubsub"),
        "POST /v1/images/generations: key lookup and admitting transaction in Firestore, "
        "then the id is published to Pub/Sub",
    ),
    "dispatcher": (
        ("google-cloud-firestore", "fal-client", "httpx", "google-cloud-tasks"),
        "reads and claims the record (Firestore), submits to fal (fal_client over httpx), "
        "schedules the watchdog's check (Cloud Tasks); Storage only signs LoRA URLs (none)",
    ),
    "webhook": (
        ("google-cloud-firestore", "google-cloud-storage", "httpx", "pillow", "cryptography"),
        "verifies the ED25519 signature against fal's JWKS (httpx, cryptography), copies the "
        "images and their thumbnails (httpx, Pillow, Storage), records the part (Firestore)",
    ),
    "watchdog": (
        ("google-cloud-firestore", "fal-client", "httpx", "google-cloud-storage", "pillow"),
        "a part fal finished whose webhook never came: status and result from fal "
        "(fal_client over httpx), then the webhook's ingest (httpx, Pillow, Storage, "
        "Firestore); Cloud Tasks only rechecks a running request, Pub/Sub only resubmits",
    ),
    "deadletter": (
        ("google-cloud-firestore",),
        "fails the generation (dispatch_failed): one conditional Firestore write",
    ),
    "cleanup": (
        ("google-cloud-firestore", "google-cloud-storage"),
        "queries expired and stuck records (Firestore), lists the bucket for orphans "
        "(Storage); Pub/Sub only re-publishes a stuck queued generation (none here)",
    ),
}
# Never the function's own libraries, whatever installs them.
FIRST_PARTY = {"imagegen", "functions_framework", "main", "__main__", "sitecustomize"}
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")
TRACE_LINE = re.compile(r"bench-import-trace: (\S+) <- (.*)")
FIRST_RESPONSE_MARK = "=== bench: first response ==="
IMPORT_TRACER = ROOT / "bench" / "bare" / "importtrace"
DEPLOYMENT_ONLY = ROOT / "bench" / "bare" / "deployed"
EVENT_HEADERS = {
    "ce-specversion": "1.0",
    "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
    "Content-Type": "application/json",
}
# The allowance: the modules' import, timed in a fresh interpreter after functions_framework
# (which the bare function imports too). argv[1]: [needed modules, unneeded modules].
ALLOWANCE_SNIPPET = """
import importlib, json, sys, time
import functions_framework

def timed(modules):
    failed = []
    began = time.perf_counter()
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            failed.append(f"{module}: {exc!r}")
    return time.perf_counter() - began, failed

needed, extra = json.loads(sys.argv[1])
needed_s, failed = timed(needed)
extra_s, failed_extra = timed(extra)
print(json.dumps({"needed_s": needed_s, "extra_s": extra_s, "failed": failed + failed_extra}))
"""

# Where the rest goes: the function's app and its first requests in one interpreter whose
# libraries (the allowance's modules) are already imported, through functions-framework's
# own test client. argv[1]: [modules, source, target, signature, first, second]; each
# request {method, path, headers, body (latin-1)}.
LOADED_SNIPPET = """
import importlib, json, sys, time
import functions_framework

modules, source, target, signature, first, second = json.loads(sys.argv[1])
for module in modules:
    try:
        importlib.import_module(module)
    except Exception:
        pass
began = time.perf_counter()
app = functions_framework.create_app(target, source, signature)
imported = time.perf_counter() - began
client = app.test_client()  # the test client's own imports are not the function's

def send(request):
    began = time.perf_counter()
    response = client.open(
        request["path"],
        method=request["method"],
        headers=request["headers"],
        data=request["body"].encode("latin-1"),
    )
    took = time.perf_counter() - began
    body = response.get_data().decode("latin-1")
    return {"s": took, "status": response.status_code, "body": body}

print(json.dumps({"import_s": imported, "first": send(first), "second": send(second)}))
"""


@dataclass
class FirstRequest:
    """One HTTP request to a cold function, and the check that it did its work."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    check: Callable[[int, bytes], dict[str, Any]]
    describe: str


def _ok(status: int, body: bytes, expected: tuple[int, ...] = (200, 201, 202, 204)) -> None:
    if status not in expected:
        raise RuntimeError(f"answered {status}: {body[:500]!r}")


def _acknowledged(status: int, body: bytes) -> dict[str, Any]:
    _ok(status, body)
    return {"status": status}


class Tap:
    """The bench's own subscription on the generations topic: the real Pub/Sub message of
    each generation accepted during the phase (the stack's relay, its Eventarc, is stopped,
    so those messages stay in the dispatcher's subscription, undelivered)."""

    def __init__(self) -> None:
        from google.cloud import pubsub_v1

        self.subscriber = pubsub_v1.SubscriberClient()
        self.path = self.subscriber.subscription_path(PROJECT, f"bench-cold-{uuid.uuid4().hex}")
        self.subscriber.create_subscription(
            request={
                "name": self.path,
                "topic": f"projects/{PROJECT}/topics/{TOPIC}",
                "ack_deadline_seconds": 60,
            }
        )
        self.seen: dict[str, Any] = {}

    def message(self, generation_id: str, timeout: float = 30) -> Any:
        from infra.relay import pull_waiting

        deadline = time.monotonic() + timeout
        while generation_id not in self.seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Pub/Sub message for {generation_id}")
            received = pull_waiting(self.subscriber, self.path)
            if received:
                self.subscriber.acknowledge(
                    subscription=self.path, ack_ids=[r.ack_id for r in received]
                )
            for r in received:
                self.seen[r.message.attributes.get("generationId", "")] = r
        return self.seen.pop(generation_id)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.subscriber.delete_subscription(subscription=self.path)


class ColdRequests:
    """Builds each function's real first request from fresh state on the running stack."""

    def __init__(self, bench: Bench, tap: Tap) -> None:
        from infra.falsim.signing import load_private_key

        self.bench, self.tap = bench, tap
        self.env = bench.stack.env
        self.key = load_private_key(Path(self.env["FAL_SIM_PRIVATE_KEY_FILE"]))

    def build(self, name: str) -> FirstRequest:
        builder: Callable[[], FirstRequest] = getattr(self, name)
        return builder()

    def _event(
        self,
        received: Any,
        topic: str,
        subscription: str,
        attributes: dict[str, str] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """The binary-mode CloudEvent Eventarc (infra/relay.py) delivers for a message."""
        from infra.relay import cloud_event

        path = f"projects/{PROJECT}/subscriptions/{subscription}"
        headers, body = cloud_event(received, PROJECT, topic, path)
        body["message"]["attributes"].update(attributes or {})
        return headers, json.dumps(body).encode()

    def _queued(self) -> tuple[str, Any]:
        """A generation accepted by the stack's api and not dispatched, with its message."""
        generation_id = self.bench.create(COLD_BODY)
        return generation_id, self.tap.message(generation_id)

    def _submitted(self) -> tuple[str, dict[str, Any]]:
        """A generation the stack's dispatcher submitted to fal, whose fal request completed
        with no webhook sent (the simulator's webhook is off in this phase)."""
        generation_id, received = self._queued()
        headers, body = self._event(received, TOPIC, SUBSCRIPTION)
        dispatcher = f"http://127.0.0.1:{self.bench.stack.ports['dispatcher']}/"
        response = self.bench.images.post(dispatcher, content=body, headers=headers)
        _ok(response.status_code, response.content)
        record = self.bench.wait_record(
            generation_id, lambda r: all(p.get("fal_request_id") for p in r["parts"])
        )
        return generation_id, self.bench.wait_sim(record["parts"][0]["fal_request_id"])

    def _record(self, generation_id: str, done: Callable[[dict[str, Any]], bool]) -> dict:
        return self.bench.wait_record(generation_id, done, timeout=10)

    def bare_http(self) -> FirstRequest:
        return FirstRequest("GET", "/healthz", {}, None, _acknowledged, "GET /healthz")

    def bare_event(self) -> FirstRequest:
        headers = {**EVENT_HEADERS, "ce-id": str(uuid.uuid4()), "ce-source": "//bench"}
        body = b'{"message": "not a pubsub message"}'
        return FirstRequest("POST", "/", headers, body, _acknowledged, "a malformed event")

    def api(self) -> FirstRequest:
        headers = {**self.bench.headers, "Content-Type": "application/json"}

        def check(status: int, body: bytes) -> dict[str, Any]:
            _ok(status, body, (202,))
            generation_id = json.loads(body)["id"]
            self._record(generation_id, lambda r: r.get("status") == "queued")
            return {"status": status, "generation": generation_id}

        return FirstRequest(
            "POST",
            GENERATIONS,
            headers,
            json.dumps(COLD_BODY).encode(),
            check,
            "POST /v1/images/generations (API key) → 202, record queued",
        )

    def dispatcher(self) -> FirstRequest:
        generation_id, received = self._queued()
        headers, body = self._event(received, TOPIC, SUBSCRIPTION)

        def check(status: int, answer: bytes) -> dict[str, Any]:
            _ok(status, answer)
            record = self._record(
                generation_id, lambda r: all(p.get("fal_request_id") for p in r["parts"])
            )
            fal_id = record["parts"][0]["fal_request_id"]
            self.bench.sim_request(fal_id)  # fal knows it
            return {"status": status, "generation": generation_id, "fal_request_id": fal_id}

        return FirstRequest(
            "POST",
            "/",
            headers,
            body,
            check,
            "the Pub/Sub CloudEvent of a queued generation → 2xx, submitted to fal",
        )

    def webhook(self) -> FirstRequest:
        from infra.falsim.signing import sign_webhook

        generation_id, done = self._submitted()
        url, request_id, payload, _ = _webhook_delivery(self.bench, done)
        headers = sign_webhook(self.key, request_id, "sim-user", payload)
        headers["Content-Type"] = "application/json"
        target = urllib.parse.urlsplit(url)

        def check(status: int, body: bytes) -> dict[str, Any]:
            _ok(status, body, (200,))
            record = self._record(generation_id, _completed)
            for image in record["images"]:
                if not self.bench.bucket.blob(image["path"]).exists():
                    raise RuntimeError(f"{image['path']} was not copied")
            return {
                "status": status,
                "outcome": json.loads(body).get("status"),
                "images": len(record["images"]),
            }

        return FirstRequest(
            "POST",
            f"{target.path}?{target.query}",
            headers,
            payload,
            check,
            "fal's signed webhook for a completed request → 200, images copied",
        )

    def watchdog(self) -> FirstRequest:
        generation_id, done = self._submitted()
        task = {"generationId": generation_id, "part": 0, "falRequestId": done["request_id"]}
        # As the Cloud Tasks emulator calls it: the stack sets no WATCHDOG_INVOKER (the
        # emulator attaches no OIDC token), so the call carries none either.
        headers = {
            "Content-Type": "application/json",
            "X-CloudTasks-QueueName": TASKS_QUEUE.rsplit("/", 1)[-1],
            "X-CloudTasks-TaskName": f"watchdog-check-{generation_id}-0-{done['request_id']}-1",
            "X-CloudTasks-TaskRetryCount": "0",
            "X-CloudTasks-TaskExecutionCount": "0",
        }

        def check(status: int, body: bytes) -> dict[str, Any]:
            _ok(status, body, (200,))
            verdict = json.loads(body).get("verdict")
            if verdict != "ingested":
                raise RuntimeError(f"watchdog verdict {verdict!r}, not 'ingested'")
            self._record(generation_id, _completed)
            return {"status": status, "verdict": verdict}

        return FirstRequest(
            "POST",
            "/",
            headers,
            json.dumps(task).encode(),
            check,
            "the Cloud Tasks check of a part fal finished whose webhook never came → ingested",
        )

    def deadletter(self) -> FirstRequest:
        generation_id, received = self._queued()
        # Pub/Sub forwards the message unchanged to the dead-letter topic, with these added.
        headers, body = self._event(
            received,
            DEAD_LETTER_TOPIC,
            DEAD_LETTER_SUBSCRIPTION,
            {
                "CloudPubSubDeadLetterSourceDeliveryCount": str(MAX_DELIVERY_ATTEMPTS),
                "CloudPubSubDeadLetterSourceSubscription": SUBSCRIPTION,
                "CloudPubSubDeadLetterSourceSubscriptionProject": PROJECT,
            },
        )

        def check(status: int, answer: bytes) -> dict[str, Any]:
            _ok(status, answer)
            record = self._record(generation_id, lambda r: r.get("status") == "failed")
            code = (record.get("error") or {}).get("code")
            if code != "dispatch_failed":
                raise RuntimeError(f"dead letter failed the generation with {code!r}")
            return {"status": status, "generation": generation_id, "error": code}

        return FirstRequest(
            "POST",
            "/",
            headers,
            body,
            check,
            "the dead-lettered message of a queued generation → 2xx, dispatch_failed",
        )

    def cleanup(self) -> FirstRequest:
        # Cloud Scheduler's job (terraform messaging.tf): POST, no body; the stack sets no
        # CLEANUP_INVOKER, so no OIDC token either.
        headers = {"User-Agent": "Google-Cloud-Scheduler"}

        def check(status: int, body: bytes) -> dict[str, Any]:
            _ok(status, body, (200,))
            report = json.loads(body)
            return {"status": status, "skipped": report.get("skipped", False)}

        return FirstRequest("POST", "/", headers, b"", check, "Cloud Scheduler's sweep → 200")


def _probe(url: str, event: bool) -> bool:
    """The readiness probe: GET /healthz, or a malformed CloudEvent (acknowledged, 2xx)."""
    if event:
        request = urllib.request.Request(
            url,
            data=b'{"message": "not a pubsub message"}',
            method="POST",
            headers={**EVENT_HEADERS, "ce-source": "//bench", "ce-id": str(uuid.uuid4())},
        )
    else:
        request = urllib.request.Request(url + "healthz")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError:
        return False


def _send(url: str, first: FirstRequest) -> tuple[int, bytes] | None:
    """The request, once; None while nothing listens (the request was not delivered)."""
    request = urllib.request.Request(
        url.rstrip("/") + first.path, data=first.body, method=first.method, headers=first.headers
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        raise


@dataclass
class ColdRun:
    seconds: float  # process start → the first 2xx
    check: dict[str, Any]  # what the first request was seen to do
    warm_seconds: float | None = None  # the same kind of request, next, on the warm process


def cold_start(
    stack: LocalStack,
    name: str,
    argv: list[str],
    env: dict[str, str],
    first: FirstRequest | None,
    event: bool = False,
    log_name: str | None = None,
    then: Callable[[], FirstRequest] | None = None,
) -> ColdRun:
    """Seconds from process start to the first 2xx: of `first` (sent as soon as the port
    accepts, so it is the process's very first request), or of the readiness probe. With
    `then`, one more request of that kind is timed on the now warm process."""
    port = free_port()
    log = stack.state_dir / "logs" / f"{log_name or f'cold-{name}'}.log"
    managed = Managed(
        f"cold-{name}", [*argv, "--host", "127.0.0.1", "--port", str(port)], env, log, ROOT
    )
    url = f"http://127.0.0.1:{port}/"
    began = time.monotonic()
    managed.start()
    try:
        deadline = began + 60
        while time.monotonic() < deadline:
            if first is None:
                with contextlib.suppress(OSError):
                    if _probe(url, event):
                        return ColdRun(time.monotonic() - began, {})
            elif (answer := _send(url, first)) is not None:
                took = time.monotonic() - began
                with log.open("a") as f:
                    f.write(f"\n{FIRST_RESPONSE_MARK}\n")
                try:
                    run = ColdRun(took, first.check(*answer))
                    if then is not None:
                        second = then()
                        began = time.monotonic()
                        answer = _send(url, second)
                        run.warm_seconds = time.monotonic() - began
                        second.check(*(answer or (0, b"")))
                    return run
                except Exception as exc:
                    raise RuntimeError(f"{name}: {exc}\n{managed.tail()}") from exc
            if not managed.alive():
                raise RuntimeError(f"{name} exited:\n{managed.tail()}")
            time.sleep(0.01)
        raise TimeoutError(f"{name} not answering after 60 s:\n{managed.tail()}")
    finally:
        managed.stop(grace_seconds=0)  # nothing left to finish: no need to wait for it


# -- importtime --------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    module: str
    depth: int
    self_us: int
    cumulative_us: int
    parent: int | None  # index of the import that pulled this one in


def parse_importtime(
    text: str, absent: frozenset[str] = frozenset()
) -> tuple[list[Imported], dict[str, str]]:
    """The imports up to the first response (`-X importtime` lines, printed children
    first), each with its parent, and the tracer's call stacks by module. importtime lists
    failed imports too: those of `absent` modules (bench/bare/deployed) are left out."""
    rows: list[tuple[str, int, int, int]] = []
    traces: dict[str, str] = {}
    for line in text.split(FIRST_RESPONSE_MARK)[0].splitlines():
        if m := IMPORT_LINE.match(line):
            if _within(m.group(4), absent):
                continue
            rows.append((m.group(4), len(m.group(3)) // 2, int(m.group(1)), int(m.group(2))))
        elif m := TRACE_LINE.match(line):
            traces[m.group(1)] = m.group(2)
    parents: list[int | None] = [None] * len(rows)
    open_imports: list[int] = []  # read backwards, a parent comes before its children
    for i in range(len(rows) - 1, -1, -1):
        while open_imports and rows[open_imports[-1]][1] >= rows[i][1]:
            open_imports.pop()
        parents[i] = open_imports[-1] if open_imports else None
        open_imports.append(i)
    return [Imported(*row, parents[i]) for i, row in enumerate(rows)], traces


def _within(module: str, packages: frozenset[str]) -> bool:
    parts = module.split(".")
    return any(".".join(parts[:i]) in packages for i in range(1, len(parts) + 1))


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _owners() -> dict[str, str]:
    """module → the distribution that installs it, from every installed RECORD. Stdlib
    modules, namespace packages, editable first-party code and imports that failed
    (importtime lists those too) have none."""
    owners: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = _normalise(dist.metadata["Name"] or "")
        for file in dist.files or ():
            parts = list(file.parts)
            if not parts or parts[0] == ".." or (len(parts) > 1 and "." in parts[0]):
                continue  # scripts, *.dist-info/, *.data/
            stem, dot, suffix = parts[-1].partition(".")
            if not dot or suffix.rsplit(".", 1)[-1] not in ("py", "so", "pyd"):
                continue
            parts[-1] = stem
            if stem == "__init__":
                parts.pop()
            owners.setdefault(".".join(parts), name)
    return owners


def library_of(module: str) -> str | None:
    """The distribution a module comes from, or None (stdlib, namespace, first party)."""
    if module.split(".")[0] in FIRST_PARTY:
        return None
    return _owners().get(module)


def _third_party(module: str, bare: set[str]) -> str | None:
    library = library_of(module)
    return None if library is None or library in bare else library


def _chain(imports: list[Imported], index: int) -> list[str]:
    chain = []
    at: int | None = index
    while at is not None:
        chain.append(imports[at].module)
        at = imports[at].parent
    return chain[::-1]


def analyse_imports(
    imports: list[Imported],
    traces: dict[str, str],
    bare: set[str],
    bare_modules: set[str],
    needed: tuple[str, ...],
) -> dict[str, Any]:
    """The function's own libraries (neither stdlib, imagegen, nor anything bare loads),
    the outermost modules through which they were loaded (what the allowance imports), and
    each client library loaded though the request does not need it, with what pulled it in
    (not one that a needed library imports itself: that is part of the needed one's cost)."""
    libraries: dict[str, int] = {}
    top_modules: dict[str, int] = {}
    own_us = 0  # imagegen, and the stdlib modules it imports itself: not in the allowance
    for i, imported in enumerate(imports):
        library = _third_party(imported.module, bare)
        under_library = any(_third_party(a, bare) for a in _chain(imports, i)[:-1])
        if library is None:
            if not under_library and imported.module not in bare_modules:
                own_us += imported.self_us
            continue
        libraries[library] = libraries.get(library, 0) + imported.self_us
        if not under_library:
            top_modules.setdefault(imported.module, imported.cumulative_us)
    roots = sorted((m for m in imports if m.parent is None), key=lambda m: -m.cumulative_us)
    callers: dict[str | None, str] = {}
    for module, stack in traces.items():
        callers.setdefault(library_of(module), stack)
    unneeded = []
    for library in CLIENT_LIBRARIES:
        if library not in libraries or library in needed:
            continue
        outermost = min(
            (i for i, m in enumerate(imports) if library_of(m.module) == library),
            key=lambda i: (imports[i].depth, i),
        )
        chain = _chain(imports, outermost)
        if any(library_of(m) in needed for m in chain):
            continue
        unneeded.append(
            {
                "library": library,
                "heavy": library in HEAVY,
                "chain": chain,
                "imported_from": callers.get(library),
            }
        )
    extra = {u["library"] for u in unneeded}
    return {
        "top": [
            {"module": m.module, "cumulative_s": round(m.cumulative_us / 1e6, 4)} for m in roots[:8]
        ],
        "own_modules_s": round(own_us / 1e6, 4),
        "libraries_s": {
            k: round(v / 1e6, 4) for k, v in sorted(libraries.items(), key=lambda kv: -kv[1])
        },
        "top_modules": [m for m in top_modules if library_of(m) not in extra],
        "unneeded_top_modules": [m for m in top_modules if library_of(m) in extra],
        "heavy_loaded": [h for h in HEAVY if h in libraries],
        "needed_not_loaded": [n for n in needed if n not in libraries],
        "heavy_unneeded": [u for u in unneeded if u["heavy"]],
        "other_unneeded": [u for u in unneeded if not u["heavy"]],
    }


def _fresh(snippet: str, args: list[Any], env: dict[str, str], what: str) -> Any:
    """Runs `snippet` in a fresh interpreter with `args` as JSON; its last line, parsed."""
    done = subprocess.run(
        [PYTHON, "-c", snippet, json.dumps(args)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def allowance(modules: list[str], extra: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Seconds to import `modules` in a fresh interpreter after functions_framework, then
    `extra` on top (the unneeded ones), without importtime's overhead."""
    return _fresh(ALLOWANCE_SNIPPET, [modules, extra], env, "allowance timing")


def _wire(request: FirstRequest) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "headers": request.headers,
        "body": (request.body or b"").decode("latin-1"),
    }


def libraries_loaded(
    argv: list[str],
    env: dict[str, str],
    modules: list[str],
    first: FirstRequest,
    second: FirstRequest,
) -> dict[str, float]:
    """With the allowance's modules already imported: seconds to import the function's app
    (main.py and imagegen), then its first request and the next one, each checked."""
    option = argv.index
    args = [
        modules,
        argv[option("--source") + 1],
        argv[option("--target") + 1],
        argv[option("--signature-type") + 1],
        _wire(first),
        _wire(second),
    ]
    out = _fresh(LOADED_SNIPPET, args, env, "libraries-loaded run")
    for request, answer in ((first, out["first"]), (second, out["second"])):
        request.check(answer["status"], answer["body"].encode("latin-1"))
    return {"import_s": out["import_s"], "first_s": out["first"]["s"], "warm_s": out["second"]["s"]}


BARE = "bare"  # deployed_distributions()'s key for the bare functions


def deployed_distributions() -> dict[str, set[str]]:
    """What each function's bundle installs (functions-framework's own for the bare ones)."""
    from infra.bundle import Lock, plan

    lock = Lock.load()
    deployed = {b.function.name: lock.closure(b.direct) for b in plan(lock=lock)}
    deployed[BARE] = lock.closure(["functions-framework"])
    return deployed


def hidden_env(distributions: set[str], owners: dict[str, str]) -> dict[str, str]:
    """The environment that hides what .venv has and a deployment of `distributions` would
    not (bench/bare/deployed): the outermost modules of every other installed distribution,
    except where a namespace package such as google.cloud is shared with one inside."""
    kept: set[str] = set()
    for module, owner in owners.items():
        if owner in distributions:
            parts = module.split(".")
            kept.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    outermost: list[str] = []
    for module in sorted(m for m, o in owners.items() if o not in distributions):
        if module not in kept and not (outermost and module.startswith(outermost[-1] + ".")):
            outermost.append(module)
    return {
        "BENCH_ABSENT_MODULES": ",".join(outermost),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(DEPLOYMENT_ONLY), os.environ.get("PYTHONPATH")) if p
        ),
    }


def _absent(subject: tuple[list[str], str, dict[str, str]]) -> frozenset[str]:
    return frozenset(subject[2]["BENCH_ABSENT_MODULES"].split(","))


OWN_CODE = ("shared/imagegen", "functions", "bench/bare/main.py")


def compile_as_built(pycache: Path, env: dict[str, str]) -> None:
    """The product's code (and the bare function) compiled as the Cloud Functions build
    compiles an uploaded source folder: `python3 -m compileall -f -q .`, with the build
    environment Terraform gives it (infra.bundle.BUILD_ENVIRONMENT)."""
    from infra.bundle import BUILD_ENVIRONMENT

    for own in ("shared", "functions", "bench"):
        shutil.rmtree(pycache / (ROOT / own).relative_to(ROOT.anchor), ignore_errors=True)
    subprocess.run(
        [PYTHON, "-m", "compileall", "-f", "-q", *(str(ROOT / p) for p in OWN_CODE)],
        env={**env, **BUILD_ENVIRONMENT, "PYTHONPYCACHEPREFIX": str(pycache)},
        check=True,
        capture_output=True,
    )


# -- the phase ---------------------------------------------------------------------------


def phase_coldstart(bench: Bench, reps: int, only: tuple[str, ...] | None = None) -> dict:
    stack = bench.stack
    # Fixtures stay put: no webhook from fal (the bench delivers it), no relay (Eventarc)
    # dispatching what the bench accepts, nothing queued behind a long inference.
    bench.sim_config(webhook="none", inference_delay=0, queue_delay=0)
    stack.processes["relay"].stop()
    tap = Tap()
    firsts = ColdRequests(bench, tap)
    # Bytecode as in a deployment: the libraries' compiled once (the buildpack compiles
    # what pip installs), the product's own code compiled by the buildpack's compileall
    # step with the build environment Terraform sets (hash-checked bytecode, which the
    # image export's timestamp normalisation cannot invalidate: decision 0009). This
    # machine writes no bytecode and .venv has none, so a private cache holds it: without
    # one every start would compile the framework and the libraries too.
    pycache = stack.state_dir / "pycache"
    base_env = {
        **os.environ,
        **stack.env,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPYCACHEPREFIX": str(pycache),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    bin_ff = str(Path(PYTHON).parent / "functions-framework")
    bare_source = str(ROOT / "bench" / "bare" / "main.py")
    from infra.bundle import module_owners

    deployed, owners = deployed_distributions(), module_owners()
    subjects: dict[str, tuple[list[str], str, dict[str, str]]] = {}  # argv, signature, env
    for signature, target in (("http", "bare_http"), ("cloudevent", "bare_event")):
        argv = [bin_ff, "--source", bare_source, "--target", target]
        env = {**base_env, **hidden_env(deployed[BARE], owners)}
        subjects[target] = ([*argv, "--signature-type", signature], signature, env)
    functions = [f for f in FUNCTIONS if only is None or f[0] in only]
    bare_of = {n: "bare_event" if s == "cloudevent" else "bare_http" for n, _, _, s in functions}
    for name, _folder, _target, signature in functions:
        argv = stack.function_argv(name)
        env = {
            **base_env,
            **hidden_env(deployed[name], owners),
            "THREADS": str(BenchStack.threads.get(name, 1)),
        }
        if name == "dispatcher":
            # The check it schedules would otherwise make the stack's watchdog ingest the
            # generation in the background while later processes are timed.
            env["WATCHDOG_FIRST_CHECK_SECONDS"] = "3600"
        subjects[name] = (argv[: argv.index("--host")], signature, env)
    traced_modules = ",".join(m for modules in CLIENT_LIBRARIES.values() for m in modules)
    first: dict[str, list[float]] = {name: [] for name in subjects}
    ready: dict[str, list[float]] = {name: [] for name in subjects}
    warm: dict[str, list[float]] = {name: [] for name in subjects}
    timings: dict[str, list[dict[str, Any]]] = {name: [] for name in subjects}
    loaded: dict[str, list[dict[str, float]]] = {name: [] for name in subjects}
    checks: dict[str, dict[str, Any]] = {}
    described: dict[str, str] = {}
    found: dict[str, dict[str, Any]] = {}
    try:
        # 0. Every subject's first request once, writing bytecode; then the product's own
        # (and the bare functions') is compiled again as the build compiles it. This also
        # warms the disk cache up.
        for name, (argv, _signature, env) in subjects.items():
            writing = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
            cold_start(stack, name, argv, writing, firsts.build(name), log_name=f"{name}-pyc")
        compile_as_built(pycache, base_env)
        # 1. importtime through the real first request, the bare functions too.
        logs: dict[str, str] = {}
        for name, (argv, _signature, env) in subjects.items():
            log_name = f"cold-{name}-importtime"
            (stack.state_dir / "logs" / f"{log_name}.log").unlink(missing_ok=True)
            traced = {
                **env,
                "PYTHONPROFILEIMPORTTIME": "1",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(IMPORT_TRACER), env.get("PYTHONPATH")) if p
                ),
                "BENCH_TRACE_IMPORTS": traced_modules,
            }
            cold_start(stack, name, argv, traced, firsts.build(name), log_name=log_name)
            logs[name] = (stack.state_dir / "logs" / f"{log_name}.log").read_text()
        bare_modules = {
            target: {m.module for m in parse_importtime(logs[target], _absent(subjects[target]))[0]}
            for target in ("bare_http", "bare_event")
        }
        bare_loaded = {
            target: {lib for m in modules if (lib := library_of(m))}
            for target, modules in bare_modules.items()
        }
        for name, *_ in functions:
            imports, traces = parse_importtime(logs[name], _absent(subjects[name]))
            bare = bare_of[name]
            found[name] = analyse_imports(
                imports, traces, bare_loaded[bare], bare_modules[bare], NEEDED[name][0]
            )
        # 2. The timed runs, in rounds so that the machine's load drifts over all alike:
        # each function's ready probe, its real first request, and its allowance.
        for _ in range(reps):
            for name, (argv, signature, env) in subjects.items():
                if name in found:
                    probed = cold_start(stack, name, argv, env, None, signature == "cloudevent")
                    ready[name].append(probed.seconds)
                request = firsts.build(name)  # built before the process starts
                described[name] = request.describe
                again = partial(firsts.build, name) if name in found else None
                run = cold_start(stack, name, argv, env, request, then=again)
                first[name].append(run.seconds)
                if run.warm_seconds is not None:
                    warm[name].append(run.warm_seconds)
                checks[name] = run.check
                if name in found:
                    timings[name].append(
                        allowance(
                            found[name]["top_modules"],
                            found[name]["unneeded_top_modules"],
                            env,
                        )
                    )
                    loaded[name].append(
                        libraries_loaded(
                            argv,
                            env,
                            found[name]["top_modules"] + found[name]["unneeded_top_modules"],
                            firsts.build(name),
                            firsts.build(name),
                        )
                    )
    finally:
        tap.close()
    out: dict[str, Any] = {
        "bare_http_s": spread(first["bare_http"]),
        "bare_event_s": spread(first["bare_event"]),
    }
    for name, *_ in functions:
        needed, reason = NEEDED[name]
        allowance_s = spread([t["needed_s"] for t in timings[name]])
        bare_median = statistics.median(first[bare_of[name]])
        median = statistics.median(first[name])
        target_s = TARGETS["coldstart_ratio_max"] * bare_median + allowance_s["median"]
        libraries = found[name]["libraries_s"]
        out[name] = {
            "request": described[name],
            "first_s": spread(first[name]),
            "ready_s": spread(ready[name]),
            "warm_s": spread(warm[name]),
            "bare": bare_of[name],
            "allowance_s": allowance_s,
            "unneeded_import_s": spread([t["extra_s"] for t in timings[name]]),
            # The same function with its libraries already imported: what is left of a
            # cold start besides them and the framework (see table's second part).
            "libraries_loaded": {
                key: spread([run[key] for run in loaded[name]])
                for key in ("import_s", "first_s", "warm_s")
            },
            "ratio_to_bare": median / bare_median,
            "target_s": target_s,
            "met": median <= target_s,
            "last_check": checks[name],
            "needed": {"libraries": list(needed), "why": reason},
            "importtime": found[name]
            | {
                "not_in_deployment": [lib for lib in libraries if lib not in deployed[name]],
                "allowance_import_failures": sorted(
                    {f for t in timings[name] for f in t["failed"]}
                ),
            },
        }
    return out


# -- the run -----------------------------------------------------------------------------


PHASES = ("pipeline", "ingest", "coldstart", "accept")


def run(smoke: bool, out_path: Path, phases: tuple[str, ...] = PHASES) -> dict[str, Any]:
    levels: tuple[int, ...]
    cold_only: tuple[str, ...] | None
    if smoke:
        reps = {"pipeline": 1, "accept": 1, "ingest": 1, "cold": 1}
        levels, duration, cold_only = (2,), 1.0, ("api", "dispatcher")
    else:
        reps = {"pipeline": 15, "accept": 3, "ingest": 7, "cold": 7}
        levels, duration, cold_only = (1, 8, 32), 8.0, None
    BenchStack.threads = production_threads()
    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="imagegen-bench-"))
    stack = BenchStack(state_dir=state, inference_delay=0.0, fal_key="sim-key")
    result: dict[str, Any] = {
        "smoke": smoke,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "threads": BenchStack.threads,
        "targets": TARGETS,
        "completion_read": "Firestore document read directly every 20 ms",
    }
    phase_seconds: dict[str, float] = {}
    memory: dict[str, dict[str, float]] = {"accept": {}, "ingest": {}}
    print("bench: starting the local stack...", file=sys.stderr, flush=True)
    stack.start()
    phase_seconds["stack_start"] = time.monotonic() - started
    saved = dict(os.environ)
    os.environ.update(stack.env)  # fal_client reads FAL_*_HOST and SSL_CERT_FILE at import
    try:
        bench = Bench(stack)
        for name, phase in (
            ("pipeline", lambda: phase_pipeline(bench, reps["pipeline"])),
            ("ingest", lambda: phase_ingest(bench, reps["ingest"])),
            # Before accept: its ~16k queued records would make cleanup's first sweep scan
            # them all (the emulator has no indexes; production's retention query does not).
            ("coldstart", lambda: phase_coldstart(bench, reps["cold"], cold_only)),
            ("accept", lambda: phase_accept(bench, levels, reps["accept"], duration)),
        ):
            if name not in phases:
                continue
            print(f"bench: {name}...", file=sys.stderr, flush=True)
            began = time.monotonic()
            if name in memory:
                with peak_rss(stack, memory[name]):
                    result[name] = phase()
            else:
                result[name] = phase()
            phase_seconds[name] = time.monotonic() - began
    finally:
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)
    result["memory_peak_rss_mib"] = memory
    result["seconds"] = {**phase_seconds, "total": time.monotonic() - started}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=str))
    return result


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def _yes(met: bool) -> str:
    return "met" if met else "MISSED"


def _pulled_in_by(unneeded: dict[str, Any]) -> str:
    """The importtime chain into the library, and the product code that ran its import."""
    chain = " → ".join(unneeded["chain"])
    frames = [
        f for f in (unneeded["imported_from"] or "").split(" <- ") if f.startswith("imagegen/")
    ]
    return chain + (f", from {' ← '.join(frames[:3])}" if frames else "")


def table(r: dict[str, Any]) -> str:
    """The result as a Markdown table (printed and pasted into bench/README.md), then the
    cold-start imports per function."""
    rows = [
        "| Phase | Measure | Product | Floor | Ratio | Target | |",
        "|---|---|---|---|---|---|---|",
    ]
    pipelines = {k: v for k, v in r.get("pipeline", {}).items() if k != "pubsub_hop_s"}
    for key, p in pipelines.items():
        pl, fl = p["pipeline_s"], p["floor_s"]
        rows.append(
            f"| pipeline {key.replace('_', ' ')} | p50 ms (p25–p75) / p95 ms "
            f"| {_ms(pl['median'])} ({_ms(pl['p25'])}–{_ms(pl['p75'])}) / {_ms(pl['p95'])} "
            f"| {_ms(fl['median'])} ({_ms(fl['p25'])}–{_ms(fl['p75'])}) / {_ms(fl['p95'])} "
            f"| p50 {p['p50_ratio']:.2f}, p95 {p['p95_ratio']:.2f} | p50 ≤ 1.5 | {_yes(p['met'])} |"
        )
    if hop := r.get("pipeline", {}).get("pubsub_hop_s"):
        rows.append(
            f"| pipeline: the Pub/Sub hop alone | publish → a waiting pull receives it, ms "
            f"(min–max) | {_ms(hop['median'])} ({_ms(hop['min'])}–{_ms(hop['max'])}) "
            "| not in the floor | — | — | |"
        )
    for c, a in r.get("accept", {}).items():
        api, fl = a["api"], a["floor"]
        rows.append(
            f"| accept c={c} | req/s; p50/p99 ms; errors "
            f"| {api['rps']['median']:.1f} ({api['rps']['min']:.1f}–{api['rps']['max']:.1f}); "
            f"{_ms(api['p50_s']['median'])}/{_ms(api['p99_s']['median'])}; {api['errors']} "
            f"| {fl['rps']['median']:.1f} ({fl['rps']['min']:.1f}–{fl['rps']['max']:.1f}); "
            f"{_ms(fl['p50_s']['median'])}/{_ms(fl['p99_s']['median'])}; {fl['errors']} "
            f"| rps {a['rps_ratio']['median']:.2f}, p99 {a['p99_ratio']['median']:.2f} "
            f"| rps ≥ 0.7, p99 ≤ 3, 0 errors | {_yes(a['met'])} |"
        )
        if sv := a.get("served"):
            rows.append(
                f"| accept c={c}, served floor | req/s; p50/p99 ms; errors "
                f"| (same api run) "
                f"| {sv['rps']['median']:.1f} ({sv['rps']['min']:.1f}–{sv['rps']['max']:.1f}); "
                f"{_ms(sv['p50_s']['median'])}/{_ms(sv['p99_s']['median'])}; {sv['errors']} "
                f"| api/served rps {a['rps_ratio_to_served']['median']:.2f}; "
                f"served/floor rps {a['served_rps_ratio_to_floor']['median']:.2f} | — | |"
            )
    if i := r.get("ingest"):
        rows.append(
            f"| ingest {i['images']}×1024² | images/s (p25–p75) "
            f"| {i['ingest_images_per_s']['median']:.1f} ({i['ingest_images_per_s']['p25']:.1f}–"
            f"{i['ingest_images_per_s']['p75']:.1f}) "
            f"| {i['floor_images_per_s']['median']:.1f} ({i['floor_images_per_s']['p25']:.1f}–"
            f"{i['floor_images_per_s']['p75']:.1f}) "
            f"| {i['ratio']['median']:.2f} | ≥ 0.8 | {_yes(i['met'])} |"
        )
        if t := i.get("floor_with_thumbnails_images_per_s"):
            rows.append(
                f"| ingest, floor with thumbnails | images/s (p25–p75) | (same ingest run) "
                f"| {t['median']:.1f} ({t['p25']:.1f}–{t['p75']:.1f}) "
                f"| {i['ratio_to_floor_with_thumbnails']['median']:.2f} | — | |"
            )
    cs = r.get("coldstart", {})
    cold = [(name, cs[name]) for name, *_ in FUNCTIONS if name in cs]
    for name, f in cold:
        first, bare = f["first_s"], cs[f"{f['bare']}_s"]
        rows.append(
            f"| cold start {name} | ms to the first 2xx of a real first request (min–max); "
            f"ready (/healthz or malformed event); the next such request, warm "
            f"| {_ms(first['median'])} ({_ms(first['min'])}–{_ms(first['max'])}); "
            f"ready {_ms(f['ready_s']['median'])}; warm {_ms(f['warm_s']['median'])} "
            f"| bare {_ms(bare['median'])} + allowance {_ms(f['allowance_s']['median'])} "
            f"| {f['ratio_to_bare']:.2f} × bare "
            f"| ≤ 1.5 × bare + allowance = {_ms(f['target_s'])} | {_yes(f['met'])} |"
        )
    mem = r["memory_peak_rss_mib"]
    for phase in ("accept", "ingest"):
        if mem.get(phase):
            cells = ", ".join(f"{n} {v:.0f}" for n, v in sorted(mem[phase].items()))
            rows.append(f"| memory ({phase} load) | peak RSS MiB | {cells} | | | | |")
    if cold:
        rows += [
            "",
            "| Cold start, beyond bare + allowance | Product, ms | Bare | Allowance "
            "| Libraries loaded: app import | Libraries loaded: first request (next) "
            "| Bare + allowance + import + first request | The target's slack, 0.5 × bare "
            "| Import + first request |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for name, f in cold:
        bare = cs[f"{f['bare']}_s"]["median"]
        allowed = f["allowance_s"]["median"]
        ll = f.get("libraries_loaded")
        if not ll:
            continue
        imported, request = ll["import_s"]["median"], ll["first_s"]["median"]
        rows.append(
            f"| {name} | {_ms(f['first_s']['median'])} | {_ms(bare)} | {_ms(allowed)} "
            f"| {_ms(imported)} | {_ms(request)} ({_ms(ll['warm_s']['median'])}) "
            f"| {_ms(bare + allowed + imported + request)} "
            f"| {_ms(f['target_s'] - bare - allowed)} | {_ms(imported + request)} |"
        )
    if cold:
        rows += [
            "",
            "| Cold start | First request | Libraries it loaded (self ms) "
            "| Client libraries loaded, not needed (**heavy**): chain, caller; their import "
            "| importtime top 8 (cumulative ms) |",
            "|---|---|---|---|---|",
        ]
    for name, f in cold:
        it = f["importtime"]
        dev = set(it["not_in_deployment"])
        libs = ", ".join(
            f"{k}{'†' if k in dev else ''} {v * 1000:.0f}"
            for k, v in it["libraries_s"].items()
            if v >= 0.001
        )
        small = sum(1 for v in it["libraries_s"].values() if v < 0.001)
        unneeded = "; ".join(
            (f"**{u['library']}**" if u["heavy"] else u["library"]) + f" ({_pulled_in_by(u)})"
            for u in it["heavy_unneeded"] + it["other_unneeded"]
        )
        if unneeded:
            unneeded += f"; +{_ms(f['unneeded_import_s']['median'])} ms"
        top = ", ".join(f"{t['module']} {_ms(t['cumulative_s'])}" for t in it["top"])
        rows.append(
            f"| {name} | {f['request']} | {libs}{f' (+{small} under 1 ms)' if small else ''}; "
            f"own modules (imagegen and the stdlib it imports) {_ms(it['own_modules_s'])} "
            f"| {unneeded or 'none'} | {top} |"
        )
    if any(f["importtime"]["not_in_deployment"] for _, f in cold):
        rows += [
            "",
            "† not in the function's bundle: it imported it although bench/bare/deployed hides it.",
        ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.bench")
    parser.add_argument("--smoke", action="store_true", help="minimal repetitions")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    args = parser.parse_args()
    phases = tuple(p for p in args.phases.split(",") if p)
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    result = run(args.smoke, args.out, phases)
    print(table(result))
    print(f"\n{args.out} written; {result['seconds']['total']:.0f} s in all")


if __name__ == "__main__":
    main()
