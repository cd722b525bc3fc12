"""One TLS client context per process, shared by the HTTP clients this package builds.

Building one loads the CA bundle (~13 ms); a cold webhook would otherwise pay it twice on its
first request (fal's signing keys, then the images).
"""

from __future__ import annotations

import ssl
from functools import cache


@cache
def client_context() -> ssl.SSLContext:
    import httpx

    # As httpx builds its default: certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR if set.
    return httpx.create_ssl_context()
