"""The fal.ai simulator, driven by the real fal_client the way the product drives it.

fal_client reads FAL_QUEUE_RUN_HOST when it is imported, so each fal_client call runs in
a fresh interpreter whose environment points it (and httpx's SSL_CERT_FILE) at the
simulator. Fault-mode tests that are about the simulator's own behaviour use httpx.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image, UnidentifiedImageError

from imagegen.webhook_signature import WebhookSignatureError, verify_signature
from infra.falsim import (
    Faults,
    SimConfig,
    SimulatorServer,
    WebhookMode,
    load_private_key,
    prompt_faults,
    sign_webhook,
)

pytestmark = pytest.mark.integration

DEV = "fal-ai/flux/dev"
SCHNELL = "fal-ai/flux/schnell"
LORA = "fal-ai/flux-lora"
PRO = "fal-ai/flux-pro/v1.1"
KONTEXT = "fal-ai/flux-pro/kontext"
SDXL = "fal-ai/fast-sdxl"
# Stands in for a V4 signed URL's credentials: must reach the server, never the reports.
SIGNATURE = "X-Goog-Signature=0123456789abcdef&X-Goog-Credential=sim%40example"
LORA_BYTES = b"safetensors-dummy-" * 1000
INPUT_SIZE = (300, 200)
INPUT_COLOUR = (20, 180, 60)
KEY_HEADER = {"Authorization": "Key test-key"}
CONFIG = SimConfig(
    queue_delay=0.3,
    inference_delay=0.3,
    webhook_delay=0.05,
    webhook_attempts=3,
    webhook_backoff=0.05,
)

# Runs before every fal_client script; ARGS comes from the test as JSON.
PRELUDE = """
import json, sys, time
import fal_client
from fal_client.client import FalClientHTTPError

fal_client.client.MAX_ATTEMPTS = 2
client = fal_client.SyncClient(key="test-key")
ARGS = json.loads(sys.argv[1])

def emit(value):
    print("RESULT " + json.dumps(value))

def http_error(call):
    try:
        call()
    except FalClientHTTPError as exc:
        return {"status_code": exc.status_code, "body": exc.response.json()}
    raise AssertionError("expected an HTTP error")

def wait_completed(handle):
    seen = []
    while True:
        status = handle.status(with_logs=True)
        if not seen or seen[-1] != type(status).__name__:
            seen.append(type(status).__name__)
        if isinstance(status, fal_client.Completed):
            return status, seen
        time.sleep(0.03)
"""


def run_fal(sim: SimulatorServer, script: str, **args: Any) -> Any:
    env = {
        **os.environ,
        "FAL_QUEUE_RUN_HOST": sim.netloc,
        "FAL_RUN_HOST": sim.netloc,
        "SSL_CERT_FILE": str(sim.ca_bundle),
    }
    env.pop("FAL_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + script, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, proc.stdout + proc.stderr
    return json.loads(results[-1].removeprefix("RESULT "))


def wait_until(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.03)


def verify_fal_signature(jwks: dict[str, Any], headers: dict[str, str], body: bytes) -> None:
    """Check a delivery the way a receiver must: against fal's published JWKS."""
    message = "\n".join(
        [
            headers["x-fal-webhook-request-id"],
            headers["x-fal-webhook-user-id"],
            headers["x-fal-webhook-timestamp"],
            hashlib.sha256(body).hexdigest(),
        ]
    ).encode()
    signature = bytes.fromhex(headers["x-fal-webhook-signature"])
    for jwk in jwks["keys"]:
        assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
        raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
            return
        except InvalidSignature:
            continue
    raise AssertionError("no JWKS key verifies the webhook signature")


class LocalHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops the rest of a burst of connections (retried 1 s later).
    request_queue_size = 64


