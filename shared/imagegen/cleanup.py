"""The cleanup sweep: retention, stuck generations and orphaned objects (decision 0006).

Cloud Scheduler calls the `cleanup` function; each call runs one sweep, in three phases:

1. **retention**: generations created more than `RETENTION_DAYS` ago are deleted with every
   object under their image and thumbnail prefixes. One still running that old is failed
   first (`expired`), through the state machine, so no delivery can add objects after the
   listing and the user's usage is refunded as for any failure. No tombstone is written:
   tombstones exist so that a user's repeated DELETE stays a 204; nobody asked for this one.
2. **stuck**: generations not ended and unchanged for `STUCK_AFTER_MINUTES`. A `queued` one
   (its Pub/Sub message may be lost, decision 0001) is re-published once, noted in
   `republished_at`; still queued a whole window later, it fails (`stuck`). A `submitted`
   one fails (`fal_timeout`): the watchdog normally settles those, this is the backstop.
3. **orphans**: objects under `generations/` and `thumbnails/` older than
   `ORPHAN_MIN_AGE_MINUTES` that no record references: their generation record is gone, or
   it has ended and its images do not name them. Anything outside the
   `{prefix}/{userId}/{generationId}/{file}` layout is left alone.

Every phase works in bounded batches (at most `batch_size` records or objects, Firestore
writes committed in batches of at most 500) and checks the time budget before each batch,
so a sweep stops in time and says what it left. Retention and stuck are queries over what
still needs doing, so the next sweep resumes by itself; the bucket listing does not shrink
as it is worked through, so the orphan phase keeps its place in `cleanupState/orphans`.

Two sweeps at once do no harm: every action is idempotent (deleting what is gone, moves the
state machine refuses on a record that moved on or ended, a re-publish claimed in a
transaction), and a lease (`cleanupState/lease`) makes the second one skip the duplicate
work. Every Firestore query of the sweep is in `FirestoreCleanupStore`, each naming its index.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import pydantic

from imagegen import transactions
from imagegen.errors import RetryableError
from imagegen.models.records import ErrorInfo, Generation, GenerationStatus
from imagegen.repository import FAL_REQUESTS, GENERATIONS, count_of
from imagegen.settings import Settings
from imagegen.storage import StoredObject, generation_prefixes

if TYPE_CHECKING:
    from google.cloud import firestore

log = logging.getLogger(__name__)

# Firestore's limit of writes in one batched write (or transaction).
MAX_BATCH_WRITES = 500
# Records per query page and objects per listing page; a request may ask for fewer.
DEFAULT_BATCH_SIZE = 200
MAX_BATCH_SIZE = 500
ORPHAN_PREFIXES = ("generations/", "thumbnails/")
CLEANUP_STATE = "cleanupState"
LEASE_DOC = "lease"
ORPHANS_DOC = "orphans"
# A crashed sweep's lease lapses this long after its budget would have run out.
LEASE_MARGIN = timedelta(seconds=60)
# Document ids Firestore refuses (or reserves), so no record can have them.
_MAX_DOCUMENT_ID_BYTES = 1500
UNFINISHED = (GenerationStatus.QUEUED, GenerationStatus.SUBMITTED)


# -- configuration and the time budget -----------------------------------------------------


@dataclass(frozen=True)
class SweepConfig:
    retention: timedelta
    stuck_after: timedelta
    orphan_min_age: timedelta
    time_budget_seconds: float
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        time_budget_seconds: float | None = None,
        batch_size: int | None = None,
    ) -> SweepConfig:
        """The configured sweep; a caller may ask for a shorter budget or smaller batches
        (never more than configured: a request can only make a sweep do less)."""
        budget = settings.cleanup_time_budget_seconds
        if time_budget_seconds is not None:
            budget = min(budget, time_budget_seconds)
        size = DEFAULT_BATCH_SIZE if batch_size is None else min(batch_size, MAX_BATCH_SIZE)
        return cls(
            retention=timedelta(days=settings.retention_days),
            stuck_after=timedelta(minutes=settings.stuck_after_minutes),
            orphan_min_age=timedelta(minutes=settings.orphan_min_age_minutes),
            time_budget_seconds=budget,
            batch_size=max(1, size),
        )


class Budget:
    """The sweep's time limit, checked before every batch. The first batch of a sweep is
    always allowed, so even a sweep with no time left makes progress."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._deadline = self._started + seconds
        self._granted = 0

    def next_batch(self) -> bool:
        if self._granted and self._clock() >= self._deadline:
            return False
        self._granted += 1
        return True

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started


