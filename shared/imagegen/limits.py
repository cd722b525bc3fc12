"""Per-user admission: requests per hour, generations in flight, megapixels per month.

Admission happens in the conditional commit that creates the generations, and every
admission of a user writes that user's `userLimits/{userId}` document, so one user's
concurrent admissions are serialized and can never both squeeze past a limit. Ending a
generation reads nothing from here: a hot per-user document that every completion had to
read and write would make a user's parallel generations contend with each other (and
production Firestore sustains about one write per second per document).

- requests per hour: `userLimits/{userId}.recent`, the start times within the last hour (a
  sliding window, so Retry-After says exactly when a slot frees), packed into one bytes
  value (`pack_starts`): as a list, each of up to `REQUESTS_PER_HOUR` timestamps was
  encoded and decoded on every admission (~0.4 ms of CPU per request at 50);
- in flight: `userLimits/{userId}.in_flight`, raised by admission and lowered by a blind
  atomic increment in the commit that ends a generation (no read: a user's parallel
  completions never contend, and no query runs inside an admission — a query there would
  lock an index range that other users' admissions write into);
- per month: `usage/{userId}_{YYYY-MM}` counts generations, images, megapixels and the
  estimated cost. A failed or canceled generation is refunded with blind atomic increments
  in the commit that ends it, likewise: users pay for what they got.

Seed 001's defaults: 50 requests an hour, 2 generations in flight.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from imagegen.errors import RateLimitedError
from imagegen.models.records import Generation, GenerationStatus
from imagegen.transactions import guarded_write

if TYPE_CHECKING:
    from google.cloud import firestore

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
    megapixels: float  # per image
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
    """What an admitting transaction read."""

    user_id: str
    month: str
    recent: list[datetime]
    in_flight: int
    usage: dict[str, Any]
    # The snapshots read, so the admission's writes can be conditional on them.
    limits_snapshot: Any = None
    usage_snapshot: Any = None


class Ledger:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def _limits_ref(self, user_id: str) -> firestore.DocumentReference:
        return self._db.collection(USER_LIMITS).document(user_id)

    def _usage_ref(self, user_id: str, month: str) -> firestore.DocumentReference:
        return self._db.collection(USAGE).document(f"{user_id}_{month}")

    def refs(self, user_id: str, now: datetime) -> list[firestore.DocumentReference]:
        """The documents an admission reads (limits, this month's usage)."""
        return [self._limits_ref(user_id), self._usage_ref(user_id, month_key(now))]

    def state(
        self, snapshots: dict[str, firestore.DocumentSnapshot], user_id: str, now: datetime
    ) -> LedgerState:
        limits_ref, usage_ref = self.refs(user_id, now)
        limits, usage = snapshots[limits_ref.path], snapshots[usage_ref.path]
        state = (limits.to_dict() if limits.exists else None) or {}
        return LedgerState(
            user_id=user_id,
            month=month_key(now),
            recent=sorted(t for t in unpack_starts(state.get("recent")) if t > now - WINDOW),
            in_flight=max(0, int(state.get("in_flight", 0))),
            usage=(usage.to_dict() if usage.exists else None) or {},
            limits_snapshot=limits,
            usage_snapshot=usage,
        )

    def admit(
        self,
        batch: firestore.WriteBatch,
        state: LedgerState,
        charges: list[Charge],
        limits: Limits,
        now: datetime,
        *,
        enforce: bool = True,
    ) -> None:
        """Counts new generations in, or raises RateLimitedError and writes nothing. The
        writes commit only if neither document changed since `state` was read (a concurrent
        admission, or a generation ending and freeing its slot)."""
        if enforce:
            _check(state, charges, limits, now)
        guarded_write(
            batch,
            state.limits_snapshot,
            {
                "recent": pack_starts(kept_starts(state.recent, now, len(charges), limits)),
                "in_flight": state.in_flight + len(charges),
                "updated_at": now,
            },
        )
        usage = state.usage
        guarded_write(
            batch,
            state.usage_snapshot,
            {
                "user_id": state.user_id,
                "month": state.month,
                "generations": int(usage.get("generations", 0)) + len(charges),
                "images": int(usage.get("images", 0)) + sum(c.images for c in charges),
                "megapixels": round(
                    float(usage.get("megapixels", 0.0))
                    + sum(c.megapixels * c.images for c in charges),
                    6,
                ),
                "cost_usd": round(
                    float(usage.get("cost_usd", 0.0)) + sum(c.cost_usd for c in charges), 6
                ),
            },
        )

    def on_end(self, batch: firestore.WriteBatch, generation: Generation) -> None:
        """Called in the commit that ends `generation`: its in-flight slot frees, and
        a failure is refunded. Blind increments: nothing is read, so a user's generations
        never contend here."""
        from google.cloud.firestore import Increment

        batch.set(
            self._limits_ref(generation.user_id),
            {"in_flight": Increment(-1)},
            merge=True,
        )
        if generation.status not in REFUNDED:
            return
        charge = Charge.of(generation)
        batch.set(
            self._usage_ref(generation.user_id, month_key(generation.created_at)),
            {
                "generations": Increment(-1),
                "images": Increment(-charge.images),
                "megapixels": Increment(-round(charge.megapixels * charge.images, 6)),
                "cost_usd": Increment(-charge.cost_usd),
            },
            merge=True,
        )

    def usage(self, user_id: str, month: str) -> dict[str, Any]:
        snapshot = self._usage_ref(user_id, month).get()
        return (snapshot.to_dict() if snapshot.exists else None) or {}

    def in_flight(self, user_id: str) -> int:
        snapshot = self._limits_ref(user_id).get()
        data = (snapshot.to_dict() if snapshot.exists else None) or {}
        return max(0, int(data.get("in_flight", 0)))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def pack_starts(starts: list[datetime]) -> bytes:
    """Start times as big-endian int64 microseconds since the epoch: exact, and one value
    to encode however many there are."""
    micros = [(t - _EPOCH) // timedelta(microseconds=1) for t in starts]
    return struct.pack(f">{len(micros)}q", *micros)


def unpack_starts(stored: object) -> list[datetime]:
    """`pack_starts` undone; a list of timestamps (the earlier format) is read as is."""
    if isinstance(stored, bytes):
        count = len(stored) // 8
        micros = struct.unpack(f">{count}q", stored[: count * 8])
        return [_EPOCH + timedelta(microseconds=m) for m in micros]
    if isinstance(stored, list):
        return [t for t in stored if isinstance(t, datetime)]
    return []


def kept_starts(
    recent: list[datetime], now: datetime, count: int, limits: Limits
) -> list[datetime]:
    """The start times an admission writes back: only the newest `requests_per_hour` can
    ever decide a later admission (or its Retry-After). Keeping more would grow an operator's
    (unlimited) list without bound, and every admission reads and rewrites the whole list."""
    keep = limits.requests_per_hour
    return (recent + [now] * count)[-keep:] if keep > 0 else []


def _check(state: LedgerState, charges: list[Charge], limits: Limits, now: datetime) -> None:
    count = len(charges)
    recent = state.recent
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
    if state.in_flight + count > limits.max_in_flight:
        raise RateLimitedError(
            f"At most {limits.max_in_flight} generations may run at once",
            code="too_many_in_flight",
            retry_after=IN_FLIGHT_RETRY_SECONDS,
            details={"limit": limits.max_in_flight, "inFlight": state.in_flight},
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
