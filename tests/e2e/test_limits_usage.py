"""Per-user limits and GET /v1/usage through the running stack: generations in flight
(also under concurrent requests), refunds for failed and canceled generations, and admins
being counted but not limited."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest

from tests.support import GENERATIONS, TERMINAL, Api, MakeUser, SimConfig

pytestmark = pytest.mark.e2e


def assert_in_flight_refusal(response: httpx.Response, in_flight: int = 2) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "too_many_in_flight"
    assert error["details"] == {"limit": 2, "inFlight": in_flight}


# -- in flight ------------------------------------------------------------------------------


def test_third_concurrent_generation_is_429_until_one_ends(
    user: Api, sim_config: SimConfig, make_user: MakeUser
) -> None:
    sim_config.set(inference_delay=30)
    running = [user.generate({"prompt": f"long {i}", "imageSize": "square"}) for i in range(2)]
    # Submitted: fal holds them (a request keeps the simulator config of its submit).
    for generation_id in running:
        user.wait(generation_id, {"submitted"})

    third = user.create({"prompt": "one too many"})
    assert_in_flight_refusal(third)
    usage = user.usage()
    assert (usage["inFlight"], usage["generations"]) == (2, 2)
    # A batch counts every item: even one more is refused.
    batch = user.batch([{"prompt": "b"}])
    assert_in_flight_refusal(batch)
    # Limits are per user: someone else is not held up.
    other = make_user()
    other_id = other.generate({"prompt": "another user"})
    assert other.cancel(other_id).status_code == 200

    canceled = user.cancel(running[0])
    sim_config.restore()  # fal at normal speed again, for the replacement below
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    usage = user.usage()
    assert usage["inFlight"] == 1
    assert usage["generations"] == 1  # the canceled one is refunded

    replacement = user.generate({"prompt": "now there is room", "imageSize": "square"})
    assert user.wait(replacement, TERMINAL)["status"] == "completed"
    assert user.cancel(running[1]).status_code == 200
    usage = user.wait_in_flight(0)
    assert (usage["inFlight"], usage["generations"], usage["images"]) == (0, 1, 1)


def test_in_flight_slots_free_when_generations_complete(user: Api) -> None:
    first = [user.generate({"prompt": f"quick {i}", "imageSize": "square"}) for i in range(2)]
    for generation_id in first:
        assert user.wait(generation_id, TERMINAL)["status"] == "completed"
    assert user.wait_in_flight(0)["inFlight"] == 0
    again = [user.generate({"prompt": f"again {i}", "imageSize": "square"}) for i in range(2)]
    for generation_id in again:
        assert user.wait(generation_id, TERMINAL)["status"] == "completed"
    usage = user.wait_in_flight(0)
    assert (usage["generations"], usage["images"], usage["inFlight"]) == (4, 4, 0)


def test_admins_are_counted_but_not_limited(make_user: MakeUser, sim_config: SimConfig) -> None:
    """GET /v1/usage tells an admin `"enforced": false`, and admission agrees."""
    admin = make_user("admin")
    sim_config.set(inference_delay=30)
    accepted: list[str] = []
    try:
        responses = [admin.create({"prompt": f"admin {i}"}) for i in range(3)]
        accepted = [r.json()["id"] for r in responses if r.status_code == 202]
        usage = admin.usage()
        assert usage["limits"]["enforced"] is False
        assert [r.status_code for r in responses] == [202, 202, 202], [r.text for r in responses]
        assert (usage["inFlight"], usage["generations"]) == (3, 3)
    finally:
        for generation_id in accepted:
            admin.cancel(generation_id)
        sim_config.restore()  # before anything else runs, not only at teardown


# -- usage --------------------------------------------------------------------------------------


def test_usage_counts_this_months_generations_images_megapixels_and_cost(user: Api) -> None:
    now = datetime.now(UTC)
    empty = user.usage()
    assert empty["userId"] == user.user_id
    assert empty["month"] == now.strftime("%Y-%m")
    assert empty["resetsAt"].endswith("-01T00:00:00Z")
    assert empty["resetsAt"] > now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (empty["generations"], empty["images"], empty["megapixels"]) == (0, 0, 0)
    assert (empty["estimatedCostUsd"], empty["inFlight"]) == (0, 0)
    assert empty["limits"] == {
        "requestsPerHour": 50,
        "maxInFlight": 2,
        "monthlyMegapixels": 2000.0,
        "remainingMegapixels": 2000.0,
        "enforced": True,
    }

    # 2 x 512x512 with flux-dev ($0.025/MP) and 1 x 1024x1024 with flux-schnell ($0.003/MP).
    ids = [
        user.generate({"prompt": "two small", "numImages": 2, "imageSize": "square"}),
        user.generate({"prompt": "one big", "model": "flux-schnell", "imageSize": "square_hd"}),
    ]
    assert [user.wait(i, TERMINAL)["status"] for i in ids] == ["completed", "completed"]
    megapixels = 2 * 512 * 512 / 1e6 + 1024 * 1024 / 1e6
    cost = 0.025 * 2 * 512 * 512 / 1e6 + 0.003 * 1024 * 1024 / 1e6
    usage = user.wait_in_flight(0)
    assert (usage["generations"], usage["images"], usage["inFlight"]) == (2, 3, 0)
    assert usage["megapixels"] == round(megapixels, 3)
    assert usage["estimatedCostUsd"] == round(cost, 4)
    assert usage["limits"]["remainingMegapixels"] == round(2000 - megapixels, 3)

    # Refused requests count for nothing.
    assert user.create({"prompt": "bad", "numImages": 6}).status_code == 422
    assert user.usage()["generations"] == 2


def test_a_failed_generation_is_refunded(user: Api, sim_config: SimConfig) -> None:
    kept = user.generate({"prompt": "kept", "imageSize": "square"})
    assert user.wait(kept, TERMINAL)["status"] == "completed"
    before = user.wait_in_flight(0)

    sim_config.set(submit_errors={"status": 422, "count": 1})
    failed = user.generate({"prompt": "rejected by fal", "numImages": 3, "imageSize": "square"})
    during = user.usage()
    record = user.wait(failed, TERMINAL)
    assert record["status"] == "failed", record
    assert record["error"]["code"] == "fal_rejected"

    after = user.wait_in_flight(0)
    # While it ran it was charged (unless it had failed already); afterwards it is not.
    assert during["generations"] in (1, 2)
    for name in ("generations", "images", "megapixels", "estimatedCostUsd"):
        assert after[name] == before[name], name
    assert (after["generations"], after["images"]) == (1, 1)
    assert after["inFlight"] == 0


def test_usage_needs_an_api_key(api: Api) -> None:
    response = api.http.get("/v1/usage")
    assert response.status_code == 401


# Longer than the ~40 s the api spends retrying a contended transaction, so that a failing
# run reports the api's real answers and leaves nothing running into later tests.
RACE_TIMEOUT_SECONDS = 50


def test_six_parallel_requests_admit_exactly_two_promptly(
    user: Api, sim_config: SimConfig, make_user: MakeUser
) -> None:
    """Six POSTs at once for one plain user: exactly two are admitted and four are told to
    retry (429), promptly; another user is not held up meanwhile; and the limit frees once
    the two have ended.

    KNOWN FAILURE (product bug): every admission runs one Firestore transaction that reads
    `userLimits/{user}` and `usage/{user}_{month}`, counts the user's unfinished generations
    with a query, and writes both documents. Concurrent admissions for one user all hold
    read locks and then need write locks, so on the Firestore emulator the attempts end in
    `ABORTED: Transaction lock timeout.` (~2 s each) and collide again on retry. After
    `max_attempts=20` (~40 s) the client raises `ValueError("Failed to commit transaction in
    20 attempts.")`, which `web.dispatch` does not map: the losers get 500 `internal` after
    ~40 s (no Retry-After) instead of a prompt 429; in some runs all six do and nothing is
    admitted, and in some runs another user's single POST waits the same ~40 s. api.log
    shows one `"unhandled error"` per loser, ending in `ValueError: Failed to commit
    transaction in 20 attempts.`, caused by `google.api_core.exceptions.Aborted: 409
    Transaction lock timeout.` Two or three parallel POSTs do get through, but only after
    4-6 s of lock timeouts."""
    sim_config.set(inference_delay=30)
    other = make_user()

    def post(client_user: Api, index: int) -> tuple[int | str, float, str]:
        started = time.monotonic()
        with httpx.Client(base_url=client_user.http.base_url, timeout=RACE_TIMEOUT_SECONDS) as c:
            body = {"prompt": f"race {index}", "imageSize": "square"}
            try:
                response = c.post(GENERATIONS, json=body, headers=client_user.headers)
            except httpx.TimeoutException:
                return "timeout", time.monotonic() - started, ""
            return response.status_code, time.monotonic() - started, response.text

    answers: list[tuple[int | str, float, str]] = []
    bystander: tuple[int | str, float, str] = ("not sent", 0.0, "")
    try:
        with ThreadPoolExecutor(max_workers=7) as pool:
            burst = [pool.submit(post, user, i) for i in range(6)]
            time.sleep(0.3)
            bystander = pool.submit(post, other, 99).result()
            answers = [future.result() for future in burst]
        # One assertion, so a failure shows every symptom at once.
        summary = {
            "statuses": sorted(str(status) for status, _, _ in answers),
            "slowest answer under 10 s": max(seconds for _, seconds, _ in answers) < 10,
            "other user": (bystander[0], bystander[1] < 10),
        }
        assert summary == {
            "statuses": ["202", "202", "429", "429", "429", "429"],
            "slowest answer under 10 s": True,
            "other user": (202, True),
        }, [(s, round(t, 1), text[:100]) for s, t, text in [*answers, bystander]]
        for _, _, text in (a for a in answers if a[0] == 429):
            assert json.loads(text)["error"]["code"] == "too_many_in_flight"
        usage = user.usage()
        assert (usage["generations"], usage["inFlight"]) == (2, 2)
    finally:
        for owner, (status, _, text) in [(user, a) for a in answers] + [(other, bystander)]:
            if status == 202:
                owner.cancel(json.loads(text)["id"])
        sim_config.restore()  # fal at normal speed again, for the generation below

    # Canceled, their slots are free again.
    assert user.wait_in_flight(0)["inFlight"] == 0
    again = user.generate({"prompt": "after the race", "imageSize": "square"})
    assert user.wait(again, TERMINAL)["status"] == "completed"
