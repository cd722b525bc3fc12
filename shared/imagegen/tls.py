"""One TLS client context per process, shared by the HTTP clients this package builds.

Built from a CA bundle, a context costs ~13 ms (every certificate in the file is parsed);
built from a hashed CA directory, ~0.1 ms, since OpenSSL reads only the issuer a handshake
needs. The functions run with SSL_CERT_DIR set to the image's directory (Terraform;
decision 0011), which httpx, and so fal_client, honours. One context still serves all of
this package's clients: a cold webhook needs one for fal's signing keys and the images.
"""

from __future__ import annotations

import ssl
from functools import cache


@cache
def client_context() -> ssl.SSLContext:
    import httpx

    # As httpx builds its default: certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR if set.
    return httpx.create_ssl_context()