class WebhookReceiver:
    """A plain-HTTP endpoint recording deliveries; can fail the next N with 500."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self._failures_left = 0
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._changed:
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    receiver.deliveries.append((headers, body))
                    fail = receiver._failures_left > 0
                    if fail:
                        receiver._failures_left -= 1
                    receiver._changed.notify_all()
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = LocalHttpServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/fal/webhook"

    def fail_next(self, count: int) -> None:
        with self._changed:
            self._failures_left = count

    def for_request(self, request_id: str) -> list[tuple[dict[str, str], bytes]]:
        with self._changed:
            return [d for d in self.deliveries if d[0]["x-fal-webhook-request-id"] == request_id]

    def wait_for(
        self, request_id: str, count: int, timeout: float = 5.0
    ) -> list[tuple[dict[str, str], bytes]]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.for_request(request_id)) >= count, timeout)
        found = self.for_request(request_id)
        assert len(found) >= count, f"{len(found)} webhook deliveries, expected {count}"
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _input_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", INPUT_SIZE, INPUT_COLOUR).save(buffer, "PNG")
    return buffer.getvalue()


class FileServer:
    """Plain-HTTP input files, like the local GCS emulator behind the product's signed URLs.

    ``/files/...`` serve their body; ``/forbidden/...`` answer 403; every hit is recorded
    with its query string and time.
    """

    FILES = {
        "/files/style.safetensors": LORA_BYTES,
        "/files/input.png": _input_png(),
        "/files/broken.png": b"this is not an image",
    }

    def __init__(self) -> None:
        self.hits: list[tuple[str, str, float]] = []  # path, query, time
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                server.hits.append((path, query, time.time()))
                body = server.FILES.get(path)
                status = 200 if body is not None else 403 if path.startswith("/forbidden") else 404
                body = body if body is not None else b"<Error>AccessDenied</Error>"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        """Without the signature: what the simulator may report."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def signed_url(self, path: str) -> str:
        return f"{self.url(path)}?{SIGNATURE}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorServer]:
    server = SimulatorServer(tmp_path_factory.mktemp("falsim"), config=CONFIG).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(sim: SimulatorServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(sim.ca_bundle))
    with httpx.Client(base_url=sim.base_url, verify=context, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def configure(http: httpx.Client) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Patch the simulator's config for one test, then put it back.

    Not /_sim/reset: that would also drop the module's shared request and its images.
    """
    original = http.get("/_sim/config").json()

    def apply(patch: dict[str, Any]) -> None:
        http.post("/_sim/config", json=patch).raise_for_status()

    yield apply
    http.post("/_sim/config", json=original).raise_for_status()


def submit_raw(http: httpx.Client, app: str, arguments: dict[str, Any], webhook: str) -> str:
    response = http.post(
        f"/{app}", params={"fal_webhook": webhook}, json=arguments, headers=KEY_HEADER
    )
    response.raise_for_status()
    return response.json()["request_id"]


def sim_request(http: httpx.Client, request_id: str) -> dict[str, Any]:
    return http.get(f"/_sim/requests/{request_id}").json()


@pytest.fixture(scope="module")
def dev_run(sim: SimulatorServer, receiver: WebhookReceiver) -> dict[str, Any]:
    """One flux/dev request through submit, status polling and result, with a webhook."""
    return run_fal(
        sim,
        """
handle = client.submit(ARGS["app"], ARGS["arguments"], webhook_url=ARGS["webhook"])
completed, seen = wait_completed(handle)
emit({
    "request_id": handle.request_id,
    "statuses": seen,
    "completed": {"metrics": completed.metrics, "error": completed.error, "logs": completed.logs},
    "result": handle.get(),
    "result_by_id": client.result(ARGS["app"], handle.request_id),
})
""",
        app=DEV,
        webhook=receiver.url,
        arguments={
            "prompt": "a red fox in fresh snow",
            "image_size": "landscape_4_3",
            "num_images": 2,
            "seed": 1234,
            "output_format": "png",
            "acceleration": "regular",  # unknown keys are ignored, as fal does
        },
    )


def test_status_goes_queued_in_progress_completed(dev_run: dict[str, Any]) -> None:
    assert dev_run["statuses"] == ["Queued", "InProgress", "Completed"]
    completed = dev_run["completed"]
    assert completed["error"] is None
    assert completed["metrics"]["inference_time"] > 0
    assert completed["logs"]


def test_result_has_fal_image_output_shape(dev_run: dict[str, Any]) -> None:
    result = dev_run["result"]
    assert set(result) == {"images", "seed", "has_nsfw_concepts", "timings", "prompt"}
    assert result["seed"] == 1234
    assert result["prompt"] == "a red fox in fresh snow"
    assert result["has_nsfw_concepts"] == [False, False]
    assert result["timings"]["inference"] > 0
    assert len(result["images"]) == 2
    for image in result["images"]:
        assert (image["width"], image["height"], image["content_type"]) == (1024, 768, "image/png")
    # client.result() builds the URL from the app id without its sub-path, like fal.
    assert dev_run["result_by_id"] == result


def test_webhook_arrives_signed_like_fal(
    dev_run: dict[str, Any], receiver: WebhookReceiver, sim: SimulatorServer, http: httpx.Client
) -> None:
    request_id = dev_run["request_id"]
    [(headers, body)] = receiver.wait_for(request_id, 1)

    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": "OK",
        "payload": dev_run["result"],
        "error": None,
    }
    verify_fal_signature(http.get("/.well-known/jwks.json").json(), headers, body)
    assert abs(int(headers["x-fal-webhook-timestamp"]) - time.time()) < 30
    # ED25519 is deterministic, so the public helper must reproduce the signature.
    resigned = sign_webhook(
        load_private_key(sim.signing_key_path),
        request_id,
        headers["x-fal-webhook-user-id"],
        body,
        timestamp=int(headers["x-fal-webhook-timestamp"]),
    )
    assert resigned["X-Fal-Webhook-Signature"] == headers["x-fal-webhook-signature"]


def test_image_urls_serve_images_of_requested_size_and_format(
    dev_run: dict[str, Any], http: httpx.Client
) -> None:
    bodies = []
    for image in dev_run["result"]["images"]:
        response = http.get(image["url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        decoded = Image.open(io.BytesIO(response.content))
        assert (decoded.format, decoded.size) == ("PNG", (1024, 768))
        bodies.append(response.content)
    assert bodies[0] != bodies[1]


def test_fixed_seed_gives_identical_images(sim: SimulatorServer, http: httpx.Client) -> None:
    urls = run_fal(
        sim,
        """
urls = []
for seed in (99, 99, 100):
    handle = client.submit(ARGS["app"], dict(ARGS["arguments"], seed=seed))
    urls.append(handle.get()["images"][0]["url"])
emit(urls)
""",
        app=SCHNELL,
        arguments={"prompt": "lighthouse", "image_size": {"width": 640, "height": 360}},
    )
    first, again, other_seed = (http.get(url).content for url in urls)
    assert first == again
    assert first != other_seed
    decoded = Image.open(io.BytesIO(first))
    assert (decoded.format, decoded.size) == ("JPEG", (640, 360))


def test_invalid_input_is_rejected_with_fal_error_shape(sim: SimulatorServer) -> None:
    errors = run_fal(
        sim,
        """
emit([
    http_error(lambda: client.submit(ARGS["dev"], {"prompt": "x", "num_images": 5})),
    http_error(lambda: client.submit(ARGS["schnell"], {"prompt": "x", "num_inference_steps": 13})),
])
""",
        dev=DEV,
        schnell=SCHNELL,
    )
    for error, field, limit in zip(
        errors, ("num_images", "num_inference_steps"), (4, 12), strict=True
    ):
        assert error["status_code"] == 422
        [detail] = error["body"]["detail"]
        assert detail["loc"] == ["body", field]
        assert detail["type"] == "less_than_equal"
        assert detail["msg"] == f"Input should be less than or equal to {limit}"


def test_deferred_validation_fails_the_queued_request(
    sim: SimulatorServer, receiver: WebhookReceiver, configure: Callable[[dict[str, Any]], None]
) -> None:
    configure({"validation": "deferred"})
    outcome = run_fal(
        sim,
        """
handle = client.submit(ARGS["app"], {"prompt": "x", "num_images": 5}, webhook_url=ARGS["webhook"])
completed, _ = wait_completed(handle)
emit({
    "request_id": handle.request_id,
    "error": completed.error,
    "result": http_error(lambda: client.result(ARGS["app"], handle.request_id)),
})
""",
        app=DEV,
        webhook=receiver.url,
    )
    assert outcome["error"] == "Invalid status code: 422"
    assert outcome["result"]["status_code"] == 422
    assert outcome["result"]["body"]["detail"][0]["loc"] == ["body", "num_images"]
    [(_, body)] = receiver.wait_for(outcome["request_id"], 1)
    webhook = json.loads(body)
    assert (webhook["status"], webhook["error"]) == ("ERROR", "Invalid status code: 422")
    assert webhook["payload"]["detail"] == outcome["result"]["body"]["detail"]


def test_cancel_while_queued(
    sim: SimulatorServer, receiver: WebhookReceiver, configure: Callable[[dict[str, Any]], None]
) -> None:
    configure({"queue_delay": 30})
    outcome = run_fal(
        sim,
        """
handle = client.submit(ARGS["app"], {"prompt": "x"}, webhook_url=ARGS["webhook"])
before = type(handle.status()).__name__
handle.cancel()
completed, _ = wait_completed(handle)
emit({
    "request_id": handle.request_id,
    "before": before,
    "error": completed.error,
    "cancel_again": http_error(handle.cancel),
    "result": http_error(handle.get),
})
""",
        app=DEV,
        webhook=receiver.url,
    )
    assert outcome["before"] == "Queued"
    assert outcome["error"] == "Request was cancelled"
    assert outcome["cancel_again"] == {"status_code": 400, "body": {"status": "ALREADY_COMPLETED"}}
    assert outcome["result"]["status_code"] == 400
    [(_, body)] = receiver.wait_for(outcome["request_id"], 1)
    assert json.loads(body)["status"] == "ERROR"
    assert json.loads(body)["error"] == "Request was cancelled"


def test_submit_error_faults(
    sim: SimulatorServer, http: httpx.Client, configure: Callable[[dict[str, Any]], None]
) -> None:
    script = """
emit({
    "first": http_error(lambda: client.submit(ARGS["app"], {"prompt": "x"})),
    "second": client.submit(ARGS["app"], {"prompt": "x"}).request_id,
})
"""
    configure({"submit_errors": {"status": 500, "count": 1}})
    outcome = run_fal(sim, script, app=DEV)
    assert outcome["first"]["status_code"] == 500
    assert sim_request(http, outcome["second"])["app"] == DEV

    # fal_client retries 429 by itself, so one injected 429 is invisible to the caller.
    configure({"submit_errors": {"status": 429, "count": 1}})
    request_id = run_fal(
        sim, 'emit(client.submit(ARGS["app"], {"prompt": "x"}).request_id)', app=DEV
    )
    assert sim_request(http, request_id)["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert http.get("/_sim/config").json()["submit_errors"] is None


def test_webhook_fault_modes_and_retries(
    http: httpx.Client, receiver: WebhookReceiver, configure: Callable[[dict[str, Any]], None]
) -> None:
    arguments = {"prompt": "x", "image_size": "square"}

    configure({"webhook": "twice"})
    twice = submit_raw(http, SCHNELL, arguments, receiver.url)
    first, second = receiver.wait_for(twice, 2)
    assert first[1] == second[1]

    configure({"webhook": "none"})
    silent = submit_raw(http, SCHNELL, arguments, receiver.url)

    configure({"webhook": "normal"})
    receiver.fail_next(1)
    retried = submit_raw(http, SCHNELL, arguments, receiver.url)
    receiver.wait_for(retried, 2)
    deliveries = wait_until(
        lambda: (d := sim_request(http, retried)["webhook_deliveries"])["succeeded"] and d
    )
    assert (deliveries["count"], deliveries["last_status"]) == (2, 200)
    assert deliveries["attempts"][0]["status_code"] == 500

    # Completed alongside the others, so its webhook would have arrived by now.
    silent_state = sim_request(http, silent)
    assert silent_state["status"] == "COMPLETED"
    assert silent_state["webhook_deliveries"]["count"] == 0
    assert receiver.for_request(silent) == []


def test_auth_unknown_routes_and_bad_config(http: httpx.Client) -> None:
    missing = http.post(f"/{DEV}", json={"prompt": "x"})
    assert missing.status_code == 401
    assert "detail" in missing.json()
    assert (
        http.post("/fal-ai/no-such-app", json={"prompt": "x"}, headers=KEY_HEADER).status_code
        == 404
    )
    unknown = http.get(
        "/fal-ai/flux/requests/00000000-0000-4000-8000-000000000000/status", headers=KEY_HEADER
    )
    assert unknown.status_code == 404
    assert http.get("/healthz").status_code == 200
    assert http.post("/_sim/config", json={"no_such_setting": 1}).status_code == 400
    assert http.post("/_sim/config", json={"nsfw": "yes"}).status_code == 400


def test_restart_reuses_state_and_enforces_expected_key(sim: SimulatorServer) -> None:
    state: Path = sim.state_dir
    ca_before = (state / "ca.pem").read_bytes()
    key_before = sim.signing_key_path.read_bytes()
    with SimulatorServer(state, config=CONFIG, expected_key="right-key") as second:
        assert (state / "ca.pem").read_bytes() == ca_before
        assert second.signing_key_path.read_bytes() == key_before
        context = ssl.create_default_context(cafile=str(second.ca_bundle))
        with httpx.Client(base_url=second.base_url, verify=context, trust_env=False) as client:
            wrong = client.post(f"/{DEV}", json={"prompt": "x"}, headers=KEY_HEADER)
            assert wrong.status_code == 401
            right = client.post(
                f"/{DEV}", json={"prompt": "x"}, headers={"Authorization": "Key right-key"}
            )
            assert right.status_code == 200
            assert len(client.get("/_sim/requests").json()) == 1
            client.post("/_sim/reset").raise_for_status()
            assert client.get("/_sim/requests").json() == []


# -- the other apps the product uses ---------------------------------------------------


@pytest.fixture(scope="module")
def apps_run(sim: SimulatorServer, files: FileServer) -> dict[str, Any]:
    """One valid request to each app (submitted together, so they run side by side)."""
    requests = {
        "lora": (
            LORA,
            {
                "prompt": "a watercolour harbour",
                "image_size": "square",
                "loras": [{"path": files.signed_url("/files/style.safetensors"), "scale": 0.8}],
                "guidance_scale": 0,
                "output_format": "png",
                "seed": 7,
            },
        ),
        "pro": (
            PRO,
            {
                "prompt": "portrait, NSFW-TEST please",
                "image_size": {"width": 640, "height": 480},
                "num_images": 2,
                "safety_tolerance": "5",
                "num_inference_steps": 99,  # flux-pro has no steps: ignored like any unknown key
            },
        ),
        "kontext_ratio": (
            KONTEXT,
            {
                "prompt": "same scene at dusk",
                "image_url": files.signed_url("/files/input.png"),
                "aspect_ratio": "16:9",
                "output_format": "png",
            },
        ),
        "kontext_input_ratio": (
            KONTEXT,
            {"prompt": "same scene at dusk", "image_url": files.signed_url("/files/input.png")},
        ),
        "sdxl": (
            SDXL,
            {
                "prompt": "a lighthouse",
                "negative_prompt": "blurry",
                "image_size": "square",
                "num_images": 2,
                "format": "png",
                "output_format": "jpeg",  # not fast-sdxl's name for it: ignored
            },
        ),
    }
    return run_fal(
        sim,
        """
handles = {name: client.submit(app, arguments) for name, (app, arguments) in ARGS.items()}
emit({
    name: {"request_id": handle.request_id, "result": handle.get()}
    for name, handle in handles.items()
})
""",
        **requests,
    )


def fetch_image(http: httpx.Client, image: dict[str, Any]) -> Image.Image:
    response = http.get(image["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == image["content_type"]
    decoded = Image.open(io.BytesIO(response.content))
    decoded.load()
    return decoded


@pytest.mark.parametrize(
    ("name", "count", "size", "pil_format"),
    [
        ("lora", 1, (512, 512), "PNG"),
        ("pro", 2, (640, 480), "JPEG"),
        ("kontext_ratio", 1, (1360, 768), "PNG"),
        ("kontext_input_ratio", 1, (1248, 832), "JPEG"),
        ("sdxl", 2, (512, 512), "PNG"),
    ],
)
def test_each_app_returns_images_of_requested_size_and_format(
    apps_run: dict[str, Any],
    http: httpx.Client,
    name: str,
    count: int,
    size: tuple[int, int],
    pil_format: str,
) -> None:
    result = apps_run[name]["result"]
    assert set(result) == {"images", "seed", "has_nsfw_concepts", "timings", "prompt"}
    assert len(result["images"]) == count
    content_type = f"image/{pil_format.lower()}"
    for image in result["images"]:
        assert (image["width"], image["height"], image["content_type"]) == (*size, content_type)
        decoded = fetch_image(http, image)
        assert (decoded.format, decoded.size) == (pil_format, size)


def test_defaults_and_ignored_keys(apps_run: dict[str, Any], http: httpx.Client) -> None:
    pro = sim_request(http, apps_run["pro"]["request_id"])
    assert "num_inference_steps" not in pro["input"]
    assert pro["input"]["safety_tolerance"] == "5"
    sdxl = sim_request(http, apps_run["sdxl"]["request_id"])["input"]
    assert (sdxl["num_inference_steps"], sdxl["guidance_scale"], sdxl["loras"]) == (25, 7.5, [])
    assert "output_format" not in sdxl
    kontext = sim_request(http, apps_run["kontext_input_ratio"]["request_id"])["input"]
    assert (kontext["guidance_scale"], kontext["safety_tolerance"]) == (3.5, "2")
    assert kontext["aspect_ratio"] is None


def test_lora_is_downloaded_when_the_request_runs(
    apps_run: dict[str, Any], http: httpx.Client, files: FileServer
) -> None:
    state = sim_request(http, apps_run["lora"]["request_id"])
    assert state["input_fetches"] == [
        {
            "kind": "lora",
            "url": files.url("/files/style.safetensors"),
            "status": 200,
            "bytes": len(LORA_BYTES),
            "error": None,
        }
    ]
    [(_, query, at)] = [hit for hit in files.hits if hit[0] == "/files/style.safetensors"]
    assert query == SIGNATURE  # the signed URL went out intact
    assert state["started_at"] <= at <= state["completed_at"]
    assert state["submitted_at"] < state["started_at"]  # not fetched at submit


def test_kontext_output_is_near_one_megapixel_and_shows_its_input(
    apps_run: dict[str, Any], http: httpx.Client, files: FileServer
) -> None:
    for name, ratio in (("kontext_ratio", 16 / 9), ("kontext_input_ratio", 3 / 2)):
        run = apps_run[name]
        [image] = run["result"]["images"]
        width, height = image["width"], image["height"]
        assert width % 16 == 0 and height % 16 == 0
        assert abs(width * height / 1024**2 - 1) < 0.02
        assert abs(width / height - ratio) < 16 / height * ratio
        [fetch] = sim_request(http, run["request_id"])["input_fetches"]
        assert fetch == {
            "kind": "image",
            "url": files.url("/files/input.png"),
            "status": 200,
            "bytes": len(FileServer.FILES["/files/input.png"]),
            "error": None,
        }
    # The input is pasted, scaled, at the middle of the right edge (PNG: exact colour).
    decoded = fetch_image(http, apps_run["kontext_ratio"]["result"]["images"][0]).convert("RGB")
    assert decoded.getpixel((decoded.width - 40, decoded.height // 2)) == INPUT_COLOUR


def test_nsfw_test_prompt_and_config_flag_images(
    apps_run: dict[str, Any], http: httpx.Client, configure: Callable[[dict[str, Any]], None]
) -> None:
    assert apps_run["pro"]["result"]["has_nsfw_concepts"] == [True, True]
    assert apps_run["sdxl"]["result"]["has_nsfw_concepts"] == [False, False]

    configure({"nsfw": True})
    assert http.get("/_sim/config").json()["nsfw"] is True
    response = http.post(
        f"/{SDXL}",
        json={"prompt": "x", "image_size": "square", "num_images": 3},
        headers=KEY_HEADER,
    )
    request_id = response.json()["request_id"]
    state = wait_until(lambda: (r := sim_request(http, request_id))["output"] and r)
    assert state["output"]["has_nsfw_concepts"] == [True, True, True]


def test_new_apps_reject_out_of_range_input(sim: SimulatorServer) -> None:
    cases = {
        "lora_scale": (LORA, {"prompt": "x", "loras": [{"path": "http://x/a", "scale": 4.5}]}),
        "lora_guidance": (LORA, {"prompt": "x", "guidance_scale": 36}),
        "lora_count": (LORA, {"prompt": "x", "loras": [{"path": "http://x/a"}] * 6}),
        "pro_tolerance": (PRO, {"prompt": "x", "safety_tolerance": "7"}),
        "kontext_no_image": (KONTEXT, {"prompt": "x"}),
        "kontext_ratio": (
            KONTEXT,
            {"prompt": "x", "image_url": "http://x/a", "aspect_ratio": "5:4"},
        ),
        "sdxl_images": (SDXL, {"prompt": "x", "num_images": 9}),
        "sdxl_steps": (SDXL, {"prompt": "x", "num_inference_steps": 66}),
    }
    errors = run_fal(
        sim,
        """
emit({
    name: http_error(lambda: client.submit(app, arguments))
    for name, (app, arguments) in ARGS.items()
})
""",
        **cases,
    )
    expected = {
        "lora_scale": (["body", "loras", 0, "scale"], "less_than_equal"),
        "lora_guidance": (["body", "guidance_scale"], "less_than_equal"),
        "lora_count": (["body", "loras"], "too_long"),
        "pro_tolerance": (["body", "safety_tolerance"], "literal_error"),
        "kontext_no_image": (["body", "image_url"], "missing"),
        "kontext_ratio": (["body", "aspect_ratio"], "literal_error"),
        "sdxl_images": (["body", "num_images"], "less_than_equal"),
        "sdxl_steps": (["body", "num_inference_steps"], "less_than_equal"),
    }
    assert set(errors) == set(expected)
    for name, (loc, type_) in expected.items():
        error = errors[name]
        assert error["status_code"] == 422, name
        [detail] = error["body"]["detail"]
        assert (detail["loc"], detail["type"]) == (loc, type_), name
        assert detail["msg"], name
    assert errors["lora_scale"]["body"]["detail"][0]["msg"] == (
        "Input should be less than or equal to 4"
    )
    assert errors["pro_tolerance"]["body"]["detail"][0]["msg"] == (
        "Input should be '1', '2', '3', '4', '5' or '6'"
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_failed_input_downloads_fail_the_request(
    http: httpx.Client, receiver: WebhookReceiver, files: FileServer
) -> None:
    cases = {
        "forbidden": (
            LORA,
            {"prompt": "x", "loras": [{"path": files.signed_url("/forbidden/style.safetensors")}]},
            ["body", "loras", 0, "path"],
            "file_download_error",
            {"kind": "lora", "url": files.url("/forbidden/style.safetensors"), "status": 403},
        ),
        "unreachable": (
            SDXL,
            {
                "prompt": "x",
                "loras": [
                    {"path": files.signed_url("/files/style.safetensors")},
                    {"path": f"http://127.0.0.1:{_closed_port()}/gone.safetensors?{SIGNATURE}"},
                ],
            },
            ["body", "loras", 1, "path"],
            "file_download_error",
            {"kind": "lora", "status": None},
        ),
        "undecodable": (
            KONTEXT,
            {"prompt": "x", "image_url": files.signed_url("/files/broken.png")},
            ["body", "image_url"],
            "image_load_error",
            {"kind": "image", "url": files.url("/files/broken.png"), "status": 200},
        ),
    }
    request_ids = {
        name: submit_raw(http, app, arguments, receiver.url)
        for name, (app, arguments, *_) in cases.items()
    }
    for name, (_, _, loc, type_, fetch) in cases.items():
        request_id = request_ids[name]
        [(_, body)] = receiver.wait_for(request_id, 1)
        assert SIGNATURE.split("=")[1] not in body.decode(), name
        webhook = json.loads(body)
        assert (webhook["status"], webhook["error"]) == ("ERROR", "Invalid status code: 422")
        [detail] = webhook["payload"]["detail"]
        assert (detail["loc"], detail["type"]) == (loc, type_), name
        assert "?" not in detail["input"] and detail["input"] in detail["msg"], name

        state = sim_request(http, request_id)
        assert (state["status"], state["error"]) == ("COMPLETED", "Invalid status code: 422")
        last = state["input_fetches"][-1]
        assert fetch.items() <= last.items(), name
        assert last["error"] and "?" not in last["url"], name
        result = http.get(state["response_url"], headers=KEY_HEADER)
        assert result.status_code == 422
        assert result.json()["detail"] == webhook["payload"]["detail"]

    forbidden = sim_request(http, request_ids["forbidden"])["input_fetches"]
    assert [f["error"] for f in forbidden] == ["HTTP 403 Forbidden"]
    # The reachable LoRA before the dead one was fetched; the request still failed.
    unreachable = sim_request(http, request_ids["unreachable"])["input_fetches"]
    assert [f["status"] for f in unreachable] == [200, None]


# -- fault modes: per request (prompt markers) and per run (config) ----------------------


def test_fault_markers_are_parsed() -> None:
    faults = prompt_faults(
        "a cat [fault:webhook_burst=5] in [FAULT:Image_Bomb] snow [fault:submit_500]"
        "[fault:submit_429=2] [fault:no_such] [fault:webhook_late=soon] [fault:nsfw=1]"
    )
    assert faults.patch == {"webhook": "burst", "webhook_burst": 5, "image": "bomb"}
    assert faults.submit_failures == (429, 429, 500)  # the rate limit comes first
    assert not faults.refuse_submit
    assert faults.applied == ("webhook_burst=5", "image_bomb", "submit_500", "submit_429=2")
    assert [error.split(":")[0] for error in faults.errors] == [
        "no_such",
        "webhook_late=soon",
        "nsfw=1",
    ]
    # The marker's patch applies over the run's faults; the last marker for a key wins.
    last = prompt_faults("[fault:webhook_twice] [fault:webhook_never] [fault:lost]")
    applied = Faults(webhook=WebhookMode.BURST, nsfw=True).updated(last.patch)
    assert (applied.webhook, applied.outcome, applied.nsfw) == ("none", "lost", True)
    assert prompt_faults("[fault:submit_422]").refuse_submit
    assert prompt_faults("no markers [fault:]") == prompt_faults(None)


def unique(text: str) -> str:
    """A prompt no earlier submit used: submit faults are counted per distinct prompt."""
    return f"{text} {uuid.uuid4().hex[:8]}"


def test_submit_429_marker_is_retried_by_fal_client(
    sim: SimulatorServer, http: httpx.Client
) -> None:
    outcome = run_fal(
        sim,
        """
fal_client.client.MAX_ATTEMPTS = 3
accepted = client.submit(ARGS["app"], {"prompt": ARGS["retried"]}).request_id
fal_client.client.MAX_ATTEMPTS = 1
refused = http_error(lambda: client.submit(ARGS["app"], {"prompt": ARGS["resubmitted"]}))
emit({
    "accepted": accepted,
    "refused": refused,
    "resubmitted": client.submit(ARGS["app"], {"prompt": ARGS["resubmitted"]}).request_id,
})
""",
        app=SCHNELL,
        retried=unique("[fault:submit_429=2] fox"),
        resubmitted=unique("[fault:submit_429] fox"),
    )
    accepted = sim_request(http, outcome["accepted"])
    assert accepted["rejected_submits"] == [429, 429]
    assert accepted["fault_markers"] == ["submit_429=2"]
    # One 429 refused the first call; the same prompt submitted again goes through.
    assert outcome["refused"]["status_code"] == 429
    assert sim_request(http, outcome["resubmitted"])["rejected_submits"] == [429]


def test_submit_500_and_422_markers_take_precedence_over_config(
    http: httpx.Client, configure: Callable[[dict[str, Any]], None]
) -> None:
    configure({"submit_errors": {"status": 503, "count": 1}})

    def submit(prompt: str) -> httpx.Response:
        return http.post(f"/{SCHNELL}", json={"prompt": prompt}, headers=KEY_HEADER)

    failing = unique("[fault:submit_500=2] boat")
    assert [submit(failing).status_code for _ in range(3)] == [500, 500, 200]
    refused = unique("boat [fault:submit_422]")
    for _ in range(2):  # a refusal of the input is for good
        response = submit(refused)
        assert response.status_code == 422
        [detail] = response.json()["detail"]
        assert (detail["loc"], detail["type"], detail["input"]) == (
            ["body", "prompt"],
            "content_policy_violation",
            refused,
        )
        assert detail["msg"]
    # The marked submits left the run's own submit error for the next plain submit.
    assert http.get("/_sim/config").json()["submit_errors"] == {"status": 503, "count": 1}
    assert submit("plain boat").status_code == 503
    assert submit("plain boat").status_code == 200


FAULT_PROMPTS = {
    "twice": "[fault:webhook_twice]",
    "burst": "[fault:webhook_burst=8]",
    "late": "[fault:webhook_late=1.5]",
    "never": "[fault:webhook_never]",
    "out_of_order": "[fault:webhook_out_of_order]",
    "bad_signature": "[fault:webhook_bad_signature]",
    "stale_timestamp": "[fault:webhook_stale_timestamp]",
    "unknown_key": "[fault:webhook_unknown_key]",
    "status_error": "[fault:status_error]",
    "lost": "[fault:lost]",
    "nsfw": "[fault:nsfw]",
    "redirect_loopback": "[fault:image_redirect_loopback=6553]",
    "redirect_metadata": "[fault:image_redirect_metadata]",
    "huge": "[fault:image_huge]",
    "bomb": "[fault:image_bomb]",
    "not_image": "[fault:image_not_image]",
}


@pytest.fixture(scope="module")
def fault_runs(http: httpx.Client, receiver: WebhookReceiver) -> dict[str, str]:
    """One request per prompt marker, submitted together so they run side by side."""
    return {
        name: submit_raw(
            http, SCHNELL, {"prompt": f"{name} {marker}", "image_size": "square"}, receiver.url
        )
        for name, marker in FAULT_PROMPTS.items()
    }


def finished(http: httpx.Client, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The request's entry once the simulator will send no more webhooks for it."""
    return wait_until(
        lambda: (r := sim_request(http, request_id))["webhook_deliveries"]["finished"] and r,
        timeout,
    )


def jwks_of(http: httpx.Client) -> dict[str, Any]:
    return http.get("/.well-known/jwks.json").json()


def signature_error(jwks: dict[str, Any], headers: dict[str, str], body: bytes) -> str | None:
    """The product's verdict on a delivery: None if valid, else its error code."""
    try:
        verify_signature(headers, body, jwks, now=time.time())
    except WebhookSignatureError as exc:
        return exc.code
    return None


def test_webhook_twice_and_never(
    fault_runs: dict[str, str], http: httpx.Client, receiver: WebhookReceiver
) -> None:
    twice = finished(http, fault_runs["twice"])
    deliveries = receiver.for_request(fault_runs["twice"])
    assert len(deliveries) == twice["webhook_deliveries"]["count"] == 2
    assert [signature_error(jwks_of(http), *d) for d in deliveries] == [None, None]
    assert twice["faults"]["webhook"] == "twice"

    never = finished(http, fault_runs["never"])
    assert (never["status"], never["webhook_deliveries"]["count"]) == ("COMPLETED", 0)
    assert receiver.for_request(fault_runs["never"]) == []


def test_webhook_burst_sends_concurrent_identical_signed_copies(
    fault_runs: dict[str, str], http: httpx.Client, receiver: WebhookReceiver
) -> None:
    state = finished(http, fault_runs["burst"])
    attempts = state["webhook_deliveries"]["attempts"]
    assert sorted(a["copy"] for a in attempts) == list(range(8))
    assert state["webhook_deliveries"]["succeeded"] == 8
    # Released together: all answered within a moment of each other.
    assert max(a["at"] for a in attempts) - min(a["at"] for a in attempts) < 1.0
    deliveries = receiver.for_request(fault_runs["burst"])
    assert len(deliveries) == 8
    assert len({d[0]["x-fal-webhook-signature"] for d in deliveries}) == 1
    assert len({d[1] for d in deliveries}) == 1
    assert {signature_error(jwks_of(http), *d) for d in deliveries} == {None}


def test_webhook_late_is_signed_when_sent(
    fault_runs: dict[str, str], http: httpx.Client, receiver: WebhookReceiver
) -> None:
    state = finished(http, fault_runs["late"])
    [attempt] = state["webhook_deliveries"]["attempts"]
    assert attempt["at"] - state["completed_at"] >= 1.5
    [(headers, body)] = receiver.for_request(fault_runs["late"])
    assert int(headers["x-fal-webhook-timestamp"]) >= int(state["completed_at"] + 1.5)
    assert signature_error(jwks_of(http), headers, body) is None


def test_webhook_out_of_order_delivers_the_older_signature_last(
    fault_runs: dict[str, str], http: httpx.Client, receiver: WebhookReceiver
) -> None:
    finished(http, fault_runs["out_of_order"])
    newer, older = receiver.for_request(fault_runs["out_of_order"])
    assert int(newer[0]["x-fal-webhook-timestamp"]) > int(older[0]["x-fal-webhook-timestamp"])
    assert newer[1] == older[1]
    assert signature_error(jwks_of(http), *newer) is None
    assert signature_error(jwks_of(http), *older) is None


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("bad_signature", "signature_mismatch"),
        ("stale_timestamp", "stale_timestamp"),
        ("unknown_key", "signature_mismatch"),
    ],
)
def test_invalid_webhooks_fail_verification_and_no_good_one_follows(
    fault_runs: dict[str, str],
    http: httpx.Client,
    receiver: WebhookReceiver,
    name: str,
    code: str,
) -> None:
    request_id = fault_runs[name]
    state = finished(http, request_id)
    [(headers, body)] = receiver.for_request(request_id)
    jwks = jwks_of(http)
    assert signature_error(jwks, headers, body) == code
    assert [a["signature"] for a in state["webhook_deliveries"]["attempts"]] == [name]
    if name == "stale_timestamp":
        assert time.time() - int(headers["x-fal-webhook-timestamp"]) >= 590
        # Old, but signed consistently with the published key.
        verify_signature(headers, body, jwks, now=time.time(), tolerance_seconds=3600)
    # The result is there for a watchdog that polls for it.
    result = http.get(state["response_url"], headers=KEY_HEADER)
    assert result.status_code == 200
    assert json.loads(body)["payload"] == result.json()


