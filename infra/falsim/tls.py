"""The simulator's own certificate authority and HTTPS server certificate.

fal_client always talks https to ``FAL_QUEUE_RUN_HOST``, so the simulator needs a
certificate that httpx trusts. We mint a local CA once per state dir and hand clients two
ways to trust it:

- ``ca-certs/``, a hashed CA directory holding that CA under its subject hash, for
  ``SSL_CERT_DIR``. The local stack uses it, as production trusts the image's
  ``/etc/ssl/certs`` (decision 0011): OpenSSL reads only the issuer a handshake needs, where
  a bundle is parsed whole each time a TLS context is built (~13 ms).
- ``ca-bundle.pem`` (certifi's roots plus that CA), for ``SSL_CERT_FILE``.

Either way the same process can reach both the simulator and the real internet.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .files import write_atomic

SERVER_DNS_NAMES = ("localhost",)
SERVER_IP_ADDRESSES = ("127.0.0.1", "::1")

_VALIDITY = dt.timedelta(days=3650)
# Backdated so a client whose clock is slightly behind still accepts a fresh cert.
_BACKDATE = dt.timedelta(days=1)
# Renew a server certificate this close to expiry rather than fail mid-run.
_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    ca_bundle: Path
    ca_dir: Path

    @classmethod
    def in_dir(cls, state_dir: Path) -> TlsFiles:
        return cls(
            ca_cert=state_dir / "ca.pem",
            ca_key=state_dir / "ca-key.pem",
            server_cert=state_dir / "server.pem",
            server_key=state_dir / "server-key.pem",
            ca_bundle=state_dir / "ca-bundle.pem",
            ca_dir=state_dir / "ca-certs",
        )


def ensure_tls_files(state_dir: Path) -> TlsFiles:
    """Create (or reuse) the CA and server certificate; rewrite the CA bundle and directory."""
    files = TlsFiles.in_dir(state_dir)
    ca_key, ca_cert = _load_or_create_ca(files)
    if not _server_cert_usable(files, ca_cert):
        _issue_server_cert(files, ca_key, ca_cert)
    # Rewritten every start so it follows certifi upgrades.
    bundle = Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n" + files.ca_cert.read_bytes()
    write_atomic(files.ca_bundle, bundle)
    files.ca_dir.mkdir(exist_ok=True)
    write_atomic(files.ca_dir / f"{subject_hash(ca_cert)}.0", files.ca_cert.read_bytes())
    return files


def trust_dirs(files: TlsFiles) -> str:
    """``SSL_CERT_DIR`` for a client of the simulator: its CA's directory, then the system's
    (OpenSSL searches a colon-separated list in order), so real hosts are trusted too."""
    dirs = [files.ca_dir]
    system = Path(ssl.get_default_verify_paths().openssl_capath)
    if system.is_dir():
        dirs.append(system)
    return ":".join(str(d) for d in dirs)


def subject_hash(cert: x509.Certificate) -> str:
    """The name a hashed CA directory holds `cert` under (what `openssl x509 -hash` prints):
    OpenSSL's X509_NAME_hash, the first four bytes (little-endian) of the SHA-1 of the
    subject's canonical encoding. Canonical: each value a UTF8String, lowercased, trimmed,
    inner whitespace collapsed; the RDN sets without the enclosing SEQUENCE. Only names of
    common names, as this CA's, are supported: other attribute types encode differently."""
    if any(a.oid != NameOID.COMMON_NAME for a in cert.subject):
        raise ValueError(f"only common names are supported, not {cert.subject.rfc4514_string()}")
    canonical = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(a.oid, _canonical(str(a.value))) for a in rdn]
            )
            for rdn in cert.subject.rdns
        ]
    )
    digest = hashlib.sha1(_der_contents(canonical.public_bytes()), usedforsecurity=False)
    return f"{int.from_bytes(digest.digest()[:4], 'little'):08x}"


def _canonical(value: str) -> str:
    return re.sub(r"[ \t\n\v\f\r]+", " ", value.strip(" \t\n\v\f\r")).lower()


def _der_contents(der: bytes) -> bytes:
    """The contents of a DER TLV (here, the Name's SEQUENCE)."""
    length = der[1]
    if length < 0x80:
        return der[2:]
    size = length & 0x7F
    return der[2 + size :]


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.server_cert, files.server_key)
    # The HTTP server below speaks HTTP/1.1 only.
    context.set_alpn_protocols(["http/1.1"])
    return context


def _load_or_create_ca(files: TlsFiles) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    if files.ca_cert.exists() and files.ca_key.exists():
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{files.ca_key} is not an EC private key")
        return key, x509.load_pem_x509_certificate(files.ca_cert.read_bytes())

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "falsim local CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_atomic(files.ca_key, _private_pem(key), private=True)
    write_atomic(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _server_cert_usable(files: TlsFiles, ca_cert: x509.Certificate) -> bool:
    if not (files.server_cert.exists() and files.server_key.exists()):
        return False
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    try:
        # Fails when the CA was regenerated after this certificate was issued.
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - _RENEW_BEFORE < dt.datetime.now(dt.UTC):
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(_server_sans()) <= set(sans)


def _issue_server_cert(
    files: TlsFiles, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_server_sans()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # Python 3.13+ clients verify with VERIFY_X509_STRICT, which requires the AKI.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_atomic(files.server_key, _private_pem(key), private=True)
    write_atomic(files.server_cert, cert.public_bytes(serialization.Encoding.PEM))


def _server_sans() -> list[x509.GeneralName]:
    return [
        *(x509.DNSName(name) for name in SERVER_DNS_NAMES),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IP_ADDRESSES),
    ]


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
