"""Unit tests for how seeds are rendered in API responses."""

from __future__ import annotations

import pytest

from imagegen.views import seed_value


def test_no_seed_is_none() -> None:
    assert seed_value(None) is None


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31, 2**32 + 1, 2**53 - 1], ids=str)
def test_js_safe_seed_is_an_int(seed: int) -> None:
    value = seed_value(str(seed))
    assert value == seed
    assert type(value) is int


@pytest.mark.parametrize("seed", [2**53, 2**53 + 1, 2**64, 2**100], ids=str)
def test_larger_seed_is_its_decimal_string(seed: int) -> None:
    assert seed_value(str(seed)) == str(seed)