def test_status_error_fails_the_request_with_an_error_webhook(
    fault_runs: dict[str, str], http: httpx.Client, receiver: WebhookReceiver
) -> None:
    state = finished(http, fault_runs["status_error"])
    [(headers, body)] = receiver.for_request(fault_runs["status_error"])
    assert signature_error(jwks_of(http), headers, body) is None
    webhook = json.loads(body)
    assert webhook["status"] == "ERROR"
    assert webhook["error"] and webhook["payload"]["detail"]
    status = http.get(state["status_url"], headers=KEY_HEADER)
    assert (status.status_code, status.json()["status"]) == (200, "COMPLETED")
    assert status.json()["error"] == webhook["error"]
    result = http.get(state["response_url"], headers=KEY_HEADER)
    assert result.status_code == 500
    assert result.json()["detail"] == webhook["payload"]["detail"]


def test_lost_request_is_unknown_to_the_queue_and_never_calls_back(
    fault_runs: dict[str, str], http: httpx.Client, receiver: WebhookReceiver
) -> None:
    request_id = fault_runs["lost"]
    state = finished(http, request_id)
    assert (state["status"], state["faults"]["outcome"]) == ("IN_QUEUE", "lost")
    for method, url in (
        ("GET", state["status_url"]),
        ("GET", state["response_url"]),
        ("PUT", state["cancel_url"]),
    ):
        assert http.request(method, url, headers=KEY_HEADER).status_code == 404, method
    # Its neighbours, submitted at the same time, have long completed by now.
    finished(http, fault_runs["never"])
    assert sim_request(http, request_id)["webhook_deliveries"]["count"] == 0
    assert receiver.for_request(request_id) == []


