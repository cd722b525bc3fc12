"""A local stand-in for Firebase Authentication's token signer.

It holds one RSA key and a self-signed X.509 certificate for it (created once, under the
stack's state directory), serves the certificate exactly as Google's securetoken endpoint
does (``{"<kid>": "<PEM certificate>"}`` with a ``Cache-Control: max-age``), and mints ID
tokens shaped like Firebase's, so the api function verifies them with its production code.

    python -m infra.identity serve --state-dir .dev/identity --port 8085
    python -m infra.identity mint --state-dir .dev/identity --uid alice [--admin]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFAULT_PROJECT = "imagegen-local"
ISSUER_PREFIX = "https://securetoken.google.com/"
KEY_FILE = "signing-key.pem"
CERT_FILE = "signing-cert.pem"
KID_FILE = "kid"
CERTS_MAX_AGE_SECONDS = 3600


def _write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def ensure_identity(state_dir: Path | str) -> Path:
    """Creates the key, its certificate and its key id once; later calls reuse them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    state_dir = Path(state_dir)
    if (state_dir / KID_FILE).exists():
        return state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.local")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    _write_atomically(state_dir / KEY_FILE, key_pem, 0o600)
    _write_atomically(state_dir / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM).decode())
    # Written last: its presence means the other two are complete.
    _write_atomically(state_dir / KID_FILE, cert.fingerprint(hashes.SHA1()).hex())
    return state_dir


def certs_document(state_dir: Path | str) -> dict[str, str]:
    """What Google's x509 securetoken endpoint answers: ``{kid: PEM certificate}``."""
    state_dir = Path(state_dir)
    return {(state_dir / KID_FILE).read_text().strip(): (state_dir / CERT_FILE).read_text()}


def mint_token(
    state_dir: Path | str,
    uid: str,
    claims: dict[str, Any] | None = None,
    expires_in: int = 3600,
    project: str = DEFAULT_PROJECT,
    *,
    issued_at: int | None = None,
    header: dict[str, Any] | None = None,
) -> str:
    """A Firebase-shaped ID token for `uid`, signed with the local identity key.

    `claims` are added last, so they may also override the standard ones (a wrong `aud`
    or `iss`, custom claims such as ``{"admin": True}``). A negative `expires_in` gives an
    already expired token.
    """
    from google.auth import crypt, jwt

    state_dir = ensure_identity(state_dir)
    now = int(time.time()) if issued_at is None else issued_at
    iat = now if expires_in > 0 else now + expires_in - 3600
    payload: dict[str, Any] = {
        "iss": ISSUER_PREFIX + project,
        "aud": project,
        "auth_time": iat,
        "user_id": uid,
        "sub": uid,
        "iat": iat,
        "exp": now + expires_in,
        "firebase": {"identities": {}, "sign_in_provider": "custom"},
        **(claims or {}),
    }
    signer = crypt.RSASigner.from_string(
        (state_dir / KEY_FILE).read_text(), key_id=(state_dir / KID_FILE).read_text().strip()
    )
    return jwt.encode(signer, payload, header=dict(header or {})).decode("ascii")


def serve(state_dir: Path | str, host: str, port: int) -> None:
    body = json.dumps(certs_document(ensure_identity(state_dir))).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] == "/certs":
                self._answer(
                    200,
                    body,
                    {"Cache-Control": f"public, max-age={CERTS_MAX_AGE_SECONDS}, must-revalidate"},
                )
            elif self.path == "/healthz":
                self._answer(200, b'{"status":"ok"}')
            else:
                self._answer(404, b'{"error":"not found"}')

        def _answer(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args: Any) -> None:
            print(f"{self.address_string()} {fmt % args}", flush=True)

    server = ThreadingHTTPServer((host, port), Handler)
    print(f"identity: certificates on http://{host}:{port}/certs", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.identity")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="serve the certificates JSON")
    serve_parser.add_argument("--state-dir", required=True)
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, required=True)
    mint_parser = sub.add_parser("mint", help="print an ID token")
    mint_parser.add_argument("--state-dir", required=True)
    mint_parser.add_argument("--uid", required=True)
    mint_parser.add_argument("--admin", action="store_true", help="add the admin: true claim")
    mint_parser.add_argument("--expires-in", type=int, default=3600)
    mint_parser.add_argument("--project", default=os.environ.get("FIREBASE_PROJECT_ID"))
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.state_dir, args.host, args.port)
    else:
        claims = {"admin": True} if args.admin else None
        print(
            mint_token(
                args.state_dir,
                args.uid,
                claims,
                args.expires_in,
                args.project or DEFAULT_PROJECT,
            )
        )


if __name__ == "__main__":
    main()
