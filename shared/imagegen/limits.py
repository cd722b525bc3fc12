"""Per-user admission: requests per hour, generations in flight, megapixels per month.

All three live in Firestore and change only inside the transaction that creates the
generations (admission) or ends one (release), so concurrent requests can never both
squeeze past a limit. Seed 001's defaults: 50 requests an hour, 2 generations in flight.

- `userLimits/{userId}`: `recent` (start times within the last hour: a sliding window,
  so Retry-After says exactly when a slot frees) and `in_flight`.
- `usage/{userId}_{YYYY-MM}`: this month's generations, images, megapixels and estimated
  cost. Failed and canceled generations are refunded: users pay for what they got.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from imagegen.errors import RateLimitedError
from imagegen.models.records import Generation, GenerationStatus

USER_LIMITS = "userLimits"
USAGE = "usage"
WINDOW = timedelta(hours=1)
# When no slot frees at a known time (in flight), how long a client should wait.
IN_FLIGHT_RETRY_SECONDS = 5
REFUNDED = frozenset({GenerationStatus.FAILED, GenerationStatus.CANCELED})


@dataclass(frozen=True)
class Limits:
    requests_per_hour: int
    max_in_flight: int
    monthly_megapixels: float


@dataclass(frozen=True)
class Charge:
    """What one generation counts for against the monthly quota."""

    images: int
    megapixels: float
    cost_usd: float

    @classmethod
    def of(cls, generation: Generation) -> Charge:
        return cls(
            generation.num_images, generation.megapixels_per_image, generation.estimated_cost_usd
        )


def month_key(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def next_month_start(moment: datetime) -> datetime:
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass
class LedgerState:
    """The two documents a transaction read, kept so it can write them back."""

    user_id: str
    month: str
    limits: dict[str, Any]
    usage: dict[str, Any]


class Ledger:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def _limits_ref(self, user_id: str) -> firestore.DocumentReference:
        return self._db.collection(USER_LIMITS).document(user_id)

    def _usage_ref(self, user_id: str, month: str) -> firestore.DocumentReference:
        return self._db.collection(USAGE).document(f"{user_id}_{month}")

    def read(self, transaction: firestore.Transaction, user_id: str, month: str) -> LedgerState:
        refs = [self._limits_ref(user_id), self._usage_ref(user_id, month)]
        snapshots = {s.reference.path: s for s in transaction.get_all(refs)}
        limits, usage = (snapshots.get(r.path) for r in refs)
        return LedgerState(
            user_id,
            month,
            (limits.to_dict() if limits and limits.exists else None) or {},
            (usage.to_dict() if usage and usage.exists else None) or {},
        )

    def _write(self, transaction: firestore.Transaction, state: LedgerState) -> None:
        transaction.set(self._limits_ref(state.user_id), state.limits)
        transaction.set(self._usage_ref(state.user_id, state.month), state.usage)

    def admit(
        self,
        transaction: firestore.Transaction,
        state: LedgerState,
        charges: list[Charge],
        limits: Limits,
        now: datetime,
        *,
        enforce: bool = True,
    ) -> None:
        """Counts new generations in, or raises RateLimitedError and writes nothing."""
        recent = sorted(t for t in state.limits.get("recent", []) if t > now - WINDOW)
        count = len(charges)
        if enforce:
            self._check(state, recent, charges, limits, now)
        in_flight = int(state.limits.get("in_flight", 0))
        state.limits = {"recent": recent + [now] * count, "in_flight": in_flight + count}
        state.usage = _add_usage(state, charges, sign=1)
        self._write(transaction, state)

    def _check(
        self,
        state: LedgerState,
        recent: list[datetime],
        charges: list[Charge],
        limits: Limits,
        now: datetime,
    ) -> None:
        count = len(charges)
        if len(recent) + count > limits.requests_per_hour:
            # The slot that lets `count` more in frees when the right old entry ages out.
            index = len(recent) + count - limits.requests_per_hour - 1
            frees_at = recent[index] + WINDOW if index < len(recent) else now + WINDOW
            raise RateLimitedError(
                f"At most {limits.requests_per_hour} generations per hour",
                code="rate_limited",
                retry_after=math.ceil((frees_at - now).total_seconds()),
                details={"limit": limits.requests_per_hour, "window": "1h"},
            )
        in_flight = int(state.limits.get("in_flight", 0))
        if in_flight + count > limits.max_in_flight:
            raise RateLimitedError(
                f"At most {limits.max_in_flight} generations may run at once",
                code="too_many_in_flight",
                retry_after=IN_FLIGHT_RETRY_SECONDS,
                details={"limit": limits.max_in_flight, "inFlight": in_flight},
            )
        used = float(state.usage.get("megapixels", 0.0))
        wanted = sum(c.megapixels * c.images for c in charges)
        if used + wanted > limits.monthly_megapixels:
            raise RateLimitedError(
                f"Monthly quota of {limits.monthly_megapixels:g} megapixels reached",
                code="quota_exceeded",
                retry_after=math.ceil((next_month_start(now) - now).total_seconds()),
                details={
                    "limitMegapixels": limits.monthly_megapixels,
                    "usedMegapixels": round(used, 3),
                    "requestedMegapixels": round(wanted, 3),
                },
            )

    def release(
        self, transaction: firestore.Transaction, state: LedgerState, generation: Generation
    ) -> None:
        """A generation ended: its in-flight slot frees, and a failure is refunded."""
        state.limits = {
            **state.limits,
            "in_flight": max(0, int(state.limits.get("in_flight", 0)) - 1),
        }
        if generation.status in REFUNDED:
            state.usage = _add_usage(state, [Charge.of(generation)], sign=-1)
        self._write(transaction, state)

    def usage(self, user_id: str, month: str) -> dict[str, Any]:
        snapshot = self._usage_ref(user_id, month).get()
        return (snapshot.to_dict() if snapshot.exists else None) or {}

    def in_flight(self, user_id: str) -> int:
        snapshot = self._limits_ref(user_id).get()
        return int(((snapshot.to_dict() if snapshot.exists else None) or {}).get("in_flight", 0))


def _add_usage(state: LedgerState, charges: list[Charge], sign: int) -> dict[str, Any]:
    usage = state.usage
    return {
        "user_id": state.user_id,
        "month": state.month,
        "generations": max(0, int(usage.get("generations", 0)) + sign * len(charges)),
        "images": max(0, int(usage.get("images", 0)) + sign * sum(c.images for c in charges)),
        "megapixels": max(
            0.0,
            round(
                float(usage.get("megapixels", 0.0))
                + sign * sum(c.megapixels * c.images for c in charges),
                6,
            ),
        ),
        "cost_usd": max(
            0.0,
            round(float(usage.get("cost_usd", 0.0)) + sign * sum(c.cost_usd for c in charges), 6),
        ),
    }
