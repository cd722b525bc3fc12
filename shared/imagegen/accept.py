"""Accepting generations: validate, admit, persist as queued, then publish their ids.

Everything that must be all-or-nothing happens in one Firestore transaction: the
idempotency check, the user's limits (requests per hour, in flight, monthly quota), the
generation records (one, or every item of a batch) and the idempotency record. Only then
are the ids published. The record is written before its message (decision 0001), so the
dispatcher can never receive an id it cannot load; a generation whose message could not be
published is failed at once (`publish_failed`), so nothing stays queued with no message.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from imagegen import clients, context, transactions
from imagegen.auth import Principal
from imagegen.errors import RetryableError, ValidationError
from imagegen.idempotency import IdempotencyClaim, IdempotencyStore
from imagegen.limits import Charge, Ledger, Limits
from imagegen.loras import resolve_for_generation
from imagegen.models.records import ErrorInfo, Generation
from imagegen.planning import plan_parts
from imagegen.settings import Settings
from imagegen.validation import ValidatedGeneration

if TYPE_CHECKING:
    from google.cloud import firestore

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_SECONDS = 10.0

# Extra writes a caller adds to the admitting transaction (e.g. the batch document).
ExtraWrite = Callable[["firestore.WriteBatch", list[Generation]], None]


@dataclass(frozen=True)
class Accepted:
    generations: list[Generation]
    # True when an Idempotency-Key matched: these are the first request's generations.
    replayed: bool = False


def build_generation(
    validated: ValidatedGeneration,
    principal: Principal,
    now: datetime,
    batch_id: str | None = None,
) -> Generation:
    request, spec = validated.request, validated.spec
    resolved = resolve_for_generation(validated.loras, spec.id, request.prompt, context.loras())
    return Generation(
        id=str(uuid.uuid4()),
        user_id=principal.user_id,
        prompt=request.prompt,
        effective_prompt=resolved.effective_prompt,
        model=spec.id,
        fal_app=spec.fal_app,
        parameters=validated.parameters,
        num_images=request.num_images,
        width=validated.width,
        height=validated.height,
        loras=resolved.uses,
        estimated_cost_usd=spec.estimate_cost_usd(
            validated.width or 1000, validated.height or 1000, request.num_images
        ),
        batch_id=batch_id,
        parts=plan_parts(request.num_images, spec, request.seed),
        created_at=now,
        updated_at=now,
    )


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.requests_per_hour, settings.max_in_flight, settings.monthly_megapixels)


def _admit_and_create(
    generations: list[Generation],
    principal: Principal,
    claim: IdempotencyClaim | None,
    settings: Settings,
    now: datetime,
    extra_write: ExtraWrite | None,
) -> Accepted:
    db = clients.firestore_client()
    repo = context.generations()
    ledger = Ledger(db)
    idempotency = IdempotencyStore(db)

    refs = ledger.refs(principal.user_id, now)
    key_ref = idempotency.ref(claim) if claim is not None else None

    def admit(
        snapshots: dict[str, firestore.DocumentSnapshot], batch: firestore.WriteBatch
    ) -> Accepted:
        if claim is not None and key_ref is not None:
            previous = idempotency.previous(snapshots[key_ref.path], claim, now)
            if previous is not None:
                return Accepted(repo.get_many(previous), replayed=True)
        state = ledger.state(snapshots, principal.user_id, now)
        ledger.admit(
            batch,
            state,
            [Charge.of(g) for g in generations],
            limits_of(settings),
            now,
            # Operators are counted but not limited: they run the service.
            enforce=not principal.is_admin,
        )
        for generation in generations:
            repo.create_in(batch, generation)
        if extra_write is not None:
            extra_write(batch, generations)
        if claim is not None and key_ref is not None:
            ids = [g.id for g in generations]
            idempotency.record(batch, snapshots[key_ref.path], claim, ids, now)
        return Accepted(generations)

    # Different users never contend; one user's concurrent requests do, by design: every
    # admission writes that user's limits document (conditionally: a loser reads again).
    # Serialized per user within the instance so that they rarely have to.
    read = refs if key_ref is None else [*refs, key_ref]
    with transactions.serialized(f"admit:{principal.user_id}"):
        return transactions.read_many_then_write(db, read, admit, attempts=20)


def _publish_ids(settings: Settings, generation_ids: list[str]) -> None:
    """One Publish call for all ids: all are published or the call raises. The client retries
    transient errors itself; a message published twice is harmless (the dispatcher claims each
    part once)."""
    from google.pubsub_v1 import PubsubMessage

    topic = f"projects/{settings.gcp_project}/topics/{settings.generations_topic}"
    messages = [
        PubsubMessage(data=json.dumps({"generationId": i}).encode(), attributes={"generationId": i})
        for i in generation_ids
    ]
    clients.publish_api().publish(topic=topic, messages=messages, timeout=PUBLISH_TIMEOUT_SECONDS)


def publish(settings: Settings, generations: list[Generation]) -> list[Generation]:
    """Publishes every id; returns the generations whose message could not be published,
    after failing them. Messages go out together: one round trip for a whole batch."""
    try:
        _publish_ids(settings, [g.id for g in generations])
    except Exception:
        log.exception("publish failed", extra={"generationIds": [g.id for g in generations]})
    else:
        return []
    for generation in generations:
        context.generations().fail(
            generation.id,
            ErrorInfo(code="publish_failed", message="The generation could not be queued"),
            datetime.now(UTC),
        )
    return generations


def accept(
    validated: list[ValidatedGeneration],
    principal: Principal,
    settings: Settings,
    *,
    claim: IdempotencyClaim | None = None,
    batch_id: str | None = None,
    extra_write: ExtraWrite | None = None,
) -> Accepted:
    """Admits and queues one generation per validated request, all or none."""
    now = datetime.now(UTC)
    generations, details = [], []
    for index, item in enumerate(validated):
        try:
            generations.append(build_generation(item, principal, now, batch_id))
        except ValidationError as exc:
            if batch_id is None:
                raise
            details += [{**d, "field": f"requests.{index}.{d['field']}"} for d in exc.details]
    if details:
        raise ValidationError("Invalid batch: unusable LoRAs", details=details)
    accepted = _admit_and_create(generations, principal, claim, settings, now, extra_write)
    if accepted.replayed:
        return accepted
    for generation in generations:
        log.info(
            "generation queued", extra={"generationId": generation.id, "model": generation.model}
        )
    failed = publish(settings, generations)
    if failed and len(generations) == 1:
        if claim is not None:
            IdempotencyStore(clients.firestore_client()).forget(claim)
        raise RetryableError(
            "The generation could not be queued; retry the request", code="queue_unavailable"
        )
    return accepted


def publish_generation(settings: Settings, generation_id: str) -> None:
    """Publishes one existing generation's id (used by tests and re-publishing sweeps)."""
    _publish_ids(settings, [generation_id])
