"""Results through the whole stack: thumbnails, history, delete, cancel and NSFW filtering."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from PIL import Image

from imagegen import clients
from tests.support import Api
from tests.support import sim as sim_client

pytestmark = pytest.mark.e2e

PATH = "/v1/images/generations"
TERMINAL = {"completed", "failed", "canceled"}


class User(Api):
    """An API client for one user, with the result endpoints."""

    def __init__(self, base_url: str, api_key: str, user_id: str) -> None:
        super().__init__(base_url, api_key)
        self.user_id = user_id

    def history(self, **params: Any) -> httpx.Response:
        return self.http.get(PATH, params=params, headers=self.headers)

    def delete(self, generation_id: str) -> httpx.Response:
        return self.http.delete(f"{PATH}/{generation_id}", headers=self.headers)

    def cancel(self, generation_id: str) -> httpx.Response:
        return self.http.post(f"{PATH}/{generation_id}/cancel", headers=self.headers)

    def generate(self, body: dict[str, Any]) -> str:
        accepted = self.create(body)
        assert accepted.status_code == 202, accepted.text
        return accepted.json()["id"]


@pytest.fixture
def new_user(stack) -> Iterator[Any]:
    """Makes users no other test shares, so counts in their history are exact."""

    def make(role: str = "user") -> User:
        user_id = f"user-{uuid.uuid4()}"
        return User(stack.env["API_URL"], stack.create_api_key(user_id, role), user_id)

    yield make


@pytest.fixture
def sim(fal_sim: httpx.Client) -> Iterator[httpx.Client]:
    """The simulator's control API; every setting this test changes is restored after it."""
    saved = fal_sim.get("/_sim/config").json()
    yield fal_sim
    fal_sim.post("/_sim/config", json={**saved, "submit_errors": None})


def _bucket(stack_env: dict[str, str]):
    return clients.storage_client().bucket(stack_env["IMAGES_BUCKET"])


def _objects(stack_env: dict[str, str], user_id: str, generation_id: str) -> list[str]:
    names = []
    for prefix in ("generations", "thumbnails"):
        names += [
            blob.name
            for blob in clients.storage_client().list_blobs(
                stack_env["IMAGES_BUCKET"], prefix=f"{prefix}/{user_id}/{generation_id}/"
            )
        ]
    return sorted(names)


