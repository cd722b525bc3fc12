"""Results through the whole stack: thumbnails, history, delete, cancel and NSFW filtering."""

from __future__ import annotations

import io
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support import (
    GENERATIONS,
    TERMINAL,
    Api,
    MakeUser,
    SimConfig,
    sim,
    sim_requests_for,
    wait_sim_request,
    wait_sim_requests_for,
)

pytestmark = pytest.mark.e2e


def _objects(images_bucket, user_id: str, generation_id: str) -> list[str]:
    """Every stored object of one generation: its images and their thumbnails."""
    names = []
    for prefix in ("generations", "thumbnails"):
        names += [
            blob.name
            for blob in images_bucket.list_blobs(prefix=f"{prefix}/{user_id}/{generation_id}/")
        ]
    return sorted(names)


# -- thumbnails and views ----------------------------------------------------------------


def test_completed_images_have_webp_thumbnails_and_full_views(make_user, images_bucket) -> None:
    user = make_user()
    generation_id = user.generate(
        {"prompt": "a lighthouse", "numImages": 2, "imageSize": "landscape_4_3"}
    )
    record = user.wait(generation_id, TERMINAL)
    assert record["status"] == "completed", record
    for index, image in enumerate(record["images"]):
        assert image["status"] == "ok" and image["nsfw"] is False
        assert image["fullUrl"] == f"{image['bucket']}/{image['path']}"
        assert image["url"] and image["thumbnailUrl"]
        thumb_path = f"thumbnails/{user.user_id}/{generation_id}/{index}.webp"
        blob = images_bucket.get_blob(thumb_path)
        assert blob is not None and blob.content_type == "image/webp"
        served = httpx.get(image["thumbnailUrl"])
        assert served.status_code == 200
        with Image.open(io.BytesIO(served.content)) as thumbnail:
            assert thumbnail.format == "WEBP"
            assert thumbnail.size == (256, 192)  # 1024x768 scaled to 256 on the long side
        assert len(served.content) < image["fileSize"]
    # fal's timings: per part and summed.
    assert record["parts"] and all("timings" in part for part in record["parts"])
    assert record["timings"].get("inference", 0) > 0
    assert record["generationTime"] > 0


def test_portrait_thumbnail_keeps_its_aspect(make_user) -> None:
    user = make_user()
    record = user.wait(user.generate({"prompt": "a tower", "imageSize": "portrait_16_9"}), TERMINAL)
    assert record["status"] == "completed", record
    with Image.open(io.BytesIO(httpx.get(record["images"][0]["thumbnailUrl"]).content)) as thumb:
        assert thumb.size == (144, 256)


# -- history -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history_user(make_user: MakeUser, stack) -> tuple[Api, list[str], str]:
    """A fresh user with 5 completed generations (models dev, schnell, dev, schnell, dev
    from oldest to newest; returned newest first) and a newer canceled one."""
    user = make_user()
    created = []
    for n in range(5):
        # One at a time: a user may have only two generations in flight.
        model = "flux-schnell" if n % 2 else "flux-dev"
        created.append(user.generate({"prompt": f"history {n}", "model": model}))
        assert user.wait(created[-1], TERMINAL)["status"] == "completed"
    # Module-scoped, so not the per-test `sim_config` fixture: the same undo, by hand.
    slow_queue = SimConfig(sim(stack.env))
    slow_queue.set(queue_delay=30)
    try:
        canceled = user.generate({"prompt": "history canceled"})
        user.wait(canceled, {"submitted"})
    finally:
        slow_queue.restore()
    assert user.cancel(canceled).status_code == 200
    return user, list(reversed(created)), canceled


