"""Calls to the watchdog: only Cloud Tasks' token gets in; scheduling is idempotent."""

from __future__ import annotations

from typing import Any

import pytest

from imagegen.errors import AuthenticationError, PermissionDeniedError
from imagegen.settings import Settings
from imagegen.task_auth import authorize_task_call
from imagegen.task_queue import TaskQueue, task_id

INVOKER = "tasks@project.iam.gserviceaccount.com"
AUDIENCE = "https://watchdog.example/"


def _verifier(claims: dict[str, Any] | Exception):
    def verify(token: str, audience: str) -> dict[str, Any]:
        assert audience == AUDIENCE
        if isinstance(claims, Exception):
            raise claims
        return claims

    return verify


def test_no_invoker_configured_means_no_check() -> None:
    authorize_task_call(None, None, AUDIENCE, _verifier(ValueError("never called")))


def test_cloud_tasks_token_is_accepted() -> None:
    claims = {"email": INVOKER, "email_verified": True, "aud": AUDIENCE}
    authorize_task_call("Bearer tok", INVOKER, AUDIENCE, _verifier(claims))


@pytest.mark.parametrize("header", [None, "", "Basic x", "Bearer"])
def test_a_call_without_a_bearer_token_is_401(header: str | None) -> None:
    with pytest.raises(AuthenticationError):
        authorize_task_call(header, INVOKER, AUDIENCE, _verifier({}))


def test_an_invalid_token_is_401() -> None:
    with pytest.raises(AuthenticationError) as caught:
        authorize_task_call("Bearer bad", INVOKER, AUDIENCE, _verifier(ValueError("bad sig")))
    assert caught.value.code == "invalid_token"


@pytest.mark.parametrize(
    "claims",
    [
        {"email": "someone@else.iam.gserviceaccount.com", "email_verified": True},
        {"email": INVOKER, "email_verified": False},
        {"email": INVOKER},
        {},
    ],
)
def test_a_valid_token_of_anyone_else_is_403(claims: dict[str, Any]) -> None:
    with pytest.raises(PermissionDeniedError):
        authorize_task_call("Bearer tok", INVOKER, AUDIENCE, _verifier(claims))


def test_task_ids_keep_only_allowed_characters() -> None:
    name = task_id("watchdog", "check", "g/1", 0, "req:2", 3)
    assert name == "watchdog-check-g-1-0-req-2-3"
    assert len(task_id("x" * 600)) == 500


class FakeTasks:
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.created: list[dict[str, Any]] = []

    def create_task(self, parent: str, task: dict[str, Any]) -> None:
        from google.api_core.exceptions import AlreadyExists

        if task["name"] in self.names:
            raise AlreadyExists("exists")
        self.names.add(task["name"])
        self.created.append(task)


def test_scheduling_the_same_task_twice_creates_it_once() -> None:
    settings = Settings(watchdog_invoker=INVOKER)
    queue = TaskQueue(settings)
    fake = FakeTasks()
    queue._client = fake  # the real client talks gRPC; the naming rule is what is tested
    assert queue.enqueue("watchdog-g-0-r-1", AUDIENCE, {"a": 1}, 5) is True
    assert queue.enqueue("watchdog-g-0-r-1", AUDIENCE, {"a": 1}, 5) is False
    assert len(fake.created) == 1
    task = fake.created[0]
    assert task["name"] == f"{settings.tasks_queue}/tasks/watchdog-g-0-r-1"
    assert task["http_request"]["oidc_token"] == {
        "service_account_email": INVOKER,
        "audience": AUDIENCE,
    }
