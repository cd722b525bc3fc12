"""A user's generation history: the query string, the opaque cursor and the page.

`GET /v1/images/generations?page=&perPage=&status=&model=&createdAfter=&createdBefore=&cursor=`

Pages come newest first. `page`/`perPage` suit a paged table; the `next` cursor of every
answer continues exactly after its last item without the cost of an offset (Firestore
reads and bills every skipped document), so it is the way through deep history. The
Firestore query itself is built in one place, `GenerationRepository.list_for_user`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import pydantic
from pydantic import BeforeValidator, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError
from werkzeug.datastructures import MultiDict

from imagegen import context
from imagegen.auth import Principal
from imagegen.bodies import FieldProblem, problems_from_pydantic, raise_validation
from imagegen.models.base import Model, ResponseModel
from imagegen.models.records import GenerationStatus
from imagegen.registry import get_model
from imagegen.repository import HistoryFilter, HistoryPage, HistoryPosition
from imagegen.routes.common import RESOURCE_ID
from imagegen.views import GenerationView, generation_view

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
# Offsets are paid for document by document; past this, callers must follow `next`.
MAX_OFFSET = 10_000
CURSOR_VERSION = 1
MAX_CURSOR_CHARS = 512
# "+01:00" arrives as " 01:00" when a client forgets to percent-encode the "+".
_UNENCODED_PLUS_OFFSET = re.compile(r" (\d{2}(?::?\d{2})?)$")


def _iso_datetime(value: Any) -> datetime:
    """An ISO-8601 date-time; one without a zone is UTC."""
    bad = PydanticCustomError(
        "invalid_datetime", "must be an ISO-8601 date-time such as 2026-01-31T12:00:00Z"
    )
    if not isinstance(value, str):
        raise bad
    text = _UNENCODED_PLUS_OFFSET.sub(r"+\1", value.strip())
    # A date alone is not a moment: which zone's midnight would it be?
    if len(text) < 16 or text[10] not in "Tt ":
        raise bad
    try:
        parsed = datetime.fromisoformat(text)
        # In UTC, as stored; 0001-01-01T00:00+01:00 has no UTC moment (OverflowError).
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise bad from None


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime)]


def encode_cursor(position: HistoryPosition) -> str:
    payload = {
        "v": CURSOR_VERSION,
        "t": position.created_at.astimezone(UTC).isoformat(),
        "id": position.generation_id,
    }
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> HistoryPosition:
    """The position a cursor names; ValueError for anything `encode_cursor` did not make."""
    if len(cursor) > MAX_CURSOR_CHARS or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise ValueError("is not a cursor this API issued")
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(payload, dict) or payload.get("v") != CURSOR_VERSION:
            raise ValueError
        created_at, generation_id = payload["t"], payload["id"]
        if not isinstance(created_at, str) or not isinstance(generation_id, str):
            raise ValueError
        if RESOURCE_ID.fullmatch(generation_id) is None:
            raise ValueError
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            raise ValueError
        moment = moment.astimezone(UTC)  # OverflowError if it has no UTC moment
    except (ValueError, OverflowError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValueError("is not a cursor this API issued") from None
    return HistoryPosition(moment, generation_id)


class HistoryQuery(Model):
    """The history query string: camelCase (snake_case also read), unknown names refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
    )

    page: Annotated[int, Field(ge=1)] = 1
    per_page: Annotated[int, Field(ge=1, le=MAX_PER_PAGE)] = DEFAULT_PER_PAGE
    status: GenerationStatus | None = None
    model: Annotated[str, Field(max_length=64)] | None = None
    created_after: IsoDateTime | None = None
    created_before: IsoDateTime | None = None
    cursor: str | None = None

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str | None) -> str | None:
        if model is not None and get_model(model) is None:
            raise PydanticCustomError("unknown_model", "unknown model '{model}'", {"model": model})
        return model

    @field_validator("cursor")
    @classmethod
    def _readable_cursor(cls, cursor: str | None) -> str | None:
        if cursor is not None:
            try:
                decode_cursor(cursor)
            except ValueError:
                raise PydanticCustomError(
                    "invalid_cursor", "is not a cursor this API issued; use `next` as given"
                ) from None
        return cursor

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def position(self) -> HistoryPosition | None:
        return decode_cursor(self.cursor) if self.cursor is not None else None

    def selection(self, user_id: str) -> HistoryFilter:
        return HistoryFilter(
            user_id=user_id,
            status=self.status,
            model=self.model,
            created_after=self.created_after,
            created_before=self.created_before,
        )


def parse_history_query(args: MultiDict[str, str]) -> HistoryQuery:
    """The validated query; one 422 naming every bad parameter otherwise."""
    repeated = [
        FieldProblem(name, "must be given at most once", "repeated_parameter")
        for name in args
        if len(args.getlist(name)) > 1
    ]
    raise_validation(repeated)
    try:
        query = HistoryQuery.model_validate(dict(args.items()))
    except pydantic.ValidationError as exc:
        raise_validation(problems_from_pydantic(exc))
        raise  # unreachable: raise_validation raised
    if query.cursor is None and query.offset > MAX_OFFSET:
        raise_validation(
            [
                FieldProblem(
                    "page",
                    f"page * perPage may not pass {MAX_OFFSET + query.per_page}; "
                    "follow the `next` cursor to go deeper",
                    "too_deep",
                )
            ]
        )
    return query


class GenerationsPage(ResponseModel):
    """Seed 001's `images, total, page, perPage`, plus the `next` cursor."""

    images: list[GenerationView]
    total: int
    # With a cursor, `page` is ignored, so none is claimed.
    page: int | None
    per_page: int
    next: str | None


def list_page(args: MultiDict[str, str], caller: Principal) -> GenerationsPage:
    """One page of the caller's history, as the API shows it."""
    query = parse_history_query(args)
    page = context.generations().list_for_user(
        query.selection(caller.user_id), query.per_page, offset=query.offset, after=query.position
    )
    store = context.image_store()
    return page_view(query, page, [generation_view(g, store, caller) for g in page.generations])


def page_view(
    query: HistoryQuery, page: HistoryPage, views: list[GenerationView]
) -> GenerationsPage:
    return GenerationsPage(
        images=views,
        total=page.total,
        page=None if query.cursor is not None else query.page,
        per_page=query.per_page,
        next=encode_cursor(page.more_after) if page.more_after else None,
    )