def test_history_pages_newest_first_with_totals(history_user) -> None:
    user, completed, canceled = history_user
    newest_first = [canceled, *completed]

    first = user.history(perPage=4)
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"images", "total", "page", "perPage", "next"}
    assert (body["total"], body["page"], body["perPage"]) == (6, 1, 4)
    assert [g["id"] for g in body["images"]] == newest_first[:4]
    assert body["next"]
    created_at = [g["createdAt"] for g in body["images"]]
    assert created_at == sorted(created_at, reverse=True)

    second = user.history(perPage=4, page=2).json()
    assert [g["id"] for g in second["images"]] == newest_first[4:]
    assert (second["total"], second["page"], second["next"]) == (6, 2, None)
    assert user.history(perPage=4, page=3).json()["images"] == []

    default = user.history().json()
    assert default["perPage"] == 20 and len(default["images"]) == 6 and default["next"] is None
    # Items are the same views GET returns.
    assert default["images"][1] == user.get(completed[0]).json() | {
        "images": default["images"][1]["images"]
    }
    assert default["images"][1]["images"][0]["thumbnailUrl"]


def test_history_cursor_walks_everything_once(history_user) -> None:
    user, completed, canceled = history_user
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"perPage": 2} | ({"cursor": cursor} if cursor else {})
        # A page number next to a cursor is ignored.
        body = user.history(**params, page=5 if cursor else 1).json()
        assert body["total"] == 6
        seen += [g["id"] for g in body["images"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
        assert pages < 10
    assert seen == [canceled, *completed]
    assert len(set(seen)) == len(seen)


def test_history_filters(history_user) -> None:
    user, completed, canceled = history_user

    def ids(**params: Any) -> tuple[list[str], int]:
        response = user.history(**params)
        assert response.status_code == 200, response.text
        return [g["id"] for g in response.json()["images"]], response.json()["total"]

    assert ids(status="completed") == (completed, 5)
    assert ids(status="canceled") == ([canceled], 1)
    assert ids(status="failed") == ([], 0)
    # Oldest to newest the models were dev, schnell, dev, schnell, dev.
    assert ids(model="flux-schnell") == ([completed[1], completed[3]], 2)
    assert ids(model="flux-dev", status="completed") == (
        [completed[0], completed[2], completed[4]],
        3,
    )

    created_at = {g["id"]: g["createdAt"] for g in user.history().json()["images"]}
    middle = created_at[completed[2]]
    # createdAfter is inclusive, createdBefore exclusive.
    assert ids(createdAfter=middle, status="completed") == (completed[:3], 3)
    assert ids(createdBefore=middle) == (completed[3:], 2)
    assert ids(createdAfter=middle, createdBefore=created_at[completed[0]]) == (
        completed[1:3],
        2,
    )
    future = datetime.fromisoformat(created_at[canceled]).replace(year=2999).isoformat()
    assert ids(createdAfter=future) == ([], 0)

    # Filters and cursors combine.
    first = user.history(model="flux-dev", perPage=2).json()
    rest = user.history(model="flux-dev", perPage=2, cursor=first["next"]).json()
    assert [g["id"] for g in first["images"] + rest["images"]] == [
        canceled,
        completed[0],
        completed[2],
        completed[4],
    ]
    assert rest["next"] is None


def test_history_shows_only_the_callers_generations(history_user, make_user) -> None:
    user, completed, canceled = history_user
    other = make_user()
    theirs = other.generate({"prompt": "someone else's"})
    listed = other.history().json()
    assert [g["id"] for g in listed["images"]] == [theirs] and listed["total"] == 1
    mine = user.history(perPage=100).json()
    assert theirs not in [g["id"] for g in mine["images"]] and mine["total"] == 6


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"perPage": "101"}, "perPage"),
        ({"page": "0"}, "page"),
        ({"status": "done"}, "status"),
        ({"model": "no-such-model"}, "model"),
        ({"createdAfter": "last tuesday"}, "createdAfter"),
        ({"createdBefore": "2026-99-01T00:00:00Z"}, "createdBefore"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ({"cursor": "%%%"}, "cursor"),
        ({"limit": "5"}, "limit"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_history_parameters_are_422(api: Api, params, field) -> None:
    response = api.http.get(GENERATIONS, params=params, headers=api.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]


def test_history_needs_an_api_key(api: Api) -> None:
    assert api.http.get(GENERATIONS).status_code == 401


# -- delete ------------------------------------------------------------------------------


def test_delete_removes_every_object_and_the_record(make_user, images_bucket) -> None:
    user = make_user()
    generation_id = user.generate({"prompt": "to be deleted", "numImages": 2})
    assert user.wait(generation_id, TERMINAL)["status"] == "completed"
    stored = _objects(images_bucket, user.user_id, generation_id)
    assert len(stored) == 4  # two images, two thumbnails
    # An object the record does not know (a part that completed late) goes too.
    stray = f"generations/{user.user_id}/{generation_id}/9.jpg"
    images_bucket.blob(stray).upload_from_string(b"late", content_type="image/jpeg")

    response = user.delete(generation_id)
    assert response.status_code == 204 and response.content == b""
    assert _objects(images_bucket, user.user_id, generation_id) == []
    assert user.get(generation_id).status_code == 404
    assert generation_id not in [g["id"] for g in user.history().json()["images"]]
    # Idempotent for its owner.
    assert user.delete(generation_id).status_code == 204
    assert user.delete(generation_id).status_code == 204


def test_delete_never_reveals_or_touches_other_users_generations(make_user, images_bucket) -> None:
    owner, intruder = make_user(), make_user()
    generation_id = owner.generate({"prompt": "mine"})
    assert owner.wait(generation_id, TERMINAL)["status"] == "completed"

    refused = intruder.delete(generation_id)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert owner.get(generation_id).status_code == 200
    assert len(_objects(images_bucket, owner.user_id, generation_id)) == 2

    assert intruder.delete(str(uuid.uuid4())).status_code == 404
    assert intruder.delete("not a valid id!").status_code == 404
    # Once deleted, the tombstone answers only its owner.
    assert owner.delete(generation_id).status_code == 204
    assert intruder.delete(generation_id).status_code == 404


def test_delete_of_a_running_generation_cancels_it_at_fal(
    make_user, fal_sim, sim_config, images_bucket
) -> None:
    sim_config.set(queue_delay=30)
    user = make_user()
    generation_id = user.generate({"prompt": "deleted while running"})
    user.wait(generation_id, {"submitted"})
    request_id = wait_sim_requests_for(fal_sim, generation_id)[0]["request_id"]

    assert user.delete(generation_id).status_code == 204
    assert user.get(generation_id).status_code == 404
    entry = wait_sim_request(fal_sim, request_id, lambda e: e["status"] == "COMPLETED")
    assert entry["cancel_requested"] is True
    # fal's (cancelled) webhook finds nothing to store.
    wait_sim_request(fal_sim, request_id, lambda e: e["webhook_deliveries"]["succeeded"] >= 1)
    assert _objects(images_bucket, user.user_id, generation_id) == []
    assert user.delete(generation_id).status_code == 204


# -- cancel ------------------------------------------------------------------------------


def test_cancel_of_a_queued_generation_is_immediate(make_user, fal_sim, sim_config) -> None:
    # fal keeps failing the submit, so the generation stays queued (Pub/Sub redelivers).
    sim_config.set(submit_errors={"status": 500, "count": 1000})
    user = make_user()
    generation_id = user.generate({"prompt": "never dispatched"})
    time.sleep(0.5)
    assert user.get(generation_id).json()["status"] == "queued"

    response = user.cancel(generation_id)
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["status"] == "canceled" and record["canceledAt"]
    assert [part["status"] for part in record["parts"]] == ["canceled"]

    # fal works again: the redelivered message must not submit a canceled generation.
    sim_config.set(submit_errors=None)
    time.sleep(4)
    assert sim_requests_for(fal_sim, generation_id) == []
    assert user.get(generation_id).json()["status"] == "canceled"


def test_cancel_of_a_submitted_generation_cancels_it_at_fal(
    make_user, fal_sim, sim_config, images_bucket
) -> None:
    sim_config.set(queue_delay=30)
    user = make_user()
    generation_id = user.generate({"prompt": "canceled at fal", "numImages": 2})
    user.wait(generation_id, {"submitted"})
    request_id = wait_sim_requests_for(fal_sim, generation_id)[0]["request_id"]

    response = user.cancel(generation_id)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"

    entry = wait_sim_request(fal_sim, request_id, lambda e: e["status"] == "COMPLETED")
    assert entry["cancel_requested"] is True and entry["error"] == "Request was cancelled"
    # The webhook fal still sends after a cancel changes nothing and stores nothing.
    wait_sim_request(fal_sim, request_id, lambda e: e["webhook_deliveries"]["succeeded"] >= 1)
    record = user.get(generation_id).json()
    assert record["status"] == "canceled" and record["images"] == [] and record["error"] is None
    assert _objects(images_bucket, user.user_id, generation_id) == []

    again = user.cancel(generation_id)
    assert again.status_code == 409 and "canceled" in again.json()["error"]["message"]


def test_cancel_too_late_at_fal_is_a_conflict(make_user, fal_sim, sim_config) -> None:
    # fal finishes, but its webhook has not arrived: fal answers ALREADY_COMPLETED.
    sim_config.set(webhook="none")
    user = make_user()
    generation_id = user.generate({"prompt": "finished at fal"})
    user.wait(generation_id, {"submitted"})
    request_id = wait_sim_requests_for(fal_sim, generation_id)[0]["request_id"]
    wait_sim_request(fal_sim, request_id, lambda e: e["status"] == "COMPLETED")

    response = user.cancel(generation_id)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "conflict"
    assert user.get(generation_id).json()["status"] == "submitted"


def test_cancel_of_a_completed_generation_is_a_conflict(make_user) -> None:
    user = make_user()
    generation_id = user.generate({"prompt": "already done"})
    assert user.wait(generation_id, TERMINAL)["status"] == "completed"
    response = user.cancel(generation_id)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict" and "completed" in error["message"]
    assert user.get(generation_id).json()["status"] == "completed"


def test_cancel_of_someone_elses_generation_is_404(make_user) -> None:
    generation_id = make_user().generate({"prompt": "someone's own"})
    assert make_user().cancel(generation_id).status_code == 404
    assert make_user().cancel(str(uuid.uuid4())).status_code == 404
    assert make_user().cancel("bad id!").status_code == 404


# -- NSFW --------------------------------------------------------------------------------


def test_nsfw_images_are_filtered_for_users_but_served_to_admins(make_user, images_bucket) -> None:
    user, admin = make_user(), make_user("admin")
    body = {"prompt": "a nsfw-test portrait", "numImages": 2}
    users_id, admins_id = user.generate(body), admin.generate(body)

    record = user.wait(users_id, TERMINAL)
    assert record["status"] == "completed", record
    for image in record["images"]:
        assert image["nsfw"] is True and image["status"] == "filtered"
        assert image["url"] is None and image["thumbnailUrl"] is None
        assert image["fullUrl"] == f"{image['bucket']}/{image['path']}"
    listed = user.history().json()["images"][0]
    assert listed["id"] == users_id
    assert all(i["url"] is None and i["thumbnailUrl"] is None for i in listed["images"])
    # Stored all the same.
    assert len(_objects(images_bucket, user.user_id, users_id)) == 4

    record = admin.wait(admins_id, TERMINAL)
    assert record["status"] == "completed", record
    for image in record["images"]:
        assert image["status"] == "filtered"
        assert httpx.get(image["url"]).status_code == 200
        assert httpx.get(image["thumbnailUrl"]).status_code == 200


def test_clean_images_are_ok_for_a_plain_user(make_user) -> None:
    user = make_user()
    record = user.wait(user.generate({"prompt": "a kitten"}), TERMINAL)
    assert record["status"] == "completed", record
    image = record["images"][0]
    assert image["status"] == "ok" and image["nsfw"] is False
    assert httpx.get(image["url"]).status_code == 200