def test_nsfw_marker_flags_images(fault_runs: dict[str, str], http: httpx.Client) -> None:
    state = finished(http, fault_runs["nsfw"])
    assert state["output"]["has_nsfw_concepts"] == [True]
    assert state["fault_markers"] == ["nsfw"]


def fault_image_url(http: httpx.Client, request_id: str) -> str:
    state = wait_until(lambda: (r := sim_request(http, request_id))["output"] and r)
    [image] = state["output"]["images"]
    return str(image["url"])


def test_image_redirect_faults(fault_runs: dict[str, str], http: httpx.Client) -> None:
    loopback = http.get(fault_image_url(http, fault_runs["redirect_loopback"]))
    assert loopback.status_code == 302
    location = urlsplit(loopback.headers["location"])
    assert (location.scheme, location.hostname, location.port) == ("http", "127.0.0.1", 6553)
    metadata = http.get(fault_image_url(http, fault_runs["redirect_metadata"]))
    assert metadata.status_code == 302
    assert metadata.headers["location"] == "http://169.254.169.254/computeMetadata/v1/"


def test_image_huge_streams_far_more_than_25_mb(
    fault_runs: dict[str, str], http: httpx.Client
) -> None:
    with http.stream("GET", fault_image_url(http, fault_runs["huge"])) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        assert "content-length" not in response.headers
        size, head = 0, b""
        for chunk in response.iter_raw():
            head = head or chunk
            size += len(chunk)
    assert head.startswith(b"\xff\xd8\xff\xe0") and b"JFIF" in head[:16]
    assert size == 40 * 1024 * 1024


