"""Fixtures for the e2e tests: API clients (the dev admin, fresh users), the fal
simulator's control API and the stack's buckets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from imagegen import clients
from infra.stack import DEV_USER, LocalStack
from tests.support import Api, MakeUser, SimConfig, sim


@pytest.fixture(scope="session")
def api(stack: LocalStack) -> Api:
    """The dev user's client (an admin), shared by every test."""
    return Api(stack.env["API_URL"], stack.env["DEV_API_KEY"], DEV_USER)


@pytest.fixture(scope="session")
def make_user(stack: LocalStack) -> MakeUser:
    """Makes users no other test shares (a fresh id and API key each), so that counts in
    their usage, limits and history are exactly the calling test's own. Session-scoped so
    that module-scoped fixtures can make users too."""

    def make(role: str = "user") -> Api:
        user_id = f"{role}-{uuid.uuid4()}"
        return Api(stack.env["API_URL"], stack.create_api_key(user_id, role), user_id)

    return make


@pytest.fixture
def user(make_user: MakeUser) -> Api:
    """A fresh plain user (limited, not admin) for this test alone."""
    return make_user()


@pytest.fixture
def fal_sim(stack: LocalStack) -> Iterator[httpx.Client]:
    """The simulator's control API (its requests and configuration), with the fault modes
    reset after each test as a safety net; tests change the configuration via `sim_config`."""
    client = sim(stack.env)
    yield client
    client.post(
        "/_sim/config",
        json={
            "submit_errors": None,
            "webhook": "normal",
            "image": "none",
            "outcome": "normal",
            "nsfw": False,
        },
    )


@pytest.fixture
def sim_config(fal_sim: httpx.Client) -> Iterator[SimConfig]:
    """Lets a test change any `/_sim/config` keys (`sim_config.set(inference_delay=30)`);
    every key it changed is put back as it was once the test ends, pass or fail."""
    changes = SimConfig(fal_sim)
    try:
        yield changes
    finally:
        changes.restore()


@pytest.fixture(scope="session")
def images_bucket(stack_env: dict[str, str]):
    """The bucket generated images and thumbnails are stored in."""
    return clients.storage_client().bucket(stack_env["IMAGES_BUCKET"])


@pytest.fixture(scope="session")
def lora_bucket(stack_env: dict[str, str]):
    """The bucket LoRA weights are uploaded to and signed URLs point into."""
    return clients.storage_client().bucket(stack_env["LORA_BUCKET"])
