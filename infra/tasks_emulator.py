"""The Cloud Tasks emulator (gcloud-tasks-emulator, PyPI), bound to loopback.

It runs in its own venv (.venv-tasks: it pins protobuf<5) and binds [::], every interface,
on its own; here its gRPC server is made to bind 127.0.0.1 only. It dispatches HTTP tasks
at their schedule time but ignores queue retry settings and task names (so the product's
own tests cover retry, de-duplication and authentication of task calls).

    .venv-tasks/bin/python -m infra.tasks_emulator --port P --queue projects/p/locations/l/queues/q
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

import grpc


def _loopback_only() -> None:
    original = grpc.server

    def server(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - grpc's own signature
        created = original(*args, **kwargs)
        add_port = created.add_insecure_port

        def add_insecure_port(address: str) -> int:
            return add_port(address.replace("[::]", "127.0.0.1"))

        created.add_insecure_port = add_insecure_port
        return created

    grpc.server = server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queue", action="append", default=[], help="full queue name")
    parser.add_argument("--max-retries", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tasks %(levelname)s %(message)s")
    _loopback_only()
    from gcloud_tasks_emulator.server import create_server

    server = create_server("127.0.0.1", args.port, "127.0.0.1", 9, args.queue, args.max_retries)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    server.start()
    logging.info("tasks emulator on 127.0.0.1:%s", args.port)
    stopped.wait()
    server.stop()


if __name__ == "__main__":
    main()