def test_image_bomb_and_not_image(fault_runs: dict[str, str], http: httpx.Client) -> None:
    bomb = http.get(fault_image_url(http, fault_runs["bomb"]))
    assert (bomb.status_code, bomb.headers["content-type"]) == (200, "image/png")
    assert len(bomb.content) < 4096
    assert struct.unpack(">II", bomb.content[16:24]) == (50_000, 50_000)  # IHDR
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb.content))

    page = http.get(fault_image_url(http, fault_runs["not_image"]))
    assert (page.status_code, page.headers["content-type"]) == (200, "image/jpeg")
    assert page.content.startswith(b"<!DOCTYPE html>")
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(page.content))


def test_fault_modes_from_config_apply_to_every_request(
    sim: SimulatorServer,
    http: httpx.Client,
    receiver: WebhookReceiver,
    configure: Callable[[dict[str, Any]], None],
) -> None:
    current = http.get("/_sim/config").json()
    assert {"webhook_burst", "webhook_late", "image", "image_redirect_port", "outcome"} <= set(
        current
    )
    for bad in (
        {"webhook": "sometimes"},
        {"webhook_burst": 0},
        {"image": "broken"},
        {"image_redirect_port": 70000},
        {"outcome": "gone"},
    ):
        assert http.post("/_sim/config", json=bad).status_code == 400, bad

    configure({"webhook": "burst", "webhook_burst": 3, "image": "redirect_loopback"})
    arguments = {"prompt": "plain", "image_size": "square"}
    plain = submit_raw(http, SCHNELL, arguments, receiver.url)
    # A marker wins over the run's setting, for its request only.
    marked = submit_raw(
        http, SCHNELL, {**arguments, "prompt": "[fault:webhook_never]"}, receiver.url
    )
    configure({"outcome": "lost"})
    lost = submit_raw(http, SCHNELL, arguments, receiver.url)

    assert finished(http, plain)["webhook_deliveries"]["count"] == 3
    redirect = http.get(fault_image_url(http, plain))
    assert redirect.headers["location"].startswith(f"http://127.0.0.1:{sim.port}/files/{plain}/")
    state = finished(http, marked)
    assert (state["faults"]["webhook"], state["webhook_deliveries"]["count"]) == ("none", 0)
    assert state["faults"]["image"] == "redirect_loopback"
    assert http.get(sim_request(http, lost)["status_url"], headers=KEY_HEADER).status_code == 404
