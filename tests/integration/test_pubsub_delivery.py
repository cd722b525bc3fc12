"""Publishing to the emulator and delivery through the relay to the real dispatcher."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from imagegen import context
from imagegen.accept import build_generation, publish_generation
from imagegen.auth import Principal
from imagegen.settings import get_settings
from imagegen.validation import parse_generation_request

pytestmark = pytest.mark.integration


def test_published_generation_reaches_the_dispatcher(stack_env) -> None:
    generation = build_generation(
        parse_generation_request(b'{"prompt": "relay test", "model": "flux-schnell"}'),
        Principal("user-p", "user", "k"),
        datetime.now(UTC),
    )
    context.generations().create(generation)
    publish_generation(get_settings(), generation.id)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        record = context.generations().get(generation.id)
        if record.status.value != "queued":
            break
        time.sleep(0.1)
    assert record.status.value in {"submitted", "completed"}
    assert record.parts[0].fal_request_id
