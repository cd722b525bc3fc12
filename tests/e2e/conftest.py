from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from infra.stack import LocalStack
from tests.support import Api, sim


@pytest.fixture(scope="session")
def api(stack: LocalStack) -> Api:
    return Api(stack.env["API_URL"], stack.env["DEV_API_KEY"])


@pytest.fixture
def fal_sim(stack: LocalStack) -> Iterator[httpx.Client]:
    """The simulator's control API, reset to normal behaviour after each test."""
    client = sim(stack.env)
    yield client
    client.post("/_sim/config", json={"submit_errors": None, "webhook": "normal"})
