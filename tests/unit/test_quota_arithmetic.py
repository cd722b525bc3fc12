"""Admission arithmetic: the hourly window, in-flight count and monthly megapixels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagegen.errors import RateLimitedError
from imagegen.limits import (
    WINDOW,
    Charge,
    LedgerState,
    Limits,
    _check,
    kept_starts,
    month_key,
    next_month_start,
    pack_starts,
    unpack_starts,
)

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
LIMITS = Limits(requests_per_hour=50, max_in_flight=2, monthly_megapixels=100.0)
ONE_MP = Charge(images=1, megapixels=1.0, cost_usd=0.025)


def _state(recent: int = 0, in_flight: int = 0, used_mp: float = 0.0, spacing_s: int = 60):
    times = [NOW - timedelta(seconds=3500 - i * spacing_s) for i in range(recent)]
    return LedgerState("u", month_key(NOW), sorted(times), in_flight, {"megapixels": used_mp})


def _refusal(state: LedgerState, charges: list[Charge]) -> RateLimitedError:
    with pytest.raises(RateLimitedError) as caught:
        _check(state, charges, LIMITS, NOW)
    return caught.value


def test_within_every_limit_passes() -> None:
    _check(_state(recent=49, in_flight=1, used_mp=99.0), [ONE_MP], LIMITS, NOW)


def test_the_fifty_first_request_in_an_hour_waits_for_the_oldest_to_age_out() -> None:
    state = _state(recent=50, spacing_s=1)
    error = _refusal(state, [ONE_MP])
    assert error.code == "rate_limited" and error.status == 429
    # The oldest start was 3500 s ago: it leaves the window in 100 s.
    assert error.retry_after == 100


def test_a_batch_waits_for_as_many_slots_as_it_needs() -> None:
    state = _state(recent=48, spacing_s=10)
    # 3 more need 1 slot freed: the oldest, 3500 s ago → 100 s.
    assert _refusal(state, [ONE_MP] * 3).retry_after == 100
    # 4 more need 2 slots: the second oldest, 3490 s ago → 110 s.
    assert _refusal(state, [ONE_MP] * 4).retry_after == 110


def test_a_batch_larger_than_the_hourly_limit_waits_a_whole_hour() -> None:
    assert _refusal(_state(), [ONE_MP] * 51).retry_after == 3600


def test_the_third_generation_in_flight_is_refused() -> None:
    _check(_state(in_flight=1), [ONE_MP], LIMITS, NOW)
    error = _refusal(_state(in_flight=2), [ONE_MP])
    assert error.code == "too_many_in_flight" and error.retry_after > 0
    assert _refusal(_state(in_flight=1), [ONE_MP, ONE_MP]).code == "too_many_in_flight"


def test_monthly_megapixels_count_every_image() -> None:
    _check(_state(used_mp=96.0), [Charge(images=4, megapixels=1.0, cost_usd=0.1)], LIMITS, NOW)
    error = _refusal(_state(used_mp=96.0), [Charge(images=5, megapixels=1.0, cost_usd=0.1)])
    assert error.code == "quota_exceeded"
    # Until the first of next month, UTC.
    assert error.retry_after == int((datetime(2026, 12, 1, tzinfo=UTC) - NOW).total_seconds())
    assert error.details["requestedMegapixels"] == 5.0


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 1, 31, 23, 59, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
        (datetime(2026, 12, 15, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2028, 2, 29, 12, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)),
    ],
)
def test_next_month_start(moment: datetime, expected: datetime) -> None:
    assert next_month_start(moment) == expected
    assert month_key(moment) == moment.strftime("%Y-%m")


def test_only_the_newest_hourly_limit_of_starts_is_kept() -> None:
    kept = kept_starts(_state(recent=50, spacing_s=1).recent, NOW, 3, LIMITS)
    assert len(kept) == 50 and kept[-3:] == [NOW] * 3
    assert kept_starts([], NOW, 2, LIMITS) == [NOW, NOW]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=1, max_value=400), st.integers(min_value=1, max_value=6)),
        min_size=1,
        max_size=120,
    ),
    limit=st.integers(min_value=1, max_value=8),
)
def test_trimming_the_starts_never_changes_a_decision(
    steps: list[tuple[int, int]], limit: int
) -> None:
    """Admitting with the trimmed list gives the same answer and Retry-After as with the
    whole history, whatever the pace of requests."""
    limits = Limits(requests_per_hour=limit, max_in_flight=10**6, monthly_megapixels=1e12)
    full: list[datetime] = []
    trimmed: list[datetime] = []
    moment = NOW
    for gap_s, count in steps:
        moment += timedelta(seconds=gap_s * 10)
        window = [t for t in full if t > moment - WINDOW]
        kept = [t for t in trimmed if t > moment - WINDOW]
        outcomes = []
        for recent in (window, kept):
            state = LedgerState("u", month_key(moment), recent, 0, {})
            try:
                _check(state, [ONE_MP] * count, limits, moment)
                outcomes.append(None)
            except RateLimitedError as refused:
                outcomes.append(refused.retry_after)
        assert outcomes[0] == outcomes[1]
        if outcomes[0] is None:
            full = window + [moment] * count
            trimmed = kept_starts(kept, moment, count, limits)
            assert len(trimmed) <= limit


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
        ),
        max_size=60,
    )
)
def test_packed_start_times_read_back_exactly(starts: list[datetime]) -> None:
    packed = pack_starts(starts)
    assert isinstance(packed, bytes) and len(packed) == 8 * len(starts)
    assert unpack_starts(packed) == starts


def test_start_times_stored_as_a_list_are_still_read() -> None:
    """The earlier format: a list of timestamps. Anything else counts as no starts."""
    listed = [NOW - timedelta(minutes=5), NOW]
    assert unpack_starts(listed) == listed
    assert unpack_starts(None) == [] and unpack_starts("junk") == []
