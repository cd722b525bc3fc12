"""Helpers the e2e tests share: an API client, polling, the fal simulator's control API and
error-shape checks. Fixtures built on them live in tests/e2e/conftest.py."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx

T = TypeVar("T")

GENERATIONS = "/v1/images/generations"
BATCH = "/v1/images/batch"
LORAS = "/v1/loras"
# A generation in one of these states will not change again.
TERMINAL = {"completed", "failed", "canceled"}


# -- polling -----------------------------------------------------------------------------


def poll(
    fetch: Callable[[], T], done: Callable[[T], bool], timeout: float, interval: float = 0.1
) -> T:
    """Calls `fetch` until `done` says yes or `timeout` seconds have passed, and returns
    the last value either way: for callers that assert on what they got."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    what: str,
    timeout: float,
    interval: float = 0.1,
) -> T:
    """Like `poll`, but fails (naming `what` and the last value) if it never gets there."""
    value = poll(fetch, done, timeout, interval)
    if not done(value):
        raise AssertionError(f"{what} not after {timeout}s; last seen: {value}")
    return value


# -- the API -----------------------------------------------------------------------------


class Api:
    """An API client acting as one user: `user_id` is whose API key it holds."""

    def __init__(self, base_url: str, api_key: str, user_id: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30.0)
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.user_id = user_id

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        """A JSON POST with this user's key and any extra headers (Idempotency-Key, Prefer)."""
        return self.http.post(path, json=body, headers={**self.headers, **headers})

    # generations

    def create(self, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(GENERATIONS, json=body, headers=self.headers)

    def generate(self, body: dict[str, Any]) -> str:
        """Creates a generation that must be accepted; its id."""
        accepted = self.create(body)
        assert accepted.status_code == 202, accepted.text
        return accepted.json()["id"]

    def get(self, generation_id: str) -> httpx.Response:
        return self.http.get(f"{GENERATIONS}/{generation_id}", headers=self.headers)

    def wait(self, generation_id: str, statuses: set[str], timeout: float = 60.0) -> dict[str, Any]:
        """The generation's record once its status is one of `statuses`."""
        return wait_for(
            lambda: self.get(generation_id).json(),
            lambda record: record["status"] in statuses,
            f"{generation_id} in {sorted(statuses)}",
            timeout,
        )

    def cancel(self, generation_id: str) -> httpx.Response:
        return self.http.post(f"{GENERATIONS}/{generation_id}/cancel", headers=self.headers)

    def delete(self, generation_id: str) -> httpx.Response:
        return self.http.delete(f"{GENERATIONS}/{generation_id}", headers=self.headers)

    def history(self, **params: Any) -> httpx.Response:
        return self.http.get(GENERATIONS, params=params, headers=self.headers)

    def history_total(self) -> int:
        """How many generations this user's history holds (to show a refusal created none)."""
        response = self.history()
        assert response.status_code == 200, response.text
        return response.json()["total"]

    # batches

    def batch(self, items: list[Any], **headers: str) -> httpx.Response:
        return self.post(BATCH, {"requests": items}, **headers)

    def get_batch(self, batch_id: str) -> httpx.Response:
        return self.http.get(f"{BATCH}/{batch_id}", headers=self.headers)

    def wait_batch(self, batch_id: str, timeout: float = 60) -> dict[str, Any]:
        """The batch's view once every generation in it has ended."""
        return wait_for(
            lambda: self.get_batch(batch_id).json(),
            lambda body: body["done"],
            f"batch {batch_id} done",
            timeout,
            interval=0.2,
        )

    # usage and limits

    def usage(self) -> dict[str, Any]:
        response = self.http.get("/v1/usage", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_in_flight(self, expected: int, timeout: float = 10) -> dict[str, Any]:
        """This user's usage once `expected` generations are in flight, or as it stands when
        the time runs out: the in-flight count follows a generation's end a little later."""
        return poll(self.usage, lambda usage: usage["inFlight"] == expected, timeout)

    # LoRAs

    def add_lora(self, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(LORAS, json=body, headers=self.headers)

    def lora(self, lora_id: str) -> httpx.Response:
        return self.http.get(f"{LORAS}/{lora_id}", headers=self.headers)

    def delete_lora(self, lora_id: str) -> httpx.Response:
        return self.http.delete(f"{LORAS}/{lora_id}", headers=self.headers)


# The `make_user` fixture: `make_user()` a plain user, `make_user("admin")` an admin.
MakeUser = Callable[..., Api]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """Checks the API's JSON error shape (and code, if given); returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# -- the fal simulator -------------------------------------------------------------------


def sim(stack_env: dict[str, str]) -> httpx.Client:
    """A client for the fal simulator's own control endpoints (it serves its own CA)."""
    trust = ssl.create_default_context(capath=stack_env["SSL_CERT_DIR"])
    return httpx.Client(base_url=stack_env["FAL_SIM_URL"], verify=trust, timeout=10.0)


class SimConfig:
    """Changes to the simulator's `/_sim/config` that can be undone: `set` remembers each
    key's value from before its first change, and `restore` puts those values back.

    The configuration is global to the simulator (and so to the session's stack), so a test
    that slows fal down or makes it fail must not leave it that way for the next one."""

    def __init__(self, control: httpx.Client) -> None:
        self.control = control
        self.saved: dict[str, Any] = {}

    def set(self, **changes: Any) -> dict[str, Any]:
        current = self.control.get("/_sim/config").json()
        for key in changes:
            self.saved.setdefault(key, current[key])
        response = self.control.post("/_sim/config", json=changes)
        assert response.status_code == 200, response.text
        return response.json()

    def restore(self) -> None:
        if self.saved:
            response = self.control.post("/_sim/config", json=self.saved)
            assert response.status_code == 200, response.text


def _generation_of(sim_request: dict[str, Any]) -> str | None:
    # The api puts `gid` (and `part`) in the query of the webhook URL it gives fal.
    query = parse_qs(urlsplit(sim_request.get("webhook_url") or "").query)
    return query.get("gid", [None])[0]


def _part_of(sim_request: dict[str, Any]) -> int:
    return int(parse_qs(urlsplit(sim_request["webhook_url"]).query)["part"][0])


def sim_requests_for(fal_sim: httpx.Client, generation_id: str) -> list[dict[str, Any]]:
    """The simulator's requests for one generation as they stand now, in part order."""
    found = [r for r in fal_sim.get("/_sim/requests").json() if _generation_of(r) == generation_id]
    return sorted(found, key=_part_of)


def wait_sim_requests_for(
    fal_sim: httpx.Client, generation_id: str, count: int = 1, timeout: float = 30
) -> list[dict[str, Any]]:
    """`sim_requests_for` once at least `count` of them have reached the simulator."""
    return wait_for(
        lambda: sim_requests_for(fal_sim, generation_id),
        lambda found: len(found) >= count,
        f"{count} fal request(s) for {generation_id}",
        timeout,
    )


def wait_sim_request(
    fal_sim: httpx.Client,
    request_id: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float = 30,
) -> dict[str, Any]:
    """The simulator's entry for one fal request once `check` accepts it."""
    return wait_for(
        lambda: fal_sim.get(f"/_sim/requests/{request_id}").json(),
        check,
        f"simulator request {request_id} as expected",
        timeout,
    )
