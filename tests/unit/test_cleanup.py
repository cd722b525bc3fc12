"""The cleanup sweep's rules and phases against in-memory fakes (imagegen.cleanup).

The fakes apply the real state machine (imagegen.lifecycle) to their records, as the
repository's transactions do, so refusals (ended, moved on) are the production ones.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from functions_framework import create_app

from imagegen import lifecycle
from imagegen.cleanup import (
    EXPIRED,
    MAX_BATCH_WRITES,
    Budget,
    FirestoreCleanupStore,
    ObjectOwner,
    OrphanCursor,
    Position,
    Row,
    SweepConfig,
    Sweeper,
    is_orphan,
    pack_writes,
    parse_object_path,
)
from imagegen.cleanup_routes import SweepRequest
from imagegen.models.records import (
    ErrorInfo,
    Generation,
    GenerationPart,
    GenerationStatus,
    PartStatus,
    StoredImage,
)
from imagegen.settings import Settings, get_settings
from imagegen.storage import StoredObject, image_path, thumbnail_path

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
ROOT = Path(__file__).resolve().parents[2]


# -- fakes --------------------------------------------------------------------------------


def make_generation(
    generation_id: str,
    *,
    user_id: str = "alice",
    status: GenerationStatus = GenerationStatus.COMPLETED,
    created_at: datetime = NOW,
    updated_at: datetime | None = None,
    fal_request_id: str | None = None,
    images: int = 0,
) -> Generation:
    part_status = {
        GenerationStatus.QUEUED: PartStatus.PENDING,
        GenerationStatus.SUBMITTED: PartStatus.SUBMITTED,
        GenerationStatus.COMPLETED: PartStatus.COMPLETED,
        GenerationStatus.FAILED: PartStatus.FAILED,
        GenerationStatus.CANCELED: PartStatus.CANCELED,
    }[status]
    return Generation(
        id=generation_id,
        user_id=user_id,
        status=status,
        prompt="a red fox",
        model="flux-dev",
        fal_app="fal-ai/flux/dev",
        parameters={},
        num_images=max(images, 1),
        parts=[
            GenerationPart(
                index=0,
                num_images=max(images, 1),
                first_image=0,
                status=part_status,
                fal_request_id=fal_request_id,
            )
        ],
        images=[
            StoredImage(
                index=i,
                bucket="b",
                path=image_path(user_id, generation_id, i, "jpg"),
                thumbnail_path=thumbnail_path(user_id, generation_id, i),
                width=64,
                height=64,
                content_type="image/jpeg",
                file_size=10,
            )
            for i in range(images)
        ],
        created_at=created_at,
        updated_at=updated_at or created_at,
    )


class FakeDb:
    """Generations, fal lookups, the lease and the orphan cursor; queries as Firestore
    runs them (filter, order by key then id, start after, limit), moves as transactions."""

    def __init__(self, clock: FakeClock | None = None, query_cost: float = 0.0) -> None:
        self.generations: dict[str, Generation] = {}
        self.lookups: set[str] = set()
        self.unreadable: dict[str, datetime] = {}  # id -> created_at of a broken document
        self.lease: tuple[str, datetime] | None = None
        self.cursor: OrphanCursor | None = None
        self.saved_cursors: list[OrphanCursor | None] = []
        self.purged: list[list[str]] = []
        self.queries: list[str] = []
        self.clock = clock
        self.query_cost = query_cost

    def add(self, *generations: Generation) -> None:
        for generation in generations:
            self.generations[generation.id] = generation
            for part in generation.parts:
                if part.fal_request_id:
                    self.lookups.add(part.fal_request_id)

    def _spend(self, what: str) -> None:
        self.queries.append(what)
        if self.clock is not None:
            self.clock.now += self.query_cost

    def _page(self, rows: list[Row], limit: int, after: Position | None) -> list[Row]:
        rows = sorted(rows, key=lambda r: (r.key, r.generation_id))
        if after is not None:
            rows = [r for r in rows if (r.key, r.generation_id) > after]
        return [Row(r.generation_id, r.key, copy.deepcopy(r.generation)) for r in rows[:limit]]

    def _expired_rows(self, before: datetime) -> list[Row]:
        rows = [Row(g.id, g.created_at, g) for g in self.generations.values()]
        rows += [Row(i, c, None) for i, c in self.unreadable.items()]
        return [r for r in rows if r.key < before]

    def _stuck_rows(self, before: datetime) -> list[Row]:
        return [
            Row(g.id, g.updated_at, g)
            for g in self.generations.values()
            if g.status in (GenerationStatus.QUEUED, GenerationStatus.SUBMITTED)
            and g.updated_at is not None
            and g.updated_at < before
        ]

    # CleanupRecords

    def expired(self, before: datetime, limit: int, after: Position | None) -> list[Row]:
        self._spend("expired")
        return self._page(self._expired_rows(before), limit, after)

    def count_expired(self, before: datetime) -> int:
        return len(self._expired_rows(before))

    def stuck(self, before: datetime, limit: int, after: Position | None) -> list[Row]:
        self._spend("stuck")
        return self._page(self._stuck_rows(before), limit, after)

    def count_stuck(self, before: datetime) -> int:
        return len(self._stuck_rows(before))

    def existing(self, generation_ids: Sequence[str]) -> dict[str, Generation | None]:
        found: dict[str, Generation | None] = {
            i: copy.deepcopy(self.generations[i]) for i in generation_ids if i in self.generations
        }
        found.update({i: None for i in generation_ids if i in self.unreadable})
        return found

    def purge(self, generations: Sequence[Generation]) -> int:
        self.purged.append([g.id for g in generations])
        for generation in generations:
            self.generations.pop(generation.id, None)
            for part in generation.parts:
                self.lookups.discard(part.fal_request_id)
        return len(generations)

    def acquire_lease(self, holder: str, now: datetime, until: datetime) -> bool:
        if self.lease is not None and self.lease[1] > now and self.lease[0] != holder:
            return False
        self.lease = (holder, until)
        return True

    def release_lease(self, holder: str) -> None:
        if self.lease is not None and self.lease[0] == holder:
            self.lease = None

    def orphan_cursor(self) -> OrphanCursor | None:
        return self.cursor

    def save_orphan_cursor(self, cursor: OrphanCursor | None, now: datetime) -> None:
        self.cursor = cursor
        self.saved_cursors.append(cursor)

    # StateMoves (each a "transaction" over the stored record)

    def _apply(self, generation_id: str, move) -> Generation | None:  # noqa: ANN001
        stored = self.generations.get(generation_id)
        if stored is None:
            return None
        fresh = copy.deepcopy(stored)
        if not move(fresh):
            return None
        self.generations[generation_id] = fresh
        return fresh

    def fail(self, generation_id: str, error: ErrorInfo, now: datetime) -> Generation | None:
        return self._apply(generation_id, lambda g: lifecycle.fail(g, error, now))

    def note_republished(
        self, generation_id: str, stale_before: datetime, now: datetime
    ) -> Generation | None:
        return self._apply(
            generation_id, lambda g: lifecycle.note_republished(g, stale_before, now)
        )

    def fail_stale(
        self, generation_id: str, error: ErrorInfo, stale_before: datetime, now: datetime
    ) -> Generation | None:
        return self._apply(
            generation_id, lambda g: lifecycle.fail_stale(g, error, stale_before, now)
        )


class FakeObjects:
    """A bucket: name -> creation time; listings page by `page_size` with opaque tokens."""

    def __init__(self) -> None:
        self.objects: dict[str, datetime | None] = {}
        self.deleted: list[str] = []
        self.pages: list[tuple[str, str | None, str | None]] = []

    def put(self, name: str, created: datetime | None) -> None:
        self.objects[name] = created

    def put_generation(self, generation: Generation, created: datetime, count: int = 1) -> None:
        for i in range(count):
            self.put(image_path(generation.user_id, generation.id, i, "jpg"), created)
            self.put(thumbnail_path(generation.user_id, generation.id, i), created)

    def list_paths(self, prefix: str) -> list[str]:
        return sorted(n for n in self.objects if n.startswith(prefix))

    def list_page(
        self,
        prefix: str,
        page_size: int,
        page_token: str | None = None,
        start_offset: str | None = None,
    ) -> tuple[list[StoredObject], str | None]:
        self.pages.append((prefix, page_token, start_offset))
        # Like Cloud Storage's, a token continues after the last name it returned, so
        # objects deleted meanwhile do not shift the pages.
        names = [
            n
            for n in self.list_paths(prefix)
            if (start_offset is None or n >= start_offset)
            and (page_token is None or n > page_token)
        ]
        chosen = names[:page_size]
        more = len(names) > page_size
        return [StoredObject(n, self.objects[n]) for n in chosen], (chosen[-1] if more else None)

    def delete(self, paths: list[str]) -> None:
        for path in paths:
            if self.objects.pop(path, "gone") != "gone":
                self.deleted.append(path)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def config(**overrides) -> SweepConfig:
    values = {
        "retention": 30 * DAY,
        "stuck_after": 60 * MINUTE,
        "orphan_min_age": 60 * MINUTE,
        "time_budget_seconds": 240.0,
        "batch_size": 200,
    }
    return SweepConfig(**{**values, **overrides})


class World:
    """A sweeper over fresh fakes; `sweep()` runs one sweep at `now`."""

    def __init__(self, query_cost: float = 0.0, **config_overrides) -> None:
        self.clock = FakeClock()
        self.db = FakeDb(self.clock, query_cost)
        self.objects = FakeObjects()
        self.published: list[str] = []
        self.config = config(**config_overrides)
        self.now = NOW

    def sweeper(self, records=None, cfg: SweepConfig | None = None) -> Sweeper:  # noqa: ANN001
        return Sweeper(
            records or self.db,
            self.db,
            self.objects,
            self.published.append,
            cfg or self.config,
            now=lambda: self.now,
            clock=self.clock,
        )

    def sweep(self, **config_overrides):  # noqa: ANN201
        cfg = config(**{**self.config.__dict__, **config_overrides})
        return self.sweeper(cfg=cfg).run()


# -- pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("generations/alice/g1/0.jpg", ObjectOwner("generations/", "alice", "g1")),
        ("thumbnails/alice/g1/3.webp", ObjectOwner("thumbnails/", "alice", "g1")),
        (
            "generations/user@example.com/6f1c2d9e-aaaa/0.png",
            ObjectOwner("generations/", "user@example.com", "6f1c2d9e-aaaa"),
        ),
    ],
)
def test_an_object_in_the_layout_names_its_generation(name: str, owner: ObjectOwner) -> None:
    assert parse_object_path(name) == owner


@pytest.mark.parametrize(
    "name",
    [
        "generations/alice/g1",  # no file
        "generations/alice/g1/",  # empty file name
        "generations/alice/g1/sub/0.jpg",  # deeper than the layout
        "generations/0.jpg",
        "generations//g1/0.jpg",  # empty user
        "generations/alice//0.jpg",  # empty generation
        "generations/alice/__g1__/0.jpg",  # an id Firestore reserves: no record can have it
        "generations/alice/../0.jpg",
        "generations/./g1/0.jpg",
        "loras/alice/g1/0.safetensors",  # another prefix
        "generationsx/alice/g1/0.jpg",
        "thumbnail/alice/g1/0.webp",
        "backup/generations/alice/g1/0.jpg",
        "README",
        "",
    ],
)
def test_an_object_outside_the_layout_is_not_attributed(name: str) -> None:
    assert parse_object_path(name) is None


def test_orphan_rule() -> None:
    done = make_generation("g1", images=1)
    running = make_generation("g2", status=GenerationStatus.SUBMITTED)
    records = {"g1": done, "g2": running, "g3": None}

    def orphan(name: str) -> bool:
        owner = parse_object_path(name)
        assert owner is not None
        return is_orphan(name, owner, records)

    assert orphan("generations/alice/gone/0.jpg")  # no record
    assert not orphan(done.images[0].path)  # referenced
    assert not orphan(done.images[0].thumbnail_path)
    assert orphan("generations/alice/g1/7.jpg")  # ended, and its images do not name it
    assert orphan("generations/mallory/g1/0.jpg")  # under another user's prefix
    assert not orphan("generations/alice/g2/0.jpg")  # still running: may be recorded yet
    assert not orphan("generations/alice/g3/0.jpg")  # a record that does not parse: keep


def test_pack_writes_keeps_batches_within_firestores_limit() -> None:
    groups = [[f"g{i}", f"g{i}-l1", f"g{i}-l2"] for i in range(400)]  # 1200 writes
    batches = pack_writes(groups)
    assert all(len(b) <= MAX_BATCH_WRITES for b in batches)
    assert [w for b in batches for w in b] == [w for g in groups for w in g]
    # A generation's documents are never split across batches.
    for batch in batches:
        assert len({w.split("-")[0] for w in batch}) * 3 == len(batch)
    assert len(batches) == 3  # 166 groups of 3 fit in 500


def test_pack_writes_splits_only_a_group_larger_than_a_batch() -> None:
    batches = pack_writes([["a"], [f"b{i}" for i in range(7)], ["c"]], limit=3)
    assert batches == [["a"], ["b0", "b1", "b2"], ["b3", "b4", "b5"], ["b6", "c"]]
    assert pack_writes([]) == []


def test_budget_always_grants_the_first_batch_then_watches_the_clock() -> None:
    clock = FakeClock()
    budget = Budget(0, clock)
    assert budget.next_batch()
    assert not budget.next_batch()

    budget = Budget(10, clock)
    assert budget.next_batch()
    clock.now += 9.9
    assert budget.next_batch()
    clock.now += 0.1
    assert not budget.next_batch()
    assert budget.elapsed == pytest.approx(10.0)


def test_lifecycle_republishes_once_and_fails_only_what_is_still_stale() -> None:
    stale_before = NOW - 60 * MINUTE
    old = NOW - 2 * 60 * MINUTE
    queued = make_generation("q", status=GenerationStatus.QUEUED, created_at=old)
    assert lifecycle.note_republished(queued, stale_before, NOW)
    assert queued.republished_at == NOW and queued.updated_at == NOW
    # A second sweep (or one racing the first) cannot claim it again.
    queued.updated_at = old
    assert not lifecycle.note_republished(queued, stale_before, NOW)

    submitted = make_generation("s", status=GenerationStatus.SUBMITTED, created_at=old)
    assert not lifecycle.note_republished(submitted, stale_before, NOW)
    fresh = make_generation("f", status=GenerationStatus.SUBMITTED, created_at=old)
    fresh.updated_at = NOW - MINUTE  # a webhook moved it on since the query
    error = ErrorInfo(code="fal_timeout", message="m")
    assert not lifecycle.fail_stale(fresh, error, stale_before, NOW)
    assert lifecycle.fail_stale(submitted, error, stale_before, NOW)
    assert submitted.status is GenerationStatus.FAILED
    assert submitted.parts[0].status is PartStatus.FAILED
    assert not lifecycle.fail_stale(submitted, error, stale_before, NOW)  # ended


# -- retention ----------------------------------------------------------------------------


def test_retention_deletes_old_generations_with_their_objects_and_keeps_recent_ones() -> None:
    world = World()
    old = NOW - 31 * DAY
    done = make_generation("old-done", created_at=old, fal_request_id="req-1", images=2)
    running = make_generation(
        "old-running", status=GenerationStatus.SUBMITTED, created_at=old, fal_request_id="req-2"
    )
    recent = make_generation("recent", created_at=NOW - 29 * DAY, images=2)
    world.db.add(done, running, recent)
    for generation in (done, running, recent):
        world.objects.put_generation(generation, old, count=2)

    report = world.sweep()

    assert report.finished and report.retention.done
    assert report.retention.deleted == 2 and report.retention.ended_first == 1
    assert report.retention.objects_deleted == 8
    assert set(world.db.generations) == {"recent"}
    assert world.db.lookups == set()
    assert world.objects.list_paths("generations/alice/old-") == []
    assert world.objects.list_paths("thumbnails/alice/old-") == []
    assert len(world.objects.list_paths("generations/alice/recent/")) == 2
    assert not world.published


def test_retention_ends_a_running_generation_through_the_state_machine_first() -> None:
    world = World()
    running = make_generation(
        "old-running", status=GenerationStatus.QUEUED, created_at=NOW - 40 * DAY
    )
    world.db.add(running)
    ended: list[Generation] = []
    original = world.db.fail

    def fail(generation_id: str, error: ErrorInfo, now: datetime) -> Generation | None:
        result = original(generation_id, error, now)
        ended.append(result)
        return result

    world.db.fail = fail  # type: ignore[method-assign]
    world.sweep()
    assert ended and ended[0].status is GenerationStatus.FAILED
    assert ended[0].error == EXPIRED
    assert "old-running" not in world.db.generations


def test_retention_works_in_batches_and_every_purge_stays_within_a_batch() -> None:
    world = World(batch_size=2)
    world.db.add(*(make_generation(f"g{i}", created_at=NOW - (40 + i) * DAY) for i in range(5)))
    report = world.sweep()
    assert report.retention.deleted == 5 and not world.db.generations
    assert [len(p) for p in world.db.purged] == [2, 2, 1]
    assert world.db.queries.count("expired") == 3
    # Oldest first, so a stopped sweep has removed the most overdue ones.
    assert world.db.purged[0] == ["g4", "g3"]


def test_the_time_budget_stops_retention_early_and_the_next_sweep_finishes() -> None:
    # Every query takes 4 s: with a 10 s budget, three batches are started (at 0, 4 and 8 s).
    world = World(query_cost=4.0, batch_size=1, time_budget_seconds=10.0)
    world.db.add(*(make_generation(f"g{i}", created_at=NOW - (40 + i) * DAY) for i in range(5)))

    first = world.sweep()
    assert not first.finished and first.stopped_in == "retention"
    assert not first.retention.done
    assert first.retention.deleted == 3 and first.retention.left == 2
    assert first.stuck.done is False and world.db.queries.count("stuck") == 0
    assert world.db.lease is None  # released for the next run

    second = world.sweep()
    assert second.retention.deleted == 2 and second.retention.done
    assert not world.db.generations


def test_a_sweep_with_no_time_at_all_still_makes_progress() -> None:
    world = World(batch_size=1, time_budget_seconds=0.0)
    world.db.add(*(make_generation(f"g{i}", created_at=NOW - (40 + i) * DAY) for i in range(3)))
    for remaining in (2, 1, 0):
        report = world.sweep()
        assert len(world.db.generations) == remaining
        assert not report.finished
    assert world.sweep(time_budget_seconds=240.0).finished


def test_an_unreadable_expired_record_is_reported_and_skipped() -> None:
    world = World(batch_size=1)
    world.db.unreadable["broken"] = NOW - 50 * DAY
    world.db.add(make_generation("ok", created_at=NOW - 40 * DAY))
    report = world.sweep()
    assert report.retention.errors == 1 and report.retention.deleted == 1
    assert report.retention.done  # the in-sweep position moved past it: no endless loop


# -- stuck --------------------------------------------------------------------------------


def test_a_stuck_queued_generation_is_republished_once_then_failed() -> None:
    world = World()
    world.db.add(
        make_generation("q", status=GenerationStatus.QUEUED, created_at=NOW - 2 * 60 * MINUTE)
    )

    first = world.sweep()
    assert first.stuck.republished == 1 and world.published == ["q"]
    record = world.db.generations["q"]
    assert record.status is GenerationStatus.QUEUED and record.republished_at == NOW

    # Right after, it is not stuck: the fresh message has a whole window.
    assert world.sweep().stuck.republished == 0 and world.published == ["q"]

    world.now = NOW + 61 * MINUTE
    third = world.sweep()
    assert third.stuck.failed == 1 and world.published == ["q"]
    record = world.db.generations["q"]
    assert record.status is GenerationStatus.FAILED and record.error is not None
    assert record.error.code == "stuck" and "60 minutes" in record.error.message
    assert record.parts[0].status is PartStatus.FAILED


def test_a_stuck_submitted_generation_fails_with_fal_timeout() -> None:
    world = World()
    stuck = make_generation(
        "s", status=GenerationStatus.SUBMITTED, created_at=NOW - 3 * 60 * MINUTE
    )
    young = make_generation("y", status=GenerationStatus.SUBMITTED, created_at=NOW - 59 * MINUTE)
    ended = make_generation("e", status=GenerationStatus.COMPLETED, created_at=NOW - 5 * DAY)
    world.db.add(stuck, young, ended)
    report = world.sweep()
    assert report.stuck.failed == 1 and report.stuck.errors == 0
    assert world.db.generations["s"].error.code == "fal_timeout"
    assert world.db.generations["y"].status is GenerationStatus.SUBMITTED
    assert world.db.generations["e"] == ended
    assert not world.published


def test_a_generation_that_moved_on_since_the_query_is_left_alone() -> None:
    world = World()
    old = NOW - 2 * 60 * MINUTE
    world.db.add(
        make_generation("q", status=GenerationStatus.QUEUED, created_at=old),
        make_generation("s", status=GenerationStatus.SUBMITTED, created_at=old),
    )

    class Racing:
        """The query's snapshot is stale: a dispatcher and a webhook moved both on."""

        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(world.db, name)

        def stuck(self, before, limit, after):  # noqa: ANN001, ANN201
            rows = world.db.stuck(before, limit, after)
            for row in rows:
                world.db.generations[row.generation_id].updated_at = NOW - MINUTE
            return rows

    report = world.sweeper(records=Racing()).run()
    assert report.stuck.moved_on == 2 and report.stuck.failed == 0
    assert report.stuck.republished == 0 and not world.published


