"""A process-wide client is built once, however many threads ask for it at the same time."""

from __future__ import annotations

import threading
import time

import pytest

from imagegen.once import Once


def test_racing_threads_share_one_value_built_once() -> None:
    built: list[object] = []

    @Once
    def client() -> object:
        time.sleep(0.05)  # a slow build: every thread arrives while it is under way
        built.append(object())
        return built[-1]

    start = threading.Barrier(8)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(client())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert got == built * 8


def test_a_failed_build_is_retried_and_cache_clear_builds_anew() -> None:
    attempts: list[int] = []

    @Once
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("first build fails")
        return len(attempts)

    with pytest.raises(ConnectionError):
        flaky()
    assert flaky() == 2
    assert flaky() == 2
    flaky.cache_clear()
    assert flaky() == 3
    assert flaky.__name__ == "flaky"
