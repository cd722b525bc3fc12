"""Command line: ``python -m infra.falsim --port 8443 --state-dir .local/falsim``.

Prints ``FALSIM_READY <base url>`` on stdout once it accepts connections, so a process
launcher can wait for that line (and learn the port when started with ``--port 0``).
"""

from __future__ import annotations

import argparse
import logging
import signal
from types import FrameType

from .config import SimConfig
from .server import SimulatorServer


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = SimConfig()
    parser = argparse.ArgumentParser(prog="python -m infra.falsim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--state-dir", required=True, help="keeps the CA, server cert and webhook key"
    )
    parser.add_argument(
        "--queue-delay", type=float, default=defaults.queue_delay, metavar="SECONDS"
    )
    parser.add_argument(
        "--inference-delay", type=float, default=defaults.inference_delay, metavar="SECONDS"
    )
    parser.add_argument(
        "--webhook-delay", type=float, default=defaults.webhook_delay, metavar="SECONDS"
    )
    parser.add_argument(
        "--expected-key", default=None, help="reject any other fal key with 401 (default: any key)"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwinds serve_forever() through the finally below, like Ctrl-C does.
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    config = SimConfig(
        queue_delay=args.queue_delay,
        inference_delay=args.inference_delay,
        webhook_delay=args.webhook_delay,
    )
    server = SimulatorServer(
        args.state_dir,
        host=args.host,
        port=args.port,
        config=config,
        expected_key=args.expected_key,
    )
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    print(f"FALSIM_READY {server.base_url}", flush=True)
    logging.getLogger(__name__).info(
        "serving %s; SSL_CERT_FILE=%s", server.base_url, server.ca_bundle
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