def test_a_failed_republish_is_reported_and_the_generation_fails_a_window_later() -> None:
    world = World()
    world.db.add(make_generation("q", status=GenerationStatus.QUEUED, created_at=NOW - DAY))

    def broken(_: str) -> None:
        raise RuntimeError("pubsub unavailable")

    sweeper = Sweeper(
        world.db, world.db, world.objects, broken, world.config, now=lambda: NOW, clock=FakeClock()
    )
    report = sweeper.run()
    assert report.stuck.errors == 1 and report.finished
    world.now = NOW + 61 * MINUTE
    assert world.sweep().stuck.failed == 1
    assert world.db.generations["q"].error.code == "stuck"


def test_the_stuck_phase_works_in_batches() -> None:
    world = World(batch_size=2)
    world.db.add(
        *(
            make_generation(
                f"s{i}", status=GenerationStatus.SUBMITTED, created_at=NOW - (i + 2) * 60 * MINUTE
            )
            for i in range(5)
        )
    )
    report = world.sweep()
    assert report.stuck.failed == 5 and report.stuck.done
    assert world.db.queries.count("stuck") == 3


# -- orphans ------------------------------------------------------------------------------


def test_orphans_old_ones_go_young_referenced_and_malformed_ones_stay() -> None:
    world = World()
    old, young = NOW - 2 * 60 * MINUTE, NOW - 10 * MINUTE
    done = make_generation("done", images=1)
    running = make_generation("run", status=GenerationStatus.SUBMITTED)
    world.db.add(done, running)
    world.objects.put_generation(done, old)  # referenced
    world.objects.put("generations/alice/done/9.jpg", old)  # ended, not referenced
    world.objects.put("generations/alice/run/0.jpg", old)  # running: kept
    world.objects.put("generations/alice/gone/0.jpg", old)  # orphan
    world.objects.put("thumbnails/alice/gone/0.webp", old)  # orphan
    world.objects.put("generations/alice/gone2/0.jpg", young)  # orphan, but young
    world.objects.put("generations/alice/nodate/0.jpg", None)  # age unknown: kept
    world.objects.put("generations/stray.jpg", old)  # outside the layout
    world.objects.put("generations/alice/gone/deeper/0.jpg", old)  # outside the layout
    world.objects.put("loras/x.safetensors", old)  # not a prefix the sweep lists

    report = world.sweep()

    assert report.finished and report.orphans.done
    assert sorted(world.objects.deleted) == [
        "generations/alice/done/9.jpg",
        "generations/alice/gone/0.jpg",
        "thumbnails/alice/gone/0.webp",
    ]
    assert report.orphans.deleted == 3
    assert report.orphans.referenced == 3  # done's image and thumbnail, run's object
    assert report.orphans.young == 2 and report.orphans.malformed == 2
    assert report.orphans.scanned == 10
    assert "loras/x.safetensors" in world.objects.objects
    assert world.db.cursor is None  # a full pass: the next one starts over


