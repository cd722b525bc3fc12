"""Admission under races that one instance's per-user lock does not see: several instances
admitting for one user at once (the lock is disabled here to stand for that). The
conditional writes alone must keep the limits and the Idempotency-Key exact."""

from __future__ import annotations

import contextlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from imagegen import accept, transactions
from imagegen.accept import build_generation
from imagegen.auth import Principal
from imagegen.errors import RateLimitedError
from imagegen.idempotency import claim as idempotency_claim
from imagegen.settings import get_settings
from imagegen.validation import parse_generation_request

pytestmark = pytest.mark.integration


@pytest.fixture
def many_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "serialized", lambda key: contextlib.nullcontext())


def _race(count: int, call) -> list[object]:  # noqa: ANN001
    barrier = threading.Barrier(count)

    def run(i: int) -> object:
        barrier.wait()
        try:
            return call(i)
        except RateLimitedError as refused:
            return refused

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def _generation(principal: Principal):  # noqa: ANN202
    validated = parse_generation_request(b'{"prompt": "a race", "model": "flux-schnell"}')
    return build_generation(validated, principal, datetime.now(UTC))


def test_six_instances_admitting_one_user_admit_exactly_the_in_flight_limit(
    stack_env, many_instances
) -> None:
    settings = get_settings().model_copy(update={"max_in_flight": 2})
    principal = Principal(f"race-{uuid.uuid4().hex[:8]}", "user", "k")

    def admit(_: int) -> object:
        return accept._admit_and_create(
            [_generation(principal)], principal, None, settings, datetime.now(UTC), None
        )

    results = _race(6, admit)
    admitted = [r for r in results if isinstance(r, accept.Accepted)]
    refused = [r for r in results if isinstance(r, RateLimitedError)]
    assert len(admitted) == 2, results
    assert {r.code for r in refused} == {"too_many_in_flight"} and len(refused) == 4


def test_one_idempotency_key_raced_from_four_instances_creates_once(
    stack_env, many_instances
) -> None:
    settings = get_settings().model_copy(update={"max_in_flight": 10})
    principal = Principal(f"race-{uuid.uuid4().hex[:8]}", "user", "k")
    key = idempotency_claim(principal.user_id, "same-key", "/v1/images/generations", {"p": 1})

    def admit(_: int) -> object:
        return accept._admit_and_create(
            [_generation(principal)], principal, key, settings, datetime.now(UTC), None
        )

    results = _race(4, admit)
    assert all(isinstance(r, accept.Accepted) for r in results), results
    ids = {tuple(g.id for g in r.generations) for r in results}  # type: ignore[union-attr]
    assert len(ids) == 1
    assert sum(not r.replayed for r in results) == 1  # type: ignore[union-attr]
