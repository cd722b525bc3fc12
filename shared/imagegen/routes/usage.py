"""GET /v1/usage: this month's consumption and the caller's limits (seed 004)."""

from __future__ import annotations

from datetime import UTC, datetime

import flask
from werkzeug.routing import Rule

from imagegen import clients
from imagegen.limits import Ledger, month_key, next_month_start
from imagegen.routes.common import principal
from imagegen.settings import get_settings
from imagegen.web import json_response

RULES = [Rule("/v1/usage", endpoint="get_usage", methods=["GET"])]


def get_usage(request: flask.Request) -> flask.Response:
    caller = principal(request)
    settings = get_settings()
    now = datetime.now(UTC)
    ledger = Ledger(clients.firestore_client())
    usage = ledger.usage(caller.user_id, month_key(now))
    megapixels = float(usage.get("megapixels", 0.0))
    return json_response(
        {
            "userId": caller.user_id,
            "month": month_key(now),
            "resetsAt": next_month_start(now).isoformat().replace("+00:00", "Z"),
            "generations": int(usage.get("generations", 0)),
            "images": int(usage.get("images", 0)),
            "megapixels": round(megapixels, 3),
            "estimatedCostUsd": round(float(usage.get("cost_usd", 0.0)), 4),
            "inFlight": ledger.in_flight(caller.user_id),
            "limits": {
                "requestsPerHour": settings.requests_per_hour,
                "maxInFlight": settings.max_in_flight,
                "monthlyMegapixels": settings.monthly_megapixels,
                "remainingMegapixels": round(max(0.0, settings.monthly_megapixels - megapixels), 3),
                "enforced": not caller.is_admin,
            },
        }
    )


HANDLERS = {"get_usage": get_usage}
