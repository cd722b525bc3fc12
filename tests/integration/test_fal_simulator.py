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
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image

from infra.falsim import SimConfig, SimulatorServer, load_private_key, sign_webhook

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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
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
