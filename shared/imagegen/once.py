"""Process-wide values made on first use, exactly once."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Once(Generic[T]):
    """The value `factory` makes, made exactly once per process even when threads race for
    it (a cold instance's first concurrent requests do), and then shared: `functools.cache`
    would let each racing thread build its own client, connection and all."""

    def __init__(self, factory: Callable[[], T]) -> None:
        functools.update_wrapper(self, factory)
        self._factory = factory
        self._lock = threading.Lock()
        self._made: list[T] = []

    def __call__(self) -> T:
        made = self._made
        if not made:
            with self._lock:
                if not self._made:
                    self._made = [self._factory()]
                made = self._made
        return made[0]

    def cache_clear(self) -> None:
        with self._lock:
            self._made = []
