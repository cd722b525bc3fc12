"""Nothing lost, nothing doubled: the watchdog, the dead-letter handler, duplicate messages."""

from __future__ import annotations

import time

import pytest

from imagegen.accept import publish_generation
from imagegen.settings import get_settings
from tests.support import Api, SimConfig, sim_requests_for, wait_sim_requests_for

pytestmark = pytest.mark.e2e


def test_a_lost_webhook_is_recovered_by_the_watchdog(
    user: Api, sim_config: SimConfig, fal_sim
) -> None:
    sim_config.set(webhook="none")
    generation_id = user.generate({"prompt": "nobody calls back", "numImages": 2})
    # The stack's watchdog first checks 20 s after submission (production: per model).
    record = user.wait(generation_id, {"completed", "failed"}, timeout=90)
    assert record["status"] == "completed", record
    assert len(record["images"]) == 2
    [request] = sim_requests_for(fal_sim, generation_id)
    assert request["webhook_deliveries"]["count"] == 0  # the result came through the watchdog


def test_the_same_generation_published_twice_makes_one_fal_request(
    user: Api, stack_env: dict[str, str], fal_sim
) -> None:
    generation_id = user.generate({"prompt": "published twice", "model": "flux-schnell"})
    for _ in range(3):  # three more messages, each with its own message id
        publish_generation(get_settings(), generation_id)
    assert user.wait(generation_id, {"completed", "failed"})["status"] == "completed"
    time.sleep(3)  # let the extra deliveries run their course
    assert len(wait_sim_requests_for(fal_sim, generation_id)) == 1


def test_a_generation_pubsub_gives_up_on_is_failed_by_the_dead_letter_handler(
    user: Api, sim_config: SimConfig
) -> None:
    sim_config.set(submit_errors={"status": 500, "count": 1000})
    generation_id = user.generate({"prompt": "fal is down"})
    record = user.wait(generation_id, {"completed", "failed"}, timeout=90)
    assert record["status"] == "failed"
    assert record["error"]["code"] == "dispatch_failed"
