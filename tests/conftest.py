"""Shared fixtures. Unit tests need nothing running; integration and e2e tests share one
local stack per test session (real emulators, the fal simulator, every function), on free
ports so a `make dev` running alongside is never disturbed."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from infra.stack import LocalStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # A recognisable fal key: tests/e2e/test_zz_secrets.py proves it never leaks.
    local = LocalStack(
        state_dir=tmp_path_factory.mktemp("stack"),
        inference_delay=0.2,
        fal_key=f"fal-canary-{secrets.token_hex(12)}",
    )
    local.start()
    yield local
    local.stop()


@pytest.fixture(scope="session")
def stack_env(stack: LocalStack) -> Iterator[dict[str, str]]:
    """Points this process's Google clients and settings at the stack, for in-process tests."""
    from imagegen import clients, context
    from imagegen.settings import get_settings

    names = [k for k in stack.env if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")]
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: stack.env[k] for k in names})
    caches = [
        get_settings,
        *(getattr(clients, n) for n in ("firestore_client", "storage_client", "publish_api")),
    ]
    caches += [getattr(context, n) for n in ("generations", "api_keys", "image_store")]
    for cached in caches:
        cached.cache_clear()
    yield stack.env
    for cached in caches:
        cached.cache_clear()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
