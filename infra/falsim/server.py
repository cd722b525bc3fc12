"""The HTTPS server and ``SimulatorServer``, the entry point for tests and the CLI.

server = SimulatorServer(state_dir, port=0).start()
env = {"FAL_QUEUE_RUN_HOST": server.netloc, "SSL_CERT_FILE": str(server.ca_bundle)}
...
server.stop()
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qsl, unquote, urlsplit

from .api import SimulatorApi
from .config import RuntimeConfig, SimConfig
from .jobs import JobStore
from .messages import HttpRequest, HttpResponse, json_response
from .runner import JobRunner
from .signing import ensure_private_key, jwks
from .tls import TlsFiles, ensure_tls_files, server_ssl_context
from .webhooks import WebhookSender

SIGNING_KEY_FILE = "webhook-signing-key.pem"
_MAX_BODY_BYTES = 10 * 1024 * 1024

log = logging.getLogger(__name__)


class _TlsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 makes a burst of clients wait a second for a
    # SYN retry.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], ssl_context: ssl.SSLContext, api: SimulatorApi
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.ssl_context = ssl_context
        self.api = api
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can hang for seconds
        # on a machine without working DNS; nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def finish_request(  # type: ignore[override]  # a TCP server only ever gets sockets
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        # The handshake runs here, in the connection's own thread, so a slow or broken
        # client cannot stall accept() for everyone else.
        request.settimeout(_Handler.timeout)
        try:
            connection = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        with connection:
            _Handler(connection, client_address, self)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: fal_client reuses its connections
    # Headers and body go out as two writes: with Nagle's algorithm on, the body waits for
    # the client's delayed ACK (~40 ms per response), a stall real fal does not have.
    disable_nagle_algorithm = True
    server_version = "falsim"
    # Reaps idle keep-alive connections left open by pooled clients.
    timeout = 60
    server: _TlsHttpServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _serve(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(json_response(411, {"detail": "Content-Length required"}))
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY_BYTES:
            self._send(json_response(413, {"detail": "Request body too large"}))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        host = self.headers.get("Host") or f"{self.server.server_name}:{self.server.server_port}"
        request = HttpRequest(
            method=self.command,
            path=unquote(url.path),
            query=dict(parse_qsl(url.query)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            base_url=f"https://{host}",
        )
        try:
            response = self.server.api.handle(request)
        except Exception:
            log.exception("unhandled error for %s %s", self.command, self.path)
            response = json_response(500, {"detail": "Internal simulator error"})
        self._send(response)

    def _send(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        if response.stream is None:
            self.send_header("Content-Length", str(len(response.body)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if response.stream is None:
            self.wfile.write(response.body)
            return
        try:
            for chunk in response.stream():
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError as exc:  # ssl.SSLError and ConnectionError included
            # A client that gives up on a huge body part-way is expected.
            log.info("client stopped reading a streamed body: %s", exc)
            self.close_connection = True


class SimulatorServer:
    """A fal.ai queue simulator bound at construction; ``start()`` serves in a thread."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SimConfig | None = None,
        expected_key: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.tls_files: TlsFiles = ensure_tls_files(self.state_dir)
        self.signing_key_path = self.state_dir / SIGNING_KEY_FILE
        signing_key = ensure_private_key(self.signing_key_path)

        self.config = RuntimeConfig(config or SimConfig())
        self.jobs = JobStore()
        self._webhooks = WebhookSender(signing_key, self.jobs)
        api = SimulatorApi(
            config=self.config,
            jobs=self.jobs,
            runner=JobRunner(self.jobs, self._webhooks),
            jwks=jwks(signing_key.public_key()),
            expected_key=expected_key,
        )
        self._httpd = _TlsHttpServer((host, port), server_ssl_context(self.tls_files), api)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def netloc(self) -> str:
        """``host:port`` for ``FAL_QUEUE_RUN_HOST`` / ``FAL_RUN_HOST``."""
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.netloc}"

    @property
    def ca_bundle(self) -> Path:
        """certifi's roots plus the simulator's CA: use as ``SSL_CERT_FILE``."""
        return self.tls_files.ca_bundle

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="falsim-http", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        # Stops queued requests and pending webhook retries.
        self.jobs.discard_all()
        self._webhooks.close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