def test_orphans_page_through_the_listing_and_resume_where_the_budget_stopped() -> None:
    world = World(batch_size=2, query_cost=0.0)
    old = NOW - DAY
    names = [f"generations/alice/g{i}/0.jpg" for i in range(5)] + [
        f"thumbnails/alice/g{i}/0.webp" for i in range(3)
    ]
    for name in names:
        world.objects.put(name, old)

    # Every listing takes 3 s; with 5 s, the sweep lists 2 pages (at 0 and 3 s).
    original = world.objects.list_page

    def slow_list_page(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        world.clock.now += 3.0
        return original(*args, **kwargs)

    world.objects.list_page = slow_list_page  # type: ignore[method-assign]
    first = world.sweep(time_budget_seconds=5.0)
    assert not first.finished and first.stopped_in == "orphans"
    assert first.orphans.deleted == 4 and first.orphans.resume_at == "generations/alice/g3/0.jpg"
    assert world.db.cursor == OrphanCursor("generations/", "generations/alice/g3/0.jpg")
    # Within a sweep, pages follow page tokens.
    assert [p[1] for p in world.objects.pages] == [None, "generations/alice/g1/0.jpg"]

    world.objects.pages.clear()
    second = world.sweep(time_budget_seconds=240.0)
    assert second.finished and second.orphans.done
    assert sorted(world.objects.deleted) == sorted(names)
    # It went on from the saved place rather than listing from the start again.
    assert world.objects.pages[0] == ("generations/", None, "generations/alice/g3/0.jpg")
    assert second.orphans.scanned == 4
    assert world.db.cursor is None


def test_a_sweep_stopped_between_prefixes_resumes_at_the_next_prefix() -> None:
    world = World()
    world.objects.put("generations/alice/g1/0.jpg", NOW - DAY)
    world.objects.put("thumbnails/alice/g1/0.webp", NOW - DAY)
    original = world.objects.list_page

    def slow_list_page(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        world.clock.now += 3.0
        return original(*args, **kwargs)

    world.objects.list_page = slow_list_page  # type: ignore[method-assign]
    first = world.sweep(time_budget_seconds=2.0)
    assert first.stopped_in == "orphans" and first.orphans.resume_at == "thumbnails/"
    assert world.db.cursor == OrphanCursor("thumbnails/", None)
    assert world.objects.deleted == ["generations/alice/g1/0.jpg"]

    assert world.sweep(time_budget_seconds=240.0).finished
    assert world.objects.pages[-1][0] == "thumbnails/"
    assert all(prefix == "thumbnails/" for prefix, *_ in world.objects.pages[1:])
    assert world.objects.deleted[-1] == "thumbnails/alice/g1/0.webp"
    assert world.db.cursor is None


def test_an_orphan_cursor_in_the_second_prefix_skips_the_first() -> None:
    world = World()
    world.objects.put("generations/alice/g1/0.jpg", NOW - DAY)
    world.objects.put("thumbnails/alice/g1/0.webp", NOW - DAY)
    world.db.cursor = OrphanCursor("thumbnails/", None)
    report = world.sweep()
    assert world.objects.deleted == ["thumbnails/alice/g1/0.webp"]
    assert report.orphans.done and world.db.cursor is None


def test_a_server_that_ignores_the_start_offset_does_not_reprocess_earlier_objects() -> None:
    world = World()
    for i in range(3):
        world.objects.put(f"generations/alice/g{i}/0.jpg", NOW - DAY)
    world.db.cursor = OrphanCursor("generations/", "generations/alice/g1/0.jpg")
    original = world.objects.list_page
    world.objects.list_page = lambda prefix, size, page_token=None, start_offset=None: original(  # type: ignore[method-assign]
        prefix, size, page_token
    )
    report = world.sweep()
    assert world.objects.deleted == ["generations/alice/g2/0.jpg"]
    assert report.orphans.scanned == 1


# -- whole sweeps -------------------------------------------------------------------------


def populate(world: World) -> None:
    old = NOW - 40 * DAY
    world.db.add(
        make_generation("expired", created_at=old, fal_request_id="r1", images=1),
        make_generation("queued", status=GenerationStatus.QUEUED, created_at=NOW - DAY),
        make_generation("submitted", status=GenerationStatus.SUBMITTED, created_at=NOW - DAY),
        make_generation("done", created_at=NOW - DAY, images=1),
    )
    world.objects.put_generation(world.db.generations["expired"], old)
    world.objects.put_generation(world.db.generations["done"], NOW - DAY)
    world.objects.put("generations/bob/lost/0.jpg", NOW - DAY)


def state(world: World) -> tuple:
    return (
        {i: (g.status, g.republished_at) for i, g in world.db.generations.items()},
        sorted(world.objects.objects),
        world.db.lookups,
    )


def test_a_second_sweep_finds_nothing_left_to_do() -> None:
    world = World()
    populate(world)
    first = world.sweep()
    after_first = state(world)
    assert first.finished
    assert (first.retention.deleted, first.stuck.republished, first.stuck.failed) == (1, 1, 1)
    assert first.orphans.deleted == 1

    second = world.sweep()
    assert state(world) == after_first
    assert second.finished
    assert second.retention.deleted == second.stuck.republished == second.stuck.failed == 0
    assert second.orphans.deleted == 0 and world.published == ["queued"]


def test_two_sweeps_working_from_the_same_stale_queries_do_no_harm() -> None:
    """Without the lease (it can lapse under a slow sweep): sweep B's queries were answered
    before sweep A acted, so B meets records A already deleted, moved or failed."""
    world, alone = World(), World()
    populate(world)
    populate(alone)
    alone.sweep()

    snapshot = copy.deepcopy(world.db)
    snapshot.acquire_lease = lambda *_: True  # type: ignore[method-assign]
    snapshot.release_lease = lambda *_: None  # type: ignore[method-assign]
    snapshot.purge = world.db.purge  # type: ignore[method-assign]
    snapshot_objects = copy.deepcopy(world.objects)
    world.sweep()

    class Stale:
        """Queries and listings from before A's sweep; every action on the live state."""

        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(snapshot, name)

    b = Sweeper(
        Stale(),
        world.db,
        _StaleListing(snapshot_objects, world.objects),
        world.published.append,
        world.config,
        now=lambda: NOW,
        clock=FakeClock(),
    ).run()
    assert b.finished
    assert (b.retention.errors, b.stuck.errors, b.orphans.errors) == (0, 0, 0)
    assert b.stuck.republished == 0 and b.stuck.failed == 0 and b.stuck.moved_on == 2
    assert world.published == ["queued"]  # published once, by A
    assert state(world) == state(alone)


class _StaleListing:
    def __init__(self, listing: FakeObjects, live: FakeObjects) -> None:
        self._listing, self._live = listing, live

    def list_page(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return self._listing.list_page(*args, **kwargs)

    def list_paths(self, prefix: str) -> list[str]:
        return self._listing.list_paths(prefix)

    def delete(self, paths: list[str]) -> None:
        self._live.delete(paths)


def test_a_sweep_skips_while_another_holds_the_lease_and_takes_over_a_lapsed_one() -> None:
    world = World()
    populate(world)
    world.db.lease = ("other", NOW + 5 * MINUTE)
    report = world.sweep()
    assert report.skipped and not report.finished
    assert "expired" in world.db.generations and not world.published
    assert world.db.queries == []

    world.db.lease = ("crashed", NOW - MINUTE)
    assert world.sweep().finished
    assert "expired" not in world.db.generations and world.db.lease is None


def test_the_report_is_camel_case_json() -> None:
    world = World()
    populate(world)
    body = world.sweep().to_json()
    assert body["finished"] is True and body["stoppedIn"] is None
    assert body["retention"]["objectsDeleted"] == 2
    assert set(body["orphans"]) >= {"scanned", "deleted", "resumeAt", "malformed"}
    assert set(body["stuck"]) >= {"republished", "failed", "movedOn", "left"}


# -- the Firestore store's batching (a fake client records the batched writes) ------------


class _Ref:
    def __init__(self, path: str) -> None:
        self.path = path

    def document(self, name: str) -> _Ref:
        return _Ref(f"{self.path}/{name}")


class _Batch:
    def __init__(self, log: list[list[str]]) -> None:
        self.deletes: list[str] = []
        self._log = log

    def delete(self, ref: _Ref) -> None:
        self.deletes.append(ref.path)

    def commit(self) -> None:
        assert len(self.deletes) <= MAX_BATCH_WRITES
        self._log.append(self.deletes)


class _Client:
    def __init__(self) -> None:
        self.commits: list[list[str]] = []

    def collection(self, name: str) -> _Ref:
        return _Ref(name)

    def batch(self) -> _Batch:
        return _Batch(self.commits)


def test_the_firestore_purge_commits_at_most_500_writes_per_batch() -> None:
    client = _Client()
    generations = []
    for i in range(300):
        generation = make_generation(f"g{i}", fal_request_id=f"r{i}")
        generation.parts.append(
            GenerationPart(index=1, num_images=1, first_image=1, fal_request_id=f"r{i}b")
        )
        generations.append(generation)
    assert FirestoreCleanupStore(client).purge(generations) == 300  # type: ignore[arg-type]
    assert [len(c) for c in client.commits] == [498, 402]
    assert sum(len(c) for c in client.commits) == 900
    first = client.commits[0]
    assert first[:3] == ["generations/g0", "falRequests/r0", "falRequests/r0b"]


# -- configuration and the HTTP edge ------------------------------------------------------


def test_a_request_can_only_make_a_sweep_smaller() -> None:
    settings = Settings(cleanup_time_budget_seconds=240, retention_days=7)
    cfg = SweepConfig.from_settings(settings)
    assert cfg.time_budget_seconds == 240 and cfg.retention == 7 * DAY
    assert cfg.stuck_after == 60 * MINUTE and cfg.orphan_min_age == 60 * MINUTE
    assert SweepConfig.from_settings(settings, time_budget_seconds=5).time_budget_seconds == 5
    assert SweepConfig.from_settings(settings, time_budget_seconds=900).time_budget_seconds == 240
    assert SweepConfig.from_settings(settings, batch_size=10).batch_size == 10
    assert SweepConfig.from_settings(settings, batch_size=10_000).batch_size == 500


def test_settings_defaults() -> None:
    settings = Settings()
    assert settings.retention_days == 30 and settings.stuck_after_minutes == 60
    assert settings.orphan_min_age_minutes == 60 and settings.cleanup_time_budget_seconds == 240
    assert settings.cleanup_invoker is None


def test_sweep_request_body() -> None:
    assert SweepRequest.model_validate({"timeBudgetSeconds": 0, "batchSize": 1}).batch_size == 1
    for bad in ({"batchSize": 0}, {"batchSize": 501}, {"timeBudgetSeconds": -1}, {"x": 1}):
        with pytest.raises(ValueError):
            SweepRequest.model_validate(bad)


@pytest.fixture
def cleanup_client(monkeypatch: pytest.MonkeyPatch):
    # A closed port: any attempt to reach a backend would fail loudly.
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")
    monkeypatch.setenv("CLEANUP_INVOKER", "scheduler@p.iam.gserviceaccount.com")
    get_settings.cache_clear()
    app = create_app("cleanup", str(ROOT / "functions" / "cleanup" / "main.py"), "http")
    yield app.test_client()
    get_settings.cache_clear()


def test_the_cleanup_function_answers_health_and_refuses_callers_without_a_token(
    cleanup_client,
) -> None:
    assert cleanup_client.get("/healthz").status_code == 200
    refused = cleanup_client.post("/", data=b"")
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "missing_credentials"
    assert cleanup_client.get("/").status_code == 405
