"""Starting and stopping the local stack's processes, each in its own process group.

The gcloud emulator wrappers leave their Java children behind if only the wrapper is
killed, so every process is started in a new session and stopped by process group.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Listening ports are taken below the kernel's ephemeral range: a port the kernel hands
# out for `bind(0)` comes from that range, and once released it can become the local port
# of any outgoing connection (an emulator's, a client's) before our server binds it.
LISTEN_PORTS_FROM = 20000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on, outside the ephemeral range, not handed out before by
    this process (random, so that concurrent stacks rarely pick the same one)."""
    low = _ephemeral_low()
    if low - LISTEN_PORTS_FROM >= 1000:
        for _ in range(500):
            port = random.randrange(LISTEN_PORTS_FROM, low)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    with socket.socket() as sock:  # an unusual range: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Managed:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_seconds: float = 5.0) -> None:
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session made it the group leader
        for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; children (Java under gcloud) may not be.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            break
        self.process = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, process: Managed | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{what} exited during start-up:\n{process.tail()}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    tail = process.tail() if process else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{tail}")


def http_ok(url: str, context=None) -> bool:  # noqa: ANN001
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


def tcp_open(url: str) -> bool:
    """A gRPC server is ready when its port accepts connections."""
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False