def _sim_request(sim: httpx.Client, generation_id: str, timeout: float = 30) -> dict[str, Any]:
    """The simulator's entry for the (first) fal request of a generation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for request in sim.get("/_sim/requests").json():
            if f"gid={generation_id}" in (request.get("webhook_url") or ""):
                return request
        time.sleep(0.1)
    raise AssertionError(f"no fal request for {generation_id}")


def _sim_until(
    sim: httpx.Client,
    request_id: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float = 30,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        entry = sim.get(f"/_sim/requests/{request_id}").json()
        if check(entry):
            return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"simulator request never got there: {entry}")
        time.sleep(0.1)


# -- thumbnails and views ----------------------------------------------------------------


def test_completed_images_have_webp_thumbnails_and_full_views(new_user, stack_env) -> None:
    user = new_user()
    generation_id = user.generate(
        {"prompt": "a lighthouse", "numImages": 2, "imageSize": "landscape_4_3"}
    )
    record = user.wait(generation_id, TERMINAL)
    assert record["status"] == "completed", record
    bucket = _bucket(stack_env)
    for index, image in enumerate(record["images"]):
        assert image["status"] == "ok" and image["nsfw"] is False
        assert image["fullUrl"] == f"{image['bucket']}/{image['path']}"
        assert image["url"] and image["thumbnailUrl"]
        thumb_path = f"thumbnails/{user.user_id}/{generation_id}/{index}.webp"
        blob = bucket.get_blob(thumb_path)
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


def test_portrait_thumbnail_keeps_its_aspect(new_user) -> None:
    user = new_user()
    record = user.wait(user.generate({"prompt": "a tower", "imageSize": "portrait_16_9"}), TERMINAL)
    assert record["status"] == "completed", record
    with Image.open(io.BytesIO(httpx.get(record["images"][0]["thumbnailUrl"]).content)) as thumb:
        assert thumb.size == (144, 256)


# -- history -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history_user(stack) -> tuple[User, list[str], str]:
    """A fresh user with 5 completed generations (models dev, schnell, dev, schnell, dev
    from oldest to newest; returned newest first) and a newer canceled one."""
    user_id = f"user-{uuid.uuid4()}"
    user = User(stack.env["API_URL"], stack.create_api_key(user_id), user_id)
    created = []
    for n in range(5):
        # One at a time: a user may have only two generations in flight.
        model = "flux-schnell" if n % 2 else "flux-dev"
        created.append(user.generate({"prompt": f"history {n}", "model": model}))
        assert user.wait(created[-1], TERMINAL)["status"] == "completed"
    control = sim_client(stack.env)
    saved = control.get("/_sim/config").json()
    control.post("/_sim/config", json={"queue_delay": 30})
    try:
        canceled = user.generate({"prompt": "history canceled"})
        user.wait(canceled, {"submitted"})
    finally:
        control.post("/_sim/config", json=saved)
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


def test_history_shows_only_the_callers_generations(history_user, new_user) -> None:
    user, completed, canceled = history_user
    other = new_user()
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
    response = api.http.get(PATH, params=params, headers=api.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]


def test_history_needs_an_api_key(api: Api) -> None:
    assert api.http.get(PATH).status_code == 401


# -- delete ------------------------------------------------------------------------------


def test_delete_removes_every_object_and_the_record(new_user, stack_env) -> None:
    user = new_user()
    generation_id = user.generate({"prompt": "to be deleted", "numImages": 2})
    assert user.wait(generation_id, TERMINAL)["status"] == "completed"
    stored = _objects(stack_env, user.user_id, generation_id)
    assert len(stored) == 4  # two images, two thumbnails
    # An object the record does not know (a part that completed late) goes too.
    stray = f"generations/{user.user_id}/{generation_id}/9.jpg"
    _bucket(stack_env).blob(stray).upload_from_string(b"late", content_type="image/jpeg")

    response = user.delete(generation_id)
    assert response.status_code == 204 and response.content == b""
    assert _objects(stack_env, user.user_id, generation_id) == []
    assert user.get(generation_id).status_code == 404
    assert generation_id not in [g["id"] for g in user.history().json()["images"]]
    # Idempotent for its owner.
    assert user.delete(generation_id).status_code == 204
    assert user.delete(generation_id).status_code == 204


def test_delete_never_reveals_or_touches_other_users_generations(new_user, stack_env) -> None:
    owner, intruder = new_user(), new_user()
    generation_id = owner.generate({"prompt": "mine"})
    assert owner.wait(generation_id, TERMINAL)["status"] == "completed"

    refused = intruder.delete(generation_id)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert owner.get(generation_id).status_code == 200
    assert len(_objects(stack_env, owner.user_id, generation_id)) == 2

    assert intruder.delete(str(uuid.uuid4())).status_code == 404
    assert intruder.delete("not a valid id!").status_code == 404
    # Once deleted, the tombstone answers only its owner.
    assert owner.delete(generation_id).status_code == 204
    assert intruder.delete(generation_id).status_code == 404


def test_delete_of_a_running_generation_cancels_it_at_fal(new_user, sim, stack_env) -> None:
    sim.post("/_sim/config", json={"queue_delay": 30})
    user = new_user()
    generation_id = user.generate({"prompt": "deleted while running"})
    user.wait(generation_id, {"submitted"})
    request_id = _sim_request(sim, generation_id)["request_id"]

    assert user.delete(generation_id).status_code == 204
    assert user.get(generation_id).status_code == 404
    entry = _sim_until(sim, request_id, lambda e: e["status"] == "COMPLETED")
    assert entry["cancel_requested"] is True
    # fal's (cancelled) webhook finds nothing to store.
    _sim_until(sim, request_id, lambda e: e["webhook_deliveries"]["succeeded"] >= 1)
    assert _objects(stack_env, user.user_id, generation_id) == []
    assert user.delete(generation_id).status_code == 204


# -- cancel ------------------------------------------------------------------------------


def test_cancel_of_a_queued_generation_is_immediate(new_user, sim) -> None:
    # fal keeps failing the submit, so the generation stays queued (Pub/Sub redelivers).
    sim.post("/_sim/config", json={"submit_errors": {"status": 500, "count": 1000}})
    user = new_user()
    generation_id = user.generate({"prompt": "never dispatched"})
    time.sleep(0.5)
    assert user.get(generation_id).json()["status"] == "queued"

    response = user.cancel(generation_id)
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["status"] == "canceled" and record["canceledAt"]
    assert [part["status"] for part in record["parts"]] == ["canceled"]

    # fal works again: the redelivered message must not submit a canceled generation.
    sim.post("/_sim/config", json={"submit_errors": None})
    time.sleep(4)
    assert not [
        r
        for r in sim.get("/_sim/requests").json()
        if f"gid={generation_id}" in (r.get("webhook_url") or "")
    ]
    assert user.get(generation_id).json()["status"] == "canceled"


def test_cancel_of_a_submitted_generation_cancels_it_at_fal(new_user, sim, stack_env) -> None:
    sim.post("/_sim/config", json={"queue_delay": 30})
    user = new_user()
    generation_id = user.generate({"prompt": "canceled at fal", "numImages": 2})
    user.wait(generation_id, {"submitted"})
    request_id = _sim_request(sim, generation_id)["request_id"]

    response = user.cancel(generation_id)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"

    entry = _sim_until(sim, request_id, lambda e: e["status"] == "COMPLETED")
    assert entry["cancel_requested"] is True and entry["error"] == "Request was cancelled"
    # The webhook fal still sends after a cancel changes nothing and stores nothing.
    _sim_until(sim, request_id, lambda e: e["webhook_deliveries"]["succeeded"] >= 1)
    record = user.get(generation_id).json()
    assert record["status"] == "canceled" and record["images"] == [] and record["error"] is None
    assert _objects(stack_env, user.user_id, generation_id) == []

    again = user.cancel(generation_id)
    assert again.status_code == 409 and "canceled" in again.json()["error"]["message"]


def test_cancel_too_late_at_fal_is_a_conflict(new_user, sim) -> None:
    # fal finishes, but its webhook has not arrived: fal answers ALREADY_COMPLETED.
    sim.post("/_sim/config", json={"webhook": "none"})
    user = new_user()
    generation_id = user.generate({"prompt": "finished at fal"})
    user.wait(generation_id, {"submitted"})
    request_id = _sim_request(sim, generation_id)["request_id"]
    _sim_until(sim, request_id, lambda e: e["status"] == "COMPLETED")

    response = user.cancel(generation_id)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "conflict"
    assert user.get(generation_id).json()["status"] == "submitted"


def test_cancel_of_a_completed_generation_is_a_conflict(new_user) -> None:
    user = new_user()
    generation_id = user.generate({"prompt": "already done"})
    assert user.wait(generation_id, TERMINAL)["status"] == "completed"
    response = user.cancel(generation_id)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict" and "completed" in error["message"]
    assert user.get(generation_id).json()["status"] == "completed"


def test_cancel_of_someone_elses_generation_is_404(new_user) -> None:
    generation_id = new_user().generate({"prompt": "someone's own"})
    assert new_user().cancel(generation_id).status_code == 404
    assert new_user().cancel(str(uuid.uuid4())).status_code == 404
    assert new_user().cancel("bad id!").status_code == 404


# -- NSFW --------------------------------------------------------------------------------


def test_nsfw_images_are_filtered_for_users_but_served_to_admins(new_user, stack_env) -> None:
    user, admin = new_user(), new_user("admin")
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
    assert len(_objects(stack_env, user.user_id, users_id)) == 4

    record = admin.wait(admins_id, TERMINAL)
    assert record["status"] == "completed", record
    for image in record["images"]:
        assert image["status"] == "filtered"
        assert httpx.get(image["url"]).status_code == 200
        assert httpx.get(image["thumbnailUrl"]).status_code == 200


def test_clean_images_are_ok_for_a_plain_user(new_user) -> None:
    user = new_user()
    record = user.wait(user.generate({"prompt": "a kitten"}), TERMINAL)
    assert record["status"] == "completed", record
    image = record["images"][0]
    assert image["status"] == "ok" and image["nsfw"] is False
    assert httpx.get(image["url"]).status_code == 200
