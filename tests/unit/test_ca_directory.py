"""The local stack trusts the fal simulator's CA from a hashed directory, as production trusts
the image's: the file name must be the subject hash OpenSSL looks the issuer up by."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.falsim.tls import ensure_tls_files, server_ssl_context, subject_hash


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> None:
    """A TLS handshake in memory: raises ssl.SSLCertVerificationError if `client` cannot
    find the issuer of the server's certificate."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for end, out, peer_in in ((c, c_out, s_in), (s, s_out, c_in)):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
        if done == 2:
            return
    raise AssertionError("the handshake did not finish")


def test_a_client_trusting_only_the_ca_directory_verifies_the_simulator(tmp_path: Path) -> None:
    files = ensure_tls_files(tmp_path)
    client = ssl.create_default_context(capath=str(files.ca_dir))
    _handshake(client, server_ssl_context(files))


def test_without_the_directory_the_same_handshake_fails(tmp_path: Path) -> None:
    files = ensure_tls_files(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    client = ssl.create_default_context(capath=str(empty))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(client, server_ssl_context(files))


def _self_signed(*attributes: x509.NameAttribute) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(list(attributes))
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize("name", ["falsim local CA", "  Two   Spaces\tand Tab ", "lower"])
def test_the_subject_hash_is_openssls(tmp_path: Path, name: str) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed to check the hash against OpenSSL's own"
    cert = _self_signed(x509.NameAttribute(NameOID.COMMON_NAME, name))
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    expected = subprocess.run(
        [openssl, "x509", "-hash", "-noout", "-in", str(pem)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert subject_hash(cert) == expected


def test_names_beyond_common_names_are_refused() -> None:
    other = _self_signed(
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.COMMON_NAME, "x"),
    )
    with pytest.raises(ValueError, match="only common names"):
        subject_hash(other)
