"""The per-instance cache of API-key lookups: expiry, eviction, invalidation."""

from __future__ import annotations

from imagegen.ttl_cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_for_its_ttl_and_no_longer() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(5.0, clock=clock)
    cache.put("k", 1)
    clock.now += 4.9
    assert cache.get("k") == 1
    clock.now += 0.1
    assert cache.get("k") is None


def test_a_ttl_of_zero_remembers_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(0.0)
    cache.put("k", 1)
    assert cache.get("k") is None


def test_discard_forgets_at_once() -> None:
    cache: TtlCache[str, int] = TtlCache(60.0)
    cache.put("k", 1)
    cache.discard("k")
    cache.discard("never there")
    assert cache.get("k") is None


def test_past_its_size_the_least_recently_used_entry_goes() -> None:
    cache: TtlCache[str, int] = TtlCache(60.0, max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
