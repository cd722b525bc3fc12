"""Unit tests for the history query string and its opaque cursor."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from werkzeug.datastructures import MultiDict

from imagegen.errors import ValidationError
from imagegen.history import (
    MAX_OFFSET,
    decode_cursor,
    encode_cursor,
    page_view,
    parse_history_query,
)
from imagegen.models.records import GenerationStatus
from imagegen.repository import HistoryPage, HistoryPosition


def _parse(**params: str):
    return parse_history_query(MultiDict(params))


def _problems(params) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        parse_history_query(MultiDict(params))
    assert caught.value.status == 422
    return caught.value.details


def test_defaults() -> None:
    query = _parse()
    assert (query.page, query.per_page, query.offset) == (1, 20, 0)
    assert query.status is query.model is query.cursor is query.position is None
    assert query.created_after is query.created_before is None


def test_every_parameter_in_camel_case() -> None:
    query = _parse(
        page="3",
        perPage="7",
        status="completed",
        model="flux-schnell",
        createdAfter="2026-01-02T03:04:05Z",
        createdBefore="2026-02-01T00:00:00+01:00",
    )
    assert (query.page, query.per_page, query.offset) == (3, 7, 14)
    assert query.status is GenerationStatus.COMPLETED and query.model == "flux-schnell"
    assert query.created_after == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert query.created_before == datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    selection = query.selection("user-1")
    assert selection.user_id == "user-1" and selection.status is GenerationStatus.COMPLETED


def test_snake_case_is_read_too() -> None:
    assert _parse(per_page="5").per_page == 5


@pytest.mark.parametrize("status", [s.value for s in GenerationStatus])
def test_every_status_is_a_filter(status: str) -> None:
    assert _parse(status=status).status.value == status


@pytest.mark.parametrize("per_page", ["1", "100"])
def test_per_page_bounds_accepted(per_page: str) -> None:
    assert _parse(perPage=per_page).per_page == int(per_page)


@pytest.mark.parametrize(
    ("params", "field", "error_type"),
    [
        ({"perPage": "101"}, "perPage", "less_than_equal"),
        ({"perPage": "0"}, "perPage", "greater_than_equal"),
        ({"perPage": "ten"}, "perPage", "int_parsing"),
        ({"perPage": "2.5"}, "perPage", "int_parsing"),
        ({"page": "0"}, "page", "greater_than_equal"),
        ({"page": "-1"}, "page", "greater_than_equal"),
        ({"page": ""}, "page", "int_parsing"),
        ({"status": "done"}, "status", "enum"),
        ({"model": "flux-pro-ultra-9000"}, "model", "unknown_model"),
        ({"model": "x" * 65}, "model", "string_too_long"),
        ({"createdAfter": "yesterday"}, "createdAfter", "invalid_datetime"),
        ({"createdAfter": "2026-13-01T00:00:00Z"}, "createdAfter", "invalid_datetime"),
        ({"createdBefore": "2026-01-01"}, "createdBefore", "invalid_datetime"),
        ({"createdBefore": "1767225600"}, "createdBefore", "invalid_datetime"),
        # Moments before year 1 or after 9999 in UTC: they were 500s.
        ({"createdAfter": "0001-01-01T00:00:00+01:00"}, "createdAfter", "invalid_datetime"),
        ({"createdBefore": "9999-12-31T23:59:59-01:00"}, "createdBefore", "invalid_datetime"),
        ({"cursor": "abc"}, "cursor", "invalid_cursor"),
        ({"sort": "asc"}, "sort", "extra_forbidden"),
        ({"PerPage": "5"}, "PerPage", "extra_forbidden"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_parameters_are_422_naming_them(params, field, error_type) -> None:
    problems = _problems(params)
    assert [(p["field"], p["type"]) for p in problems] == [(field, error_type)]
    assert all(p["message"] for p in problems)


def test_every_bad_parameter_is_named_at_once() -> None:
    problems = _problems({"perPage": "500", "page": "0", "status": "x", "foo": "1"})
    assert {p["field"] for p in problems} == {"perPage", "page", "status", "foo"}


def test_a_repeated_parameter_is_refused() -> None:
    problems = _problems(MultiDict([("page", "1"), ("page", "2")]))
    assert problems == [
        {"field": "page", "message": "must be given at most once", "type": "repeated_parameter"}
    ]


def test_deep_offsets_must_use_the_cursor() -> None:
    deepest = MAX_OFFSET // 100 + 1
    assert _parse(page=str(deepest), perPage="100").offset == MAX_OFFSET
    problems = _problems({"page": str(deepest + 1), "perPage": "100"})
    assert [(p["field"], p["type"]) for p in problems] == [("page", "too_deep")]


def test_a_date_time_without_a_zone_is_utc() -> None:
    assert _parse(createdAfter="2026-01-02T03:04:05").created_after == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )


def test_an_unencoded_plus_in_the_offset_is_understood() -> None:
    # "+01:00" unencoded in a query string arrives as " 01:00".
    parsed = _parse(createdAfter="2026-01-02T03:04:05 01:00").created_after
    assert parsed == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))


def test_cursor_round_trips_to_the_microsecond() -> None:
    position = HistoryPosition(datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), "abc-123")
    cursor = encode_cursor(position)
    assert cursor.isascii() and "=" not in cursor and "+" not in cursor and "/" not in cursor
    assert decode_cursor(cursor) == position
    query = _parse(cursor=cursor)
    assert query.position == position


def _forge(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "a",
        "x" * 600,
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _forge([1, 2]),
        _forge({"v": 2, "t": "2026-01-02T03:04:05+00:00", "id": "a"}),
        _forge({"v": 1, "t": "2026-01-02T03:04:05+00:00"}),
        _forge({"v": 1, "t": "not a time", "id": "a"}),
        _forge({"v": 1, "t": "2026-01-02T03:04:05", "id": "a"}),
        _forge({"v": 1, "t": 5, "id": "a"}),
        _forge({"v": 1, "t": "2026-01-02T03:04:05+00:00", "id": "../../etc"}),
        _forge({"v": 1, "t": "2026-01-02T03:04:05+00:00", "id": None}),
        # No UTC moment (before year 1, after 9999): they were 500s.
        _forge({"v": 1, "t": "0001-01-01T00:00:00+01:00", "id": "a"}),
        _forge({"v": 1, "t": "9999-12-31T23:59:59-01:00", "id": "a"}),
    ],
)
def test_a_malformed_cursor_is_422_never_500(cursor: str) -> None:
    with pytest.raises(ValueError):
        decode_cursor(cursor)
    problems = _problems({"cursor": cursor})
    assert [(p["field"], p["type"]) for p in problems] == [("cursor", "invalid_cursor")]


def test_page_shape() -> None:
    position = HistoryPosition(datetime(2026, 1, 2, tzinfo=UTC), "last-id")
    body = page_view(_parse(page="2", perPage="3"), HistoryPage([], 9, position), [])
    assert body.model_dump(mode="json") == {
        "images": [],
        "total": 9,
        "page": 2,
        "perPage": 3,
        "next": encode_cursor(position),
    }
    last = page_view(_parse(), HistoryPage([], 0, None), [])
    assert last.next is None and last.page == 1
    # With a cursor, `page` is ignored, so none is claimed.
    with_cursor = page_view(_parse(cursor=encode_cursor(position)), HistoryPage([], 0, None), [])
    assert with_cursor.page is None
