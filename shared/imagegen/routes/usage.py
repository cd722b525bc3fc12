"""GET /v1/usage: this month's consumption and the caller's limits (seed 004)."""

from __future__ import annotations

from datetime import UTC, datetime

import flask

from imagegen import clients
from imagegen.limits import Ledger, month_key, next_month_start
from imagegen.models.base import ResponseModel
from imagegen.openapi import Operation
from imagegen.routes.common import principal
from imagegen.settings import get_settings
from imagegen.web import json_response


class UsageLimitsView(ResponseModel):
    requests_per_hour: int
    max_in_flight: int
    monthly_megapixels: float
    remaining_megapixels: float
    enforced: bool


class UsageView(ResponseModel):
    user_id: str
    month: str
    resets_at: datetime
    generations: int
    images: int
    megapixels: float
    estimated_cost_usd: float
    in_flight: int
    limits: UsageLimitsView


OPERATIONS = [
    Operation(
        "GET",
        "/v1/usage",
        "This month's usage, estimated cost and limits",
        "usage",
        responses={200: UsageView},
    ),
]


def get_usage(request: flask.Request) -> flask.Response:
    caller = principal(request)
    settings = get_settings()
    now = datetime.now(UTC)
    ledger = Ledger(clients.firestore_client())
    usage = ledger.usage(caller.user_id, month_key(now))
    megapixels = float(usage.get("megapixels", 0.0))
    body = UsageView(
        user_id=caller.user_id,
        month=month_key(now),
        resets_at=next_month_start(now),
        generations=int(usage.get("generations", 0)),
        images=int(usage.get("images", 0)),
        megapixels=round(megapixels, 3),
        estimated_cost_usd=round(float(usage.get("cost_usd", 0.0)), 4),
        in_flight=ledger.in_flight(caller.user_id),
        limits=UsageLimitsView(
            requests_per_hour=settings.requests_per_hour,
            max_in_flight=settings.max_in_flight,
            monthly_megapixels=settings.monthly_megapixels,
            remaining_megapixels=round(max(0.0, settings.monthly_megapixels - megapixels), 3),
            enforced=not caller.is_admin,
        ),
    )
    return json_response(body.model_dump(mode="json"))


HANDLERS = {"get_usage": get_usage}
