"""The local stack: real emulators, the fal simulator and every function, on this machine.

    python -m infra.stack dev      # foreground until Ctrl-C / SIGTERM; writes .dev/stack.env

Tests use `LocalStack` directly (tests/conftest.py) with free ports, so a running
`make dev` and a test run never collide.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from infra import identity
from infra.falsim.tls import TlsFiles, trust_dirs
from infra.processes import Managed, free_port, http_ok, tcp_open, wait_until

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
PROJECT = "imagegen-local"
TOPIC = "generation-requests"
SUBSCRIPTION = "generation-requests-dispatcher"
DEAD_LETTER_TOPIC = "generation-requests-dead-letter"
DEAD_LETTER_SUBSCRIPTION = "generation-requests-dead-letter-handler"
# Pub/Sub's minimum; each attempt is one dispatcher call with the retry policy's backoff.
MAX_DELIVERY_ATTEMPTS = 5
TASKS_QUEUE = f"projects/{PROJECT}/locations/us-central1/queues/watchdog"
TASKS_VENV_PYTHON = ROOT / ".venv-tasks" / "bin" / "python"
BUCKET = "imagegen-images"
LORA_BUCKET = "imagegen-loras"
DEV_USER = "dev-user"

# (name, entry point folder, target, signature type)
FUNCTIONS = (
    ("api", "api", "api", "http"),
    ("dispatcher", "dispatcher", "dispatcher", "cloudevent"),
    ("webhook", "webhook", "webhook", "http"),
    ("watchdog", "watchdog", "watchdog", "http"),
    ("deadletter", "deadletter", "deadletter", "cloudevent"),
    ("cleanup", "cleanup", "cleanup", "http"),
)
# Eventarc's Pub/Sub triggers: (relay name, subscription, topic, function)
TRIGGERS = (
    ("relay", SUBSCRIPTION, TOPIC, "dispatcher"),
    ("relay-deadletter", DEAD_LETTER_SUBSCRIPTION, DEAD_LETTER_TOPIC, "deadletter"),
)


def _write_signing_key(path: Path) -> None:
    """A throwaway service-account key: the emulator ignores signatures, but V4 signing
    still needs a real RSA key, so URLs are produced exactly as in production."""
    if path.exists():
        return
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": secrets.token_hex(20),
                "private_key": pem,
                "client_email": f"signer@{PROJECT}.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )


@dataclass
class LocalStack:
    state_dir: Path = ROOT / ".dev"
    api_port: int | None = None
    # Simulated fal inference time; tests keep it short.
    inference_delay: float = 0.5
    # Watchdog timing: production waits per model (minutes); locally seconds keep tests fast.
    watchdog_first_check: float = 20.0
    watchdog_recheck: float = 2.0
    # The simulator accepts any key; tests pass a recognisable one to prove it never leaks.
    fal_key: str | None = None
    # False: no simulator; the dispatcher calls the real fal.ai with FAL_KEY.
    simulate_fal: bool = True
    processes: dict[str, Managed] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.ports = {
            "firestore": free_port(),
            "pubsub": free_port(),
            "storage": free_port(),
            "falsim": free_port(),
            "identity": free_port(),
            "api": self.api_port or free_port(),
            "dispatcher": free_port(),
            "webhook": free_port(),
            "watchdog": free_port(),
            "deadletter": free_port(),
            "cleanup": free_port(),
            "tasks": free_port(),
        }

    # -- environment -------------------------------------------------------------------
    def _build_env(self) -> dict[str, str]:
        p = self.ports
        sim_dir = self.state_dir / "falsim"
        hmac_file = self.state_dir / "webhook-hmac-key"
        if not hmac_file.exists():
            hmac_file.write_text(secrets.token_urlsafe(32))
        env = {
            "GCP_PROJECT": PROJECT,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{p['firestore']}",
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{p['pubsub']}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{p['storage']}",
            "IMAGES_BUCKET": BUCKET,
            "LORA_BUCKET": LORA_BUCKET,
            "GENERATIONS_TOPIC": TOPIC,
            "API_URL": f"http://127.0.0.1:{p['api']}",
            "WEBHOOK_URL": f"http://127.0.0.1:{p['webhook']}/",
            "WATCHDOG_URL": f"http://127.0.0.1:{p['watchdog']}/",
            "CLEANUP_URL": f"http://127.0.0.1:{p['cleanup']}/",
            "TASKS_QUEUE": TASKS_QUEUE,
            "TASKS_EMULATOR_HOST": f"127.0.0.1:{p['tasks']}",
            "WATCHDOG_FIRST_CHECK_SECONDS": str(self.watchdog_first_check),
            "WATCHDOG_RECHECK_SECONDS": str(self.watchdog_recheck),
            # Shorter than the local subscription's retry window (backoff 2..10 s, 5 attempts),
            # as production's 90 s is shorter than its 10..600 s window.
            "SUBMIT_LEASE_SECONDS": "5",
            "WEBHOOK_HMAC_KEY": hmac_file.read_text().strip(),
            "FAL_KEY": self.fal_key or os.environ.get("FAL_KEY") or "sim-key",
            "FAL_SIM_URL": f"https://127.0.0.1:{p['falsim']}",
            "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{p['falsim']}",
            "FAL_RUN_HOST": f"127.0.0.1:{p['falsim']}",
            "FAL_JWKS_URL": f"https://127.0.0.1:{p['falsim']}/.well-known/jwks.json",
            # The simulator serves its images from loopback: the one host allowed that way.
            "IMAGE_FETCH_INSECURE_HOSTS": f"127.0.0.1:{p['falsim']}",
            "FAL_SIM_PRIVATE_KEY_FILE": str(sim_dir / "webhook-signing-key.pem"),
            # The simulator's CA from a hashed directory, as production trusts the image's
            # (decision 0011). SSL_CERT_FILE empty: a machine may set one (this one does),
            # and httpx would prefer it.
            "SSL_CERT_DIR": trust_dirs(TlsFiles.in_dir(sim_dir)),
            "SSL_CERT_FILE": "",
            "SIGNING_CREDENTIALS_FILE": str(self.state_dir / "signing-key.json"),
            # Firebase ID tokens signed by infra/identity.py (see mint_token).
            "FIREBASE_PROJECT_ID": PROJECT,
            "FIREBASE_CERTS_URL": f"http://127.0.0.1:{p['identity']}/certs",
        }
        if not self.simulate_fal:
            # fal_client's own defaults (queue.fal.run over the system's CAs) and fal's JWKS;
            # fal must reach the webhook, so it needs a public URL (a tunnel, locally).
            for name in (
                "FAL_QUEUE_RUN_HOST",
                "FAL_RUN_HOST",
                "FAL_JWKS_URL",
                "SSL_CERT_FILE",
                "SSL_CERT_DIR",
                "FAL_SIM_URL",
                "FAL_SIM_PRIVATE_KEY_FILE",
                "IMAGE_FETCH_INSECURE_HOSTS",
            ):
                env.pop(name)
            env["FAL_KEY"] = os.environ["FAL_KEY"]
            env["WEBHOOK_URL"] = os.environ.get("PUBLIC_WEBHOOK_URL", env["WEBHOOK_URL"])
        return env

    def _spawn(
        self, name: str, argv: list[str], extra_env: dict[str, str] | None = None
    ) -> Managed:
        env = {**os.environ, **self.env, **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        managed = Managed(name, argv, env, self.state_dir / "logs" / f"{name}.log", ROOT)
        managed.start()
        self.processes[name] = managed
        return managed

    # -- start-up ----------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        _write_signing_key(self.state_dir / "signing-key.json")
        identity.ensure_identity(self.identity_dir)
        self.env = self._build_env()
        try:
            self._start_backends()
            self._provision()
            self._start_functions()
        except BaseException:
            self.stop()
            raise
        return self.env

    def _backend_commands(self) -> dict[str, tuple[list[str], str, float]]:
        """name → (argv, readiness URL, start-up timeout in seconds)."""
        p, host = self.ports, "127.0.0.1"
        emulator = f"gcloud --quiet {'{}'} --host-port={host}:{'{}'}"
        commands = {
            "firestore": (
                emulator.format("emulators firestore start", p["firestore"]).split(),
                f"http://{host}:{p['firestore']}/",
                60.0,
            ),
            "pubsub": (
                emulator.format("beta emulators pubsub start", p["pubsub"]).split()
                + [f"--project={PROJECT}"],
                f"http://{host}:{p['pubsub']}/",
                60.0,
            ),
            "storage": (
                [str(BIN / "gcp-storage-emulator")]
                + f"start --host {host} --port {p['storage']} --in-memory --quiet".split()
                + ["--default-bucket", BUCKET],
                f"http://{host}:{p['storage']}/storage/v1/b",
                30.0,
            ),
            "tasks": (
                [
                    str(TASKS_VENV_PYTHON),
                    "-W",
                    "ignore",
                    "-m",
                    "infra.tasks_emulator",
                    "--port",
                    str(p["tasks"]),
                    "--queue",
                    TASKS_QUEUE,
                ],
                f"tcp://{host}:{p['tasks']}",
                30.0,
            ),
            "identity": (
                [PYTHON, "-m", "infra.identity", "serve", "--state-dir", str(self.identity_dir)]
                + f"--host {host} --port {p['identity']}".split(),
                f"http://{host}:{p['identity']}/healthz",
                30.0,
            ),
        }
        if self.simulate_fal:
            commands["falsim"] = (
                [PYTHON, "-m", "infra.falsim", "--state-dir", str(self.state_dir / "falsim")]
                + f"--host {host} --port {p['falsim']}".split()
                + ["--inference-delay", str(self.inference_delay)],
                f"https://{host}:{p['falsim']}/healthz",
                30.0,
            )
        return commands

    def _start_backends(self) -> None:
        # Started together, awaited one by one: the JVMs take the longest, so in parallel.
        commands = self._backend_commands()
        started = {name: self._spawn(name, argv) for name, (argv, _, _) in commands.items()}
        # The simulator's certificate is our own; readiness only needs an answer.
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        for name, (_, url, timeout) in commands.items():
            ready = (
                (lambda url=url: tcp_open(url))
                if url.startswith("tcp://")
                else (lambda url=url: http_ok(url, insecure))
            )
            wait_until(ready, timeout, name, started[name])

    def _provision(self) -> None:
        """Topic, subscription with a retry policy, the LoRA bucket, and the dev API key."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            from google.api_core.exceptions import AlreadyExists
            from google.cloud import pubsub_v1

            publisher = pubsub_v1.PublisherClient()
            subscriber = pubsub_v1.SubscriberClient()
            topic = publisher.topic_path(PROJECT, TOPIC)
            with contextlib.suppress(AlreadyExists):
                publisher.create_topic(name=topic)
            dead_letter = publisher.topic_path(PROJECT, DEAD_LETTER_TOPIC)
            with contextlib.suppress(AlreadyExists):
                publisher.create_topic(name=dead_letter)
            with contextlib.suppress(AlreadyExists):
                subscriber.create_subscription(
                    request={
                        "name": subscriber.subscription_path(PROJECT, SUBSCRIPTION),
                        "topic": topic,
                        "ack_deadline_seconds": 60,
                        # A window (~25 s over 5 attempts) that outlasts a function restart,
                        # as production's 10..600 s backoff does.
                        "retry_policy": {
                            "minimum_backoff": {"seconds": 2},
                            "maximum_backoff": {"seconds": 10},
                        },
                        "dead_letter_policy": {
                            "dead_letter_topic": dead_letter,
                            "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
                        },
                    }
                )
            with contextlib.suppress(AlreadyExists):
                subscriber.create_subscription(
                    request={
                        "name": subscriber.subscription_path(PROJECT, DEAD_LETTER_SUBSCRIPTION),
                        "topic": dead_letter,
                        "ack_deadline_seconds": 60,
                        "retry_policy": {
                            "minimum_backoff": {"seconds": 1},
                            "maximum_backoff": {"seconds": 10},
                        },
                    }
                )
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            gcs = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
            with contextlib.suppress(Exception):  # the emulator answers 409 on a re-run
                gcs.create_bucket(LORA_BUCKET)
            self.env["DEV_API_KEY"] = self.create_api_key(DEV_USER, "admin")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def create_api_key(self, user_id: str, role: str = "user") -> str:
        """Issues a key straight into the emulator (as POST /v1/admin/apiKeys does)."""
        from google.cloud import firestore

        from imagegen.auth import issue_api_key
        from imagegen.repository import ApiKeyRepository

        saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
        os.environ["FIRESTORE_EMULATOR_HOST"] = self.env["FIRESTORE_EMULATOR_HOST"]
        try:
            keys = ApiKeyRepository(firestore.Client(project=PROJECT))
            api_key, _ = issue_api_key(keys, user_id, role, datetime.now(UTC))
        finally:
            if saved is None:
                os.environ.pop("FIRESTORE_EMULATOR_HOST")
            else:
                os.environ["FIRESTORE_EMULATOR_HOST"] = saved
        return api_key

    @property
    def identity_dir(self) -> Path:
        return self.state_dir / "identity"

    def mint_token(
        self, uid: str, claims: dict | None = None, expires_in: int = 3600, **kwargs
    ) -> str:
        """A Firebase-style ID token for `uid` that the stack's api function accepts."""
        return identity.mint_token(self.identity_dir, uid, claims, expires_in, PROJECT, **kwargs)

    def function_argv(self, name: str) -> list[str]:
        folder, target, signature = next((f, t, s) for n, f, t, s in FUNCTIONS if n == name)
        return [
            str(BIN / "functions-framework"),
            "--source",
            str(ROOT / "functions" / folder / "main.py"),
            "--target",
            target,
            "--signature-type",
            signature,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ports[name]),
        ]

    def start_function(self, name: str) -> None:
        managed = self._spawn(name, self.function_argv(name))
        url = f"http://127.0.0.1:{self.ports[name]}/healthz"
        if name in ("dispatcher", "deadletter"):  # CloudEvent functions: any answer will do
            wait_until(lambda: _answers(url), 30, name, managed)
        else:
            wait_until(lambda: http_ok(url), 30, name, managed)

    def _start_functions(self) -> None:
        for name, *_ in FUNCTIONS:
            self.start_function(name)
        for name, *_ in TRIGGERS:
            self.start_relay(name)

    def start_relay(self, name: str = "relay") -> None:
        _, subscription, topic, function = next(t for t in TRIGGERS if t[0] == name)
        self._spawn(
            name,
            [
                PYTHON,
                "-m",
                "infra.relay",
                "--project",
                PROJECT,
                "--subscription",
                subscription,
                "--topic",
                topic,
                "--target",
                f"http://127.0.0.1:{self.ports[function]}/",
            ],
        )

    def stop(self) -> None:
        for managed in reversed(list(self.processes.values())):
            managed.stop()
        self.processes.clear()

    def write_env_file(self) -> Path:
        keys = (
            "API_URL",
            "WEBHOOK_URL",
            "CLEANUP_URL",
            "DEV_API_KEY",
            "FIRESTORE_EMULATOR_HOST",
            "PUBSUB_EMULATOR_HOST",
            "STORAGE_EMULATOR_HOST",
            "GCP_PROJECT",
            "IMAGES_BUCKET",
            "FAL_SIM_URL",
            "FAL_SIM_PRIVATE_KEY_FILE",
            "FIREBASE_PROJECT_ID",
            "FIREBASE_CERTS_URL",
        )
        path = self.state_dir / "stack.env"
        path.write_text("".join(f"{k}={self.env[k]}\n" for k in keys if k in self.env))
        return path


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def dev(api_port: int) -> None:
    simulate = os.environ.get("FAL_SIMULATOR", "on").lower() != "off"
    if not simulate and not os.environ.get("FAL_KEY"):
        sys.exit("FAL_SIMULATOR=off calls the real fal.ai: set FAL_KEY (and PUBLIC_WEBHOOK_URL)")
    if not simulate and not os.environ.get("PUBLIC_WEBHOOK_URL"):
        print(
            "warning: PUBLIC_WEBHOOK_URL is unset; fal.ai cannot reach a 127.0.0.1 webhook, "
            "so generations will stay 'submitted'",
            file=sys.stderr,
        )
    stack = LocalStack(api_port=api_port, simulate_fal=simulate)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    print("starting the local stack...", flush=True)
    started = time.monotonic()
    try:
        env = stack.start()
        env_file = stack.write_env_file()
        print(
            f"""
ready in {time.monotonic() - started:.1f} s; environment written to {env_file}

  API       {env["API_URL"]}
  webhook   {env["WEBHOOK_URL"]}
  fal       {env.get("FAL_SIM_URL", "the real fal.ai (FAL_KEY)")}
  logs      {stack.state_dir / "logs"}/

Try it:
  curl -s -X POST {env["API_URL"]}/v1/images/generations \\
    -H "Authorization: Bearer {env["DEV_API_KEY"]}" -H "Content-Type: application/json" \\
    -d '{{"prompt": "a lighthouse at dusk", "numImages": 2}}'
  curl -s {env["API_URL"]}/v1/images/generations/ID -H "Authorization: Bearer {env["DEV_API_KEY"]}"

Ctrl-C stops everything.""",
            flush=True,
        )
        while not stopped.wait(1.0):
            dead = [name for name, m in stack.processes.items() if not m.alive()]
            if dead:
                print(
                    f"stopping: {', '.join(dead)} exited; see {stack.state_dir / 'logs'}/",
                    file=sys.stderr,
                )
                break
    finally:
        print("stopping the local stack...", flush=True)
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.stack")
    sub = parser.add_subparsers(dest="command", required=True)
    dev_parser = sub.add_parser("dev", help="run the whole stack in the foreground")
    dev_parser.add_argument("--api-port", type=int, default=int(os.environ.get("API_PORT", 8080)))
    args = parser.parse_args()
    if args.command == "dev":
        dev(args.api_port)


if __name__ == "__main__":
    main()