# -- what the sweep works on --------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A generation a cleanup query found: its id, the value the query orders by (the
    resume position within a sweep) and the record, None if the document does not parse."""

    generation_id: str
    key: datetime
    generation: Generation | None


Position = tuple[datetime, str]  # (ordering value, document id): start after this row


@dataclass(frozen=True)
class OrphanCursor:
    """Where the orphan phase stopped: in `prefix`, after the object named `after`."""

    prefix: str
    after: str | None = None


@dataclass(frozen=True)
class ObjectOwner:
    """Whose object this is, by its path: `{prefix}/{user_id}/{generation_id}/{file}`."""

    prefix: str
    user_id: str
    generation_id: str


class CleanupRecords(Protocol):
    def expired(self, before: datetime, limit: int, after: Position | None) -> list[Row]: ...
    def count_expired(self, before: datetime) -> int: ...
    def stuck(self, before: datetime, limit: int, after: Position | None) -> list[Row]: ...
    def count_stuck(self, before: datetime) -> int: ...
    def existing(self, generation_ids: Sequence[str]) -> dict[str, Generation | None]: ...
    def purge(self, generations: Sequence[Generation]) -> int: ...
    def acquire_lease(self, holder: str, now: datetime, until: datetime) -> bool: ...
    def release_lease(self, holder: str) -> None: ...
    def orphan_cursor(self) -> OrphanCursor | None: ...
    def save_orphan_cursor(self, cursor: OrphanCursor | None, now: datetime) -> None: ...


class StateMoves(Protocol):
    """The state changes the sweep makes, each a transaction through the state machine
    (`imagegen.repository.GenerationRepository`)."""

    def fail(self, generation_id: str, error: ErrorInfo, now: datetime) -> Generation | None: ...
    def note_republished(
        self, generation_id: str, stale_before: datetime, now: datetime
    ) -> Generation | None: ...
    def fail_stale(
        self, generation_id: str, error: ErrorInfo, stale_before: datetime, now: datetime
    ) -> Generation | None: ...


class Objects(Protocol):
    """The images bucket (`imagegen.storage.ImageStore`)."""

    def list_paths(self, prefix: str) -> list[str]: ...
    def list_page(
        self,
        prefix: str,
        page_size: int,
        page_token: str | None = None,
        start_offset: str | None = None,
    ) -> tuple[list[StoredObject], str | None]: ...
    def delete(self, paths: list[str]) -> None: ...


# -- pure rules ---------------------------------------------------------------------------


def is_document_id(value: str) -> bool:
    """Whether Firestore could hold a document with this id (so a record could exist)."""
    if not value or value in (".", "..") or "/" in value:
        return False
    if value.startswith("__") and value.endswith("__"):
        return False
    return len(value.encode()) <= _MAX_DOCUMENT_ID_BYTES


def parse_object_path(name: str) -> ObjectOwner | None:
    """The generation an object belongs to, or None for anything outside the layout
    `{generations|thumbnails}/{userId}/{generationId}/{file}` (left alone by the sweep)."""
    segments = name.split("/")
    if len(segments) != 4:
        return None
    prefix, user_id, generation_id, file_name = segments
    if f"{prefix}/" not in ORPHAN_PREFIXES or not file_name:
        return None
    if not is_document_id(user_id) or not is_document_id(generation_id):
        return None
    return ObjectOwner(f"{prefix}/", user_id, generation_id)


def referenced_paths(generation: Generation) -> set[str]:
    paths = {image.path for image in generation.images}
    return paths | {image.thumbnail_path for image in generation.images if image.thumbnail_path}


def is_orphan(name: str, owner: ObjectOwner, records: dict[str, Generation | None]) -> bool:
    """No record references the object: its generation is gone, or has ended without naming
    it. A running generation's objects are kept (its images are still being recorded), and
    so is anything of a record that does not parse."""
    if owner.generation_id not in records:
        return True
    generation = records[owner.generation_id]
    if generation is None or not generation.is_terminal:
        return False
    return name not in referenced_paths(generation)


def pack_writes(groups: Iterable[Sequence[Any]], limit: int = MAX_BATCH_WRITES) -> list[list[Any]]:
    """Packs groups of writes (one generation's documents each) into batches of at most
    `limit` writes, keeping a group in one batch whenever it fits in one."""
    batches: list[list[Any]] = []
    current: list[Any] = []
    for group in groups:
        if len(current) + len(group) > limit and current:
            batches.append(current)
            current = []
        for write in group:
            if len(current) == limit:
                batches.append(current)
                current = []
            current.append(write)
    if current:
        batches.append(current)
    return batches


def stuck_error(generation: Generation, stuck_after: timedelta) -> ErrorInfo:
    minutes = round(stuck_after.total_seconds() / 60)
    if generation.status is GenerationStatus.QUEUED:
        return ErrorInfo(
            code="stuck",
            message=(
                f"The generation was not picked up within {minutes} minutes, "
                "even after it was queued again"
            ),
        )
    return ErrorInfo(code="fal_timeout", message=f"fal.ai did not finish within {minutes} minutes")


EXPIRED = ErrorInfo(code="expired", message="The generation passed the retention period")


# -- the report ---------------------------------------------------------------------------


@dataclass
class RetentionReport:
    done: bool = False
    deleted: int = 0
    ended_first: int = 0  # were still running: failed before being deleted
    objects_deleted: int = 0
    errors: int = 0
    left: int | None = None  # when stopped early: how many are still due


@dataclass
class StuckReport:
    done: bool = False
    republished: int = 0
    failed: int = 0
    moved_on: int = 0  # changed (or ended) since the query: left alone
    errors: int = 0
    left: int | None = None


@dataclass
class OrphanReport:
    done: bool = False
    scanned: int = 0
    deleted: int = 0
    referenced: int = 0
    young: int = 0
    malformed: int = 0  # outside the expected layout: left alone
    errors: int = 0
    # When stopped early: the last object looked at (or the prefix the next sweep starts).
    resume_at: str | None = None


@dataclass
class SweepReport:
    finished: bool = False
    skipped: bool = False  # another sweep held the lease
    stopped_in: str | None = None  # the phase the time budget ran out in
    elapsed_seconds: float = 0.0
    retention: RetentionReport = field(default_factory=RetentionReport)
    stuck: StuckReport = field(default_factory=StuckReport)
    orphans: OrphanReport = field(default_factory=OrphanReport)

    def to_json(self) -> dict[str, Any]:
        return _camel(asdict(self))


def _camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel_key(k): _camel(v) for k, v in value.items()}
    return value


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word.title() for word in rest)


# -- the sweep ----------------------------------------------------------------------------


class Sweeper:
    def __init__(
        self,
        records: CleanupRecords,
        moves: StateMoves,
        objects: Objects,
        publish: Callable[[str], None],
        config: SweepConfig,
        *,
        now: Callable[[], datetime],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._records = records
        self._moves = moves
        self._objects = objects
        self._publish = publish
        self._config = config
        self._now = now
        self._clock = clock

    def run(self) -> SweepReport:
        report = SweepReport()
        budget = Budget(self._config.time_budget_seconds, self._clock)
        now = self._now()
        holder = uuid.uuid4().hex
        until = now + timedelta(seconds=self._config.time_budget_seconds) + LEASE_MARGIN
        if not self._records.acquire_lease(holder, now, until):
            report.skipped = True
            log.info("cleanup skipped: another sweep holds the lease")
            return report
        try:
            phases = (
                ("retention", lambda: self._retention(now, budget, report.retention)),
                ("stuck", lambda: self._stuck(now, budget, report.stuck)),
                ("orphans", lambda: self._orphans(now, budget, report.orphans)),
            )
            for name, phase in phases:
                if not phase():
                    report.stopped_in = name
                    break
            else:
                report.finished = True
        finally:
            self._records.release_lease(holder)
        report.elapsed_seconds = round(budget.elapsed, 3)
        log.info(
            "cleanup %s",
            "finished" if report.finished else f"stopped in {report.stopped_in}",
            extra={"cleanup": report.to_json()},
        )
        return report

    # 1. retention

    def _retention(self, now: datetime, budget: Budget, report: RetentionReport) -> bool:
        cutoff = now - self._config.retention
        after: Position | None = None
        while True:
            if not budget.next_batch():
                report.left = self._records.count_expired(cutoff)
                return False
            rows = self._records.expired(cutoff, self._config.batch_size, after)
            if rows:
                after = (rows[-1].key, rows[-1].generation_id)
                self._expire(rows, now, report)
            if len(rows) < self._config.batch_size:
                report.done = True
                return True

    def _expire(self, rows: list[Row], now: datetime, report: RetentionReport) -> None:
        emptied: list[Generation] = []
        for row in rows:
            generation = row.generation
            if generation is None:
                log.error("unreadable generation record", extra={"generationId": row.generation_id})
                report.errors += 1
                continue
            try:
                # A running one is ended first: no delivery may add objects once listed.
                if (
                    not generation.is_terminal
                    and self._moves.fail(generation.id, EXPIRED, now) is not None
                ):
                    report.ended_first += 1
                paths = [
                    path
                    for prefix in generation_prefixes(generation.user_id, generation.id)
                    for path in self._objects.list_paths(prefix)
                ]
                self._objects.delete(paths)
            except Exception:
                log.exception("retention failed", extra={"generationId": generation.id})
                report.errors += 1
                continue
            report.objects_deleted += len(paths)
            emptied.append(generation)
        try:
            report.deleted += self._records.purge(emptied)
        except Exception:
            log.exception("deleting expired records failed", extra={"count": len(emptied)})
            report.errors += 1

    # 2. stuck

    def _stuck(self, now: datetime, budget: Budget, report: StuckReport) -> bool:
        cutoff = now - self._config.stuck_after
        after: Position | None = None
        while True:
            if not budget.next_batch():
                report.left = self._records.count_stuck(cutoff)
                return False
            rows = self._records.stuck(cutoff, self._config.batch_size, after)
            if rows:
                after = (rows[-1].key, rows[-1].generation_id)
            for row in rows:
                try:
                    self._unstick(row, cutoff, now, report)
                except Exception:
                    log.exception(
                        "stuck generation not handled", extra={"generationId": row.generation_id}
                    )
                    report.errors += 1
            if len(rows) < self._config.batch_size:
                report.done = True
                return True

    def _unstick(self, row: Row, cutoff: datetime, now: datetime, report: StuckReport) -> None:
        generation = row.generation
        if generation is None:
            log.error("unreadable generation record", extra={"generationId": row.generation_id})
            report.errors += 1
            return
        context = {"generationId": generation.id, "status": generation.status.value}
        if generation.status is GenerationStatus.QUEUED and generation.republished_at is None:
            if self._moves.note_republished(generation.id, cutoff, now) is None:
                report.moved_on += 1
                return
            # Claimed in the record first, so two sweeps never both publish. Should this
            # publish fail, the generation fails as stuck a window later.
            self._publish(generation.id)
            report.republished += 1
            log.warning("stuck in queued: re-published", extra=context)
            return
        error = stuck_error(generation, self._config.stuck_after)
        if self._moves.fail_stale(generation.id, error, cutoff, now) is None:
            report.moved_on += 1
            return
        report.failed += 1
        log.warning("stuck generation failed", extra={**context, "code": error.code})

    # 3. orphans

    def _orphans(self, now: datetime, budget: Budget, report: OrphanReport) -> bool:
        created_before = now - self._config.orphan_min_age
        cursor = self._records.orphan_cursor()
        start = (
            ORPHAN_PREFIXES.index(cursor.prefix)
            if cursor and cursor.prefix in ORPHAN_PREFIXES
            else 0
        )
        for position, prefix in enumerate(ORPHAN_PREFIXES[start:], start):
            # Across sweeps the place is a name (page tokens are not meant to be kept).
            start_offset = cursor.after if cursor and cursor.prefix == prefix else None
            resume, token = start_offset, None
            while True:
                if not budget.next_batch():
                    report.resume_at = resume or prefix
                    return False
                page, token = self._objects.list_page(
                    prefix, self._config.batch_size, page_token=token, start_offset=start_offset
                )
                # start_offset is inclusive (and not every server applies it).
                page = [o for o in page if resume is None or o.name > resume]
                try:
                    self._sweep_page(page, created_before, report)
                except Exception:
                    log.exception("orphan sweep of a page failed", extra={"prefix": prefix})
                    report.errors += 1
                if page:
                    resume = page[-1].name
                    self._records.save_orphan_cursor(OrphanCursor(prefix, resume), now)
                if token is None:
                    break
            following = ORPHAN_PREFIXES[position + 1 :]
            self._records.save_orphan_cursor(OrphanCursor(following[0]) if following else None, now)
        report.done = True
        return True

    def _sweep_page(
        self, page: list[StoredObject], created_before: datetime, report: OrphanReport
    ) -> None:
        candidates: list[tuple[str, ObjectOwner]] = []
        for stored in page:
            report.scanned += 1
            owner = parse_object_path(stored.name)
            if owner is None:
                report.malformed += 1
                continue
            if stored.created is None or stored.created >= created_before:
                report.young += 1
                continue
            candidates.append((stored.name, owner))
        if not candidates:
            return
        records = self._records.existing(
            list(dict.fromkeys(o.generation_id for _, o in candidates))
        )
        doomed = [name for name, owner in candidates if is_orphan(name, owner, records)]
        self._objects.delete(doomed)
        report.deleted += len(doomed)
        report.referenced += len(candidates) - len(doomed)
        if doomed:
            log.info("orphaned objects deleted", extra={"count": len(doomed), "first": doomed[0]})


# -- Firestore ----------------------------------------------------------------------------


def _row(snapshot: firestore.DocumentSnapshot, key: str) -> Row:
    data = snapshot.to_dict() or {}
    try:
        generation: Generation | None = Generation.model_validate(data)
    except pydantic.ValidationError:
        generation = None
    return Row(snapshot.id, data[key], generation)


class FirestoreCleanupStore:
    """Every Firestore query and write of the sweep (state changes excepted: those are the
    repository's transactions). The indexes named here are the ones to deploy."""

    # get_all round trips: this many documents each.
    LOOKUP_CHUNK = 100

    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def _generations(self) -> firestore.CollectionReference:
        return self._db.collection(GENERATIONS)

    def _state(self, name: str) -> firestore.DocumentReference:
        return self._db.collection(CLEANUP_STATE).document(name)

    # queries

    def _expired_query(self, before: datetime) -> firestore.Query:
        """`generations` where `created_at < before`. Index: the automatic single-field
        index on `created_at` (ascending), which also serves the order by created_at."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        return self._generations().where(filter=FieldFilter("created_at", "<", before))

    def _stuck_query(self, before: datetime) -> firestore.Query:
        """`generations` where `status IN [queued, submitted]` and `updated_at < before`.
        Index: composite on `generations`: `status` ASC, `updated_at` ASC."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        return (
            self._generations()
            .where(filter=FieldFilter("status", "in", [s.value for s in UNFINISHED]))
            .where(filter=FieldFilter("updated_at", "<", before))
        )

    def _page(
        self, query: firestore.Query, key: str, limit: int, after: Position | None
    ) -> list[Row]:
        ordered = query.order_by(key).order_by("__name__")
        if after is not None:
            ordered = ordered.start_after({key: after[0], "__name__": after[1]})
        return [_row(snapshot, key) for snapshot in ordered.limit(limit).stream()]

    def expired(self, before: datetime, limit: int, after: Position | None) -> list[Row]:
        """The oldest generations created before `before`, in (created_at, id) order."""
        return self._page(self._expired_query(before), "created_at", limit, after)

    def count_expired(self, before: datetime) -> int:
        return _count(self._expired_query(before))

    def stuck(self, before: datetime, limit: int, after: Position | None) -> list[Row]:
        """Unfinished generations unchanged since `before`, longest unchanged first."""
        return self._page(self._stuck_query(before), "updated_at", limit, after)

    def count_stuck(self, before: datetime) -> int:
        return _count(self._stuck_query(before))

    def existing(self, generation_ids: Sequence[str]) -> dict[str, Generation | None]:
        """The records of these ids that exist (lookups by key, no index): None where the
        document does not parse."""
        found: dict[str, Generation | None] = {}
        for start in range(0, len(generation_ids), self.LOOKUP_CHUNK):
            refs = [
                self._generations().document(i)
                for i in generation_ids[start : start + self.LOOKUP_CHUNK]
            ]
            for snapshot in self._db.get_all(refs):
                if not snapshot.exists:
                    continue
                try:
                    found[snapshot.id] = Generation.model_validate(snapshot.to_dict())
                except pydantic.ValidationError:
                    found[snapshot.id] = None
        return found

    # writes

    def purge(self, generations: Sequence[Generation]) -> int:
        """Deletes the records and their fal request lookups, in batched writes of at most
        500 (a generation's documents in one batch). Deleting a missing document is a no-op,
        so a purge repeated (or run by two sweeps) changes nothing more."""
        groups = [
            [
                self._generations().document(g.id),
                *(
                    self._db.collection(FAL_REQUESTS).document(p.fal_request_id)
                    for p in g.parts
                    if p.fal_request_id
                ),
            ]
            for g in generations
        ]
        for refs in pack_writes(groups):
            batch = self._db.batch()
            for ref in refs:
                batch.delete(ref)
            batch.commit()
        return len(groups)

    def acquire_lease(self, holder: str, now: datetime, until: datetime) -> bool:
        ref = self._state(LEASE_DOC)

        def take(transaction: firestore.Transaction) -> bool:
            snapshot = ref.get(transaction=transaction)
            data = (snapshot.to_dict() if snapshot.exists else None) or {}
            expires_at = data.get("expires_at")
            if expires_at is not None and expires_at > now and data.get("holder") != holder:
                return False
            transaction.set(ref, {"holder": holder, "acquired_at": now, "expires_at": until})
            return True

        try:
            return transactions.run(self._db, take, attempts=3)
        except RetryableError:
            return False  # another sweep is taking it right now

    def release_lease(self, holder: str) -> None:
        ref = self._state(LEASE_DOC)

        def drop(transaction: firestore.Transaction) -> None:
            snapshot = ref.get(transaction=transaction)
            if snapshot.exists and (snapshot.to_dict() or {}).get("holder") == holder:
                transaction.delete(ref)

        try:
            transactions.run(self._db, drop, attempts=3)
        except RetryableError:
            log.warning("cleanup lease not released: it lapses by itself")

    def orphan_cursor(self) -> OrphanCursor | None:
        snapshot = self._state(ORPHANS_DOC).get()
        data = (snapshot.to_dict() if snapshot.exists else None) or {}
        if not data.get("prefix"):
            return None
        return OrphanCursor(data["prefix"], data.get("after"))

    def save_orphan_cursor(self, cursor: OrphanCursor | None, now: datetime) -> None:
        ref = self._state(ORPHANS_DOC)
        if cursor is None:
            ref.delete()
        else:
            ref.set({"prefix": cursor.prefix, "after": cursor.after, "updated_at": now})


def _count(query: firestore.Query) -> int:
    return count_of(query)
