"""Batches (all or none), Idempotency-Key replays and `Prefer: wait=N` through the running
stack."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.support import BATCH, GENERATIONS, TERMINAL, Api, MakeUser, SimConfig, sim_requests_for

pytestmark = pytest.mark.e2e


# -- batches ---------------------------------------------------------------------------------


def test_batch_creates_every_item_in_order_and_reports_statuses(user: Api) -> None:
    items = [
        {"prompt": "batch item zero", "imageSize": "square"},
        {"prompt": "batch item one", "model": "flux-schnell", "numImages": 2},
    ]
    response = user.batch(items)
    assert response.status_code == 202, response.text
    body = response.json()
    batch_id = body["id"]
    assert response.headers["Location"] == f"{BATCH}/{batch_id}"
    assert body["total"] == 2
    assert body["done"] is False
    assert body["counts"] == {"queued": 2}
    ids = [g["id"] for g in body["generations"]]
    assert len(set(ids)) == 2

    # Ids come back in request order.
    records = [user.get(i).json() for i in ids]
    assert [r["prompt"] for r in records] == ["batch item zero", "batch item one"]
    assert [r["model"] for r in records] == ["flux-dev", "flux-schnell"]

    finished = user.wait_batch(batch_id)
    assert finished["id"] == batch_id
    assert [g["id"] for g in finished["generations"]] == ids
    assert finished["counts"] == {"completed": 2}
    assert [g["status"] for g in finished["generations"]] == ["completed", "completed"]
    assert [len(user.get(i).json()["images"]) for i in ids] == [1, 2]
    assert user.usage()["generations"] == 2


def test_one_bad_item_rejects_the_whole_batch_and_creates_nothing(user: Api) -> None:
    before = user.usage()
    items = [
        {"prompt": "fine"},
        {"prompt": "not for dev", "negativePrompt": "blurry"},
        {"prompt": "fine too"},
        {"prompt": "too many", "numImages": 9},
        "not an object",
        {"prompt": "unknown lora", "model": "flux-lora", "loras": [{"id": "no-such-lora"}]},
    ]
    response = user.batch(items)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    fields = {d["field"] for d in error["details"]}
    assert "requests.1.negativePrompt" in fields
    assert "requests.3.numImages" in fields
    assert "requests.4" in fields
    assert not any(f.startswith(("requests.0", "requests.2")) for f in fields), fields
    assert "1" in error["message"] and "3" in error["message"]

    assert user.history_total() == 0
    after = user.usage()
    assert (after["generations"], after["images"], after["inFlight"]) == (0, 0, 0)
    assert after["generations"] == before["generations"]


def test_an_unknown_lora_in_a_batch_is_named_by_index_and_creates_nothing(user: Api) -> None:
    response = user.batch(
        [
            {"prompt": "fine"},
            {"prompt": "lora", "model": "flux-lora", "loras": [{"id": "no-such-lora"}]},
        ]
    )
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert fields == ["requests.1.loras.0.id"]
    assert user.history_total() == 0
    assert user.usage()["generations"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"requests": []},
        {"requests": [{"prompt": "x"}] * 51},
        {"requests": {"prompt": "x"}},
        {},
        {"requests": [{"prompt": "x"}], "extra": 1},
    ],
    ids=["empty", "51-items", "not-a-list", "missing", "unknown-field"],
)
def test_malformed_batches_are_422(user: Api, body: dict[str, Any]) -> None:
    response = user.post(BATCH, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]
    assert user.history_total() == 0


def test_a_plain_users_batch_counts_every_item_against_the_in_flight_limit(user: Api) -> None:
    """Admission is all or none: three items would be three generations in flight."""
    response = user.batch([{"prompt": f"item {i}"} for i in range(3)])
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_in_flight"
    assert int(response.headers["Retry-After"]) >= 1
    assert user.history_total() == 0


def test_admin_batch_of_fifty_is_accepted(make_user: MakeUser) -> None:
    """Admins are counted, not limited, so a full batch of 50 goes through."""
    admin = make_user("admin")
    items = [{"prompt": f"admin item {i}", "imageSize": "square"} for i in range(50)]
    response = admin.batch(items)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["total"] == 50
    ids = [g["id"] for g in body["generations"]]
    assert [admin.get(i).json()["prompt"] for i in ids] == [i["prompt"] for i in items]
    assert admin.wait_batch(body["id"], timeout=120)["counts"] == {"completed": 50}


def test_another_users_batch_is_404(user: Api, make_user: MakeUser) -> None:
    created = user.batch([{"prompt": "mine"}])
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    other = make_user()
    response = other.get_batch(batch_id)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    for missing in (str(uuid.uuid4()), "not-a-batch!"):
        assert user.get_batch(missing).status_code == 404
    assert user.wait_batch(batch_id)["counts"] == {"completed": 1}


def test_batch_idempotency_key_replays_the_same_batch(user: Api) -> None:
    key = f"batch-{uuid.uuid4()}"
    items = [{"prompt": "replayed batch"}]
    first = user.batch(items, **{"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    again = user.batch(items, **{"Idempotency-Key": key})
    assert again.status_code == 202, again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["generations"][0]["id"] == first.json()["generations"][0]["id"]
    assert user.history_total() == 1
    user.wait_batch(first.json()["id"])


# -- Idempotency-Key ---------------------------------------------------------------------------


def test_a_repeated_idempotency_key_replays_without_a_second_fal_request(
    user: Api, fal_sim: httpx.Client
) -> None:
    key = f"key-{uuid.uuid4()}"
    body = {"prompt": "only once", "imageSize": "square", "seed": 5}
    first = user.post(GENERATIONS, body, **{"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    generation_id = first.json()["id"]

    # Again while it runs, and again (keys in another order) once it has completed.
    again = user.post(GENERATIONS, body, **{"Idempotency-Key": key})
    assert again.status_code == 202, again.text
    assert again.json()["id"] == generation_id
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"{GENERATIONS}/{generation_id}"
    record = user.wait(generation_id, TERMINAL)
    assert record["status"] == "completed", record
    reordered = dict(reversed(list(body.items())))
    late = user.post(GENERATIONS, reordered, **{"Idempotency-Key": key})
    assert late.status_code == 202, late.text
    assert late.json()["id"] == generation_id
    assert late.headers["Idempotent-Replayed"] == "true"

    time.sleep(1.0)  # a second dispatch, were there one, would have reached fal by now
    requests = sim_requests_for(fal_sim, generation_id)
    assert len(requests) == 1, [r["request_id"] for r in requests]
    assert user.history_total() == 1
    usage = user.usage()
    assert (usage["generations"], usage["images"], usage["inFlight"]) == (1, 1, 0)


def test_same_key_with_a_different_body_is_409(user: Api) -> None:
    key = f"key-{uuid.uuid4()}"
    first = user.post(GENERATIONS, {"prompt": "first body"}, **{"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    other = user.post(GENERATIONS, {"prompt": "second body"}, **{"Idempotency-Key": key})
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert user.history_total() == 1
    user.wait(first.json()["id"], TERMINAL)


def test_idempotency_keys_are_per_user(user: Api, make_user: MakeUser) -> None:
    key = f"shared-{uuid.uuid4()}"
    other = make_user()
    mine = user.post(GENERATIONS, {"prompt": "same"}, **{"Idempotency-Key": key})
    theirs = other.post(GENERATIONS, {"prompt": "same"}, **{"Idempotency-Key": key})
    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.json()["id"] != theirs.json()["id"]
    assert "Idempotent-Replayed" not in theirs.headers
    user.wait(mine.json()["id"], TERMINAL)
    other.wait(theirs.json()["id"], TERMINAL)


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_bad_idempotency_keys_are_400(user: Api, key: str) -> None:
    response = user.post(GENERATIONS, {"prompt": "x"}, **{"Idempotency-Key": key})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert user.history_total() == 0


# -- Prefer: wait=N ------------------------------------------------------------------------------


def test_prefer_wait_answers_200_with_the_full_record_when_it_ends_in_time(user: Api) -> None:
    response = user.post(
        GENERATIONS, {"prompt": "sync", "numImages": 2, "imageSize": "square"}, Prefer="wait=20"
    )
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=20"
    record = response.json()
    assert response.headers["Location"] == f"{GENERATIONS}/{record['id']}"
    assert record["status"] == "completed"
    assert record["prompt"] == "sync"
    assert len(record["images"]) == 2
    assert all(httpx.get(i["url"]).status_code == 200 for i in record["images"])
    assert record == {**user.get(record["id"]).json(), "images": record["images"]}


def test_prefer_wait_answers_202_with_the_record_when_time_runs_out(
    user: Api, sim_config: SimConfig
) -> None:
    sim_config.set(inference_delay=8)
    started = time.monotonic()
    response = user.post(GENERATIONS, {"prompt": "slow"}, Prefer="respond-async, wait=2")
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "wait=2"
    assert 2 <= elapsed < 7, elapsed
    record = response.json()
    assert record["status"] in ("queued", "submitted")
    assert record["prompt"] == "slow"
    assert record["images"] == []
    assert record["parameters"]["imageSize"] == "landscape_4_3"
    canceled = user.cancel(record["id"])
    assert canceled.status_code == 200, canceled.text


def test_prefer_wait_on_an_idempotent_replay_returns_the_finished_record(user: Api) -> None:
    key = f"key-{uuid.uuid4()}"
    first = user.post(GENERATIONS, {"prompt": "replay me"}, **{"Idempotency-Key": key})
    generation_id = first.json()["id"]
    user.wait(generation_id, TERMINAL)
    replay = user.post(
        GENERATIONS, {"prompt": "replay me"}, **{"Idempotency-Key": key, "Prefer": "wait=5"}
    )
    assert replay.status_code == 200, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Preference-Applied"] == "wait=5"
    assert replay.json()["id"] == generation_id
    assert replay.json()["status"] == "completed"


def test_prefer_without_wait_is_the_plain_202(user: Api) -> None:
    response = user.post(GENERATIONS, {"prompt": "async"}, Prefer="respond-async")
    assert response.status_code == 202, response.text
    assert "Preference-Applied" not in response.headers
    assert set(response.json()) == {"id", "status", "createdAt"}
    user.wait(response.json()["id"], TERMINAL)
