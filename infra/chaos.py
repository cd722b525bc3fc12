"""`make chaos`: a bounded soak of the whole local stack under mixed fal faults and crashes.

    python -m infra.chaos [--generations 200] [--concurrency 20] [--seed S] [--no-kill]
                          [--users 1] [--faults a,b] [--timeout SECONDS] [--output PATH]
                          [--keep]

It starts its own `LocalStack` in a temporary directory (a watchdog that first checks 8 s
after a submit, so lost webhooks are recovered within the run), issues an admin API key
(admins are not rate-limited; `--users` for more) and keeps `--concurrency` generations in
flight, submitting included, until `--generations` have been accepted. Submits carry an
Idempotency-Key and retry 503s and dropped connections, as a careful client would. Each
generation gets a fault from `FAULTS` as a prompt marker of the fal simulator
(`infra/falsim/faults.py`), or none, with a random model, image count (1..5: five FLUX
images are two fal requests), size and format; every fault kind is drawn at least once when
there are enough generations. Unless `--no-kill`, the webhook and then the dispatcher
function are crashed once each (process group killed, no graceful shutdown) while
generations are in flight, and started again `KILL_DOWNTIME` seconds later; the second crash
waits until the first function is back and `KILL_SPACING` has passed. Then it waits until
every accepted generation has ended, or `--timeout` seconds after the first submit.

It ends with a table per fault and the invariants, and exits 1 unless all hold:

- terminal: every accepted generation ended, with the outcome `FAULTS` expects for its fault
  (status and error code; a completed one has exactly its images, each index once, each
  with a thumbnail, flagged NSFW exactly when the fault says so);
- lost = 0: accepted but not terminal by the deadline, or its record missing;
- duplicate images = 0: more objects under `generations/{user}/{id}/` (or `thumbnails/…`)
  than the record has images, or two images of one record with the same index;
- fal requests per part within `Expect.requests_per_part` (1, or 2 for `lost`, whose one
  resubmit is the product's design). A part with more is excused only as "dispatcher
  killed mid-submit": one of its fal requests was accepted by the simulator no later than
  the dispatcher's crash and no dispatcher ever logged it as submitted (so the crash came
  between fal's answer and the record). Excused parts are counted and listed;
- orphan objects = 0: objects under `generations/` or `thumbnails/` that no record
  references (its record missing, or ended without naming that path; a running
  generation's unrecorded copies are reported apart), and images a record names that do
  not exist (missing objects);
- and nothing else: every submit accepted, no record or fal request this run did not ask
  for, both crashes done.

The numbers and every violation (with the generation's log lines from the stack's `logs/`)
go to `.dev/chaos-latest.json`. On a violation the stack's directory (logs included) is kept
and named; otherwise it is removed (`--keep` keeps it anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from infra.stack import PROJECT, ROOT, LocalStack

DEFAULT_GENERATIONS = 200
DEFAULT_CONCURRENCY = 20
DEFAULT_SEED = 4242
# Seconds from the first submit until submitting stops and the drain ends, whatever happens.
DEFAULT_TIMEOUT = 420.0
# At least this long is left for the drain after the last submit (within the timeout).
MIN_DRAIN = 120.0
# A generation still running this long after it was accepted frees its slot (it is then
# judged at the end like every other).
STUCK_AFTER = 120.0
WATCHDOG_FIRST_CHECK = 8.0
WATCHDOG_RECHECK = 2.0
INFERENCE_DELAY = 0.5
# How long a crashed function stays down before it is started again, and the least time
# between one function's restart and the next crash.
KILL_DOWNTIME = 3.0
KILL_SPACING = 10.0
# Which function is crashed when this share of the generations has been accepted.
KILLS = (("webhook", 0.25), ("dispatcher", 0.55))
# Admin users the generations are spread over. One by default: the api serializes one
# user's admissions, while different users' admitting transactions (each with a count query
# over its user's generations) deadlock in the Firestore emulator, which resolves that only
# by timing out: with 4 users and 20 submitting at once, admissions take 10-60 s each.
USERS = 1
TERMINAL = frozenset({"completed", "failed", "canceled"})
OUTPUT = ROOT / ".dev" / "chaos-latest.json"


# -- what each fault must lead to: the one table -------------------------------------------


@dataclass(frozen=True)
class Expect:
    status: str  # "completed" or "failed"
    codes: frozenset[str] = frozenset()  # the error codes a failure may carry
    requests_per_part: int = 1  # most fal requests one part may cost
    nsfw: bool = False  # every stored image flagged NSFW (else none)

    def describe(self) -> str:
        text = self.status
        if self.codes:
            text += " " + "|".join(sorted(self.codes))
        if self.nsfw:
            text += " (nsfw)"
        if self.requests_per_part != 1:
            text += f", ≤{self.requests_per_part} req/part"
        return text


@dataclass(frozen=True)
class Ports:
    """Stack ports a marker may name (a loopback redirect to a port that is not fal's)."""

    internal: int


@dataclass(frozen=True)
class Fault:
    name: str
    weight: int
    expect: Expect
    # The prompt marker(s) for one generation; "" for none.
    marker: Callable[[random.Random, Ports], str]


def _fixed(text: str) -> Callable[[random.Random, Ports], str]:
    return lambda rng, ports: text


COMPLETED = Expect("completed")


def _failed(*codes: str) -> Expect:
    return Expect("failed", frozenset(codes))


FAULTS: tuple[Fault, ...] = (
    Fault("none", 60, COMPLETED, _fixed("")),
    # fal_client retries a 429 once in the call; the rest are Pub/Sub redeliveries.
    Fault("submit_429", 5, COMPLETED, lambda r, p: f"[fault:submit_429={r.randint(1, 3)}]"),
    # Each 500 costs one of the subscription's 5 delivery attempts.
    Fault("submit_500", 5, COMPLETED, lambda r, p: f"[fault:submit_500={r.randint(1, 2)}]"),
    Fault("submit_422", 4, _failed("fal_rejected"), _fixed("[fault:submit_422]")),
    Fault("webhook_twice", 5, COMPLETED, _fixed("[fault:webhook_twice]")),
    Fault("webhook_burst", 5, COMPLETED, lambda r, p: f"[fault:webhook_burst={r.randint(5, 25)}]"),
    # Late past the watchdog's first check too: then the watchdog ingests, the webhook is
    # a duplicate.
    Fault("webhook_late", 5, COMPLETED, lambda r, p: f"[fault:webhook_late={r.randint(2, 12)}]"),
    Fault("webhook_out_of_order", 5, COMPLETED, _fixed("[fault:webhook_out_of_order]")),
    # No good webhook ever: the watchdog fetches the result.
    Fault("webhook_never", 5, COMPLETED, _fixed("[fault:webhook_never]")),
    Fault("webhook_bad_signature", 4, COMPLETED, _fixed("[fault:webhook_bad_signature]")),
    Fault("webhook_stale_timestamp", 4, COMPLETED, _fixed("[fault:webhook_stale_timestamp]")),
    Fault("webhook_unknown_key", 4, COMPLETED, _fixed("[fault:webhook_unknown_key]")),
    # The marker is in the prompt, so fal loses the resubmit as well: the watchdog
    # resubmits each part once (2 requests) and then fails the generation.
    Fault("lost", 4, Expect("failed", frozenset({"fal_lost_request"}), 2), _fixed("[fault:lost]")),
    Fault("status_error", 4, _failed("fal_error"), _fixed("[fault:status_error]")),
    # To a loopback port that is not the simulator's (the one insecure host allowed).
    Fault(
        "image_redirect_loopback",
        3,
        _failed("image_redirect_refused"),
        lambda r, p: f"[fault:image_redirect_loopback={p.internal}]",
    ),
    Fault(
        "image_redirect_metadata",
        3,
        _failed("image_redirect_refused"),
        _fixed("[fault:image_redirect_metadata]"),
    ),
    # Over IMAGE_DOWNLOAD_MAX_BYTES (25 MiB), streamed without a Content-Length.
    Fault("image_huge", 3, _failed("image_too_large"), _fixed("[fault:image_huge=30]")),
    # 50000x50000 declared: Pillow refuses it before decoding (over twice MAX_PIXELS).
    Fault(
        "image_bomb",
        3,
        _failed("image_too_many_pixels", "invalid_image"),
        _fixed("[fault:image_bomb]"),
    ),
    Fault(
        "image_not_image",
        3,
        _failed("invalid_image", "image_unsupported_type"),
        _fixed("[fault:image_not_image]"),
    ),
    Fault("nsfw", 4, Expect("completed", nsfw=True), _fixed("[fault:nsfw]")),
)
FAULTS_BY_NAME = {fault.name: fault for fault in FAULTS}

# (model, weight): models that need nothing but a prompt. FLUX returns at most 4 images per
# request (5 → two parts); SDXL 8.
MODELS = (("flux-dev", 4), ("flux-schnell", 3), ("flux-pro", 2), ("sdxl", 2))
SIZES = (
    ("square", 4),
    ({"width": 384, "height": 256}, 3),
    ("landscape_4_3", 1),
    ("portrait_16_9", 1),
)


def _pick(rng: random.Random, weighted: tuple[tuple[Any, int], ...]) -> Any:
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights)[0]


@dataclass
class Planned:
    number: int
    fault: str
    body: dict[str, Any]


def plan(count: int, seed: int, ports: Ports, only: frozenset[str] | None = None) -> list[Planned]:
    """The generations to submit, from the seed alone: each fault kind once (when there are
    enough), the rest drawn by weight, shuffled. `only` limits the kinds."""
    rng = random.Random(seed)
    faults = [fault for fault in FAULTS if only is None or fault.name in only]
    kinds = [fault.name for fault in faults] if count >= len(faults) else []
    weights = [fault.weight for fault in faults]
    kinds += rng.choices([fault.name for fault in faults], weights, k=count - len(kinds))
    rng.shuffle(kinds)
    planned = []
    for number, kind in enumerate(kinds):
        marker = FAULTS_BY_NAME[kind].marker(rng, ports)
        body: dict[str, Any] = {
            # Unique per generation: the simulator counts submit faults per distinct prompt.
            "prompt": f"chaos {seed}-{number} a lighthouse at dusk {marker}".strip(),
            "model": _pick(rng, MODELS),
            "numImages": rng.randint(1, 5),
            "imageSize": _pick(rng, SIZES),
            "outputFormat": rng.choice(("jpeg", "png")),
        }
        if rng.random() < 0.5:
            body["seed"] = rng.randint(0, 2**31)
        planned.append(Planned(number, kind, body))
    return planned


# -- running ---------------------------------------------------------------------------------


@dataclass
class Tracked:
    planned: Planned
    user: str
    id: str | None = None
    accepted_at: float | None = None  # time.time()
    ended_at: float | None = None
    refused: str | None = None  # the API's answer when it never accepted
    stuck: bool = False
    submit_started: float | None = None
    answer_lost: bool = False  # the POST failed, but the generation was created
    retried_503: int = 0  # 503 answers (contention) before it was accepted
    retried_transport: int = 0  # requests sent again after a connection error
    replayed: bool = False  # accepted by a retry that found the first request's generation


@dataclass
class Kill:
    function: str
    after_accepted: int
    killed_at: float | None = None
    restarted_at: float | None = None
    error: str | None = None


@dataclass
class Run:
    stack: LocalStack
    planned: list[Planned]
    concurrency: int
    timeout: float
    kills: list[Kill]
    log: Callable[[str], None]
    seed: int
    tracked: list[Tracked] = field(default_factory=list)
    started: float = 0.0
    submit_ended: float = 0.0
    drain_ended: float = 0.0


def _clients(stack: LocalStack):  # noqa: ANN202 - google clients, imported late
    """Firestore and Storage clients on the stack's emulators, for reading records/objects."""
    os.environ["FIRESTORE_EMULATOR_HOST"] = stack.env["FIRESTORE_EMULATOR_HOST"]
    os.environ["STORAGE_EMULATOR_HOST"] = stack.env["STORAGE_EMULATOR_HOST"]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore, storage

    return (
        firestore.Client(project=PROJECT),
        storage.Client(project=PROJECT, credentials=AnonymousCredentials()),
    )


def _records(db, ids: list[str]) -> dict[str, dict[str, Any]]:  # noqa: ANN001
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 100):
        refs = [db.collection("generations").document(i) for i in ids[start : start + 100]]
        for snapshot in db.get_all(refs):
            if snapshot.exists:
                found[snapshot.id] = snapshot.to_dict()
    return found


def _submit(http: httpx.Client, key: str, seed: int, tracked: Tracked, give_up: float) -> None:
    """Creates the generation as a careful client would: with an Idempotency-Key, so that a
    request whose answer was lost (a dropped keep-alive connection, a timeout) can be sent
    again without making a second generation, and retrying 503s (contention, publish
    failure) after their Retry-After, until `give_up`."""
    tracked.submit_started = time.time()
    headers = {
        "Authorization": f"Bearer {key}",
        "Idempotency-Key": f"chaos-{seed}-{tracked.planned.number}",
    }
    while True:
        try:
            response = http.post(
                "/v1/images/generations", json=tracked.planned.body, headers=headers
            )
        except httpx.TransportError as exc:
            tracked.refused = f"{type(exc).__name__}: {exc}"
            tracked.retried_transport += 1
            if time.time() > give_up:
                return
            time.sleep(0.5)
            continue
        if response.status_code == 202:
            tracked.id = response.json()["id"]
            tracked.accepted_at = time.time()
            tracked.replayed = response.headers.get("idempotent-replayed") == "true"
            return
        tracked.refused = f"{response.status_code} {response.text[:300]}"
        if response.status_code != 503 or time.time() > give_up:
            return
        tracked.retried_503 += 1
        time.sleep(min(float(response.headers.get("retry-after") or 1), 2.0))


def _crash_and_restart(stack: LocalStack, kill: Kill, log: Callable[[str], None]) -> None:
    """Crashes a function: `Managed.stop` with no grace sends its process group SIGTERM and
    at once SIGKILL, so requests in flight are cut off mid-way (open Firestore transactions
    included). Then it waits and starts the function again on the same port."""
    try:
        kill.killed_at = time.time()
        stack.processes[kill.function].stop(grace_seconds=0)
        log(f"  !! {kill.function} killed; down for {KILL_DOWNTIME:.0f} s")
        time.sleep(KILL_DOWNTIME)
        stack.start_function(kill.function)
        kill.restarted_at = time.time()
        log(f"  !! {kill.function} restarted ({kill.restarted_at - kill.killed_at:.1f} s down)")
    except Exception as exc:  # reported as a violation
        kill.error = f"{type(exc).__name__}: {exc}"
        log(f"  !! restarting {kill.function} failed: {kill.error}")


def soak(run: Run, keys: list[tuple[str, str]], db) -> None:  # noqa: ANN001
    """Keeps `run.concurrency` generations in flight (submitting included) until all are
    submitted or the time is up, crashes functions on the way, then drains."""
    stack, log = run.stack, run.log
    http = httpx.Client(
        base_url=stack.env["API_URL"],
        timeout=120.0,
        limits=httpx.Limits(max_connections=run.concurrency + 4),
    )
    slots = threading.Semaphore(run.concurrency)
    lock = threading.Lock()
    in_flight: dict[str, Tracked] = {}
    counts: Counter[str] = Counter()
    stop = threading.Event()
    draining = threading.Event()
    run.started = time.time()
    deadline = run.started + run.timeout
    # Submitting (503s retried) stops here, leaving the rest of the time to drain.
    submit_deadline = deadline - min(MIN_DRAIN, 0.4 * run.timeout)

    def crash() -> None:
        """The crashes, in order: each once enough generations were accepted, and not
        before the previous one's function is back and KILL_SPACING has passed."""
        for kill in run.kills:
            while counts["accepted"] < kill.after_accepted:
                if stop.wait(0.2):
                    return
            _crash_and_restart(stack, kill, log)
            if stop.wait(KILL_SPACING):
                return

    def acquire_slot() -> bool:
        while time.time() <= submit_deadline:
            if slots.acquire(timeout=1.0):
                if time.time() <= submit_deadline:
                    return True
                slots.release()
        return False

    def submit(tracked: Tracked) -> None:
        _, key = keys[tracked.planned.number % len(keys)]
        try:
            _submit(http, key, run.seed, tracked, give_up=submit_deadline)
        except Exception as exc:  # a harness failure must not leave a slot taken
            tracked.refused = f"{type(exc).__name__}: {exc}"
        if tracked.id is None:
            log(
                f"  refused: #{tracked.planned.number} ({tracked.planned.fault}): {tracked.refused}"
            )
            slots.release()
            return
        tracked.refused = None
        with lock:
            in_flight[tracked.id] = tracked
            counts["accepted"] += 1

    def poll() -> None:
        while not stop.wait(0.5):
            with lock:
                ids = list(in_flight)
            if not ids:
                continue
            try:
                records = _records(db, ids)
            except Exception as exc:  # the emulator is busy: next round
                log(f"  (poll failed: {type(exc).__name__})")
                continue
            now = time.time()
            with lock:
                for generation_id in ids:
                    tracked = in_flight[generation_id]
                    record = records.get(generation_id)
                    if record is not None and record.get("status") in TERMINAL:
                        tracked.ended_at = now
                        del in_flight[generation_id]
                        if not tracked.stuck:
                            slots.release()
                    elif not draining.is_set() and now - (tracked.accepted_at or now) > STUCK_AFTER:
                        # Judged at the end (and watched again while draining); its slot
                        # goes to the next generation.
                        tracked.stuck = True
                        del in_flight[generation_id]
                        slots.release()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    crasher = threading.Thread(target=crash, daemon=True)
    crasher.start()
    last_report = 0.0
    submitters = ThreadPoolExecutor(max_workers=run.concurrency, thread_name_prefix="submit")
    try:
        for planned in run.planned:
            if not acquire_slot():
                break
            tracked = Tracked(planned, keys[planned.number % len(keys)][0])
            run.tracked.append(tracked)
            submitters.submit(submit, tracked)
            now = time.time()
            if now - last_report >= 10:
                last_report = now
                with lock:
                    running = len(in_flight)
                log(
                    f"  {now - run.started:5.0f} s: {counts['accepted']} accepted, "
                    f"{running} in flight, {len(run.planned) - len(run.tracked)} to go"
                )
        submitters.shutdown(wait=True)
        run.submit_ended = time.time()
        if len(run.tracked) < len(run.planned):
            log(f"  submitting stopped at the deadline: {len(run.planned) - len(run.tracked)} left")
        # Drain: until every accepted generation has ended, or the time is up. Generations
        # that overstayed STUCK_AFTER are watched again here.
        drain_deadline = max(deadline, run.submit_ended + 30.0)
        draining.set()
        with lock:
            for tracked in run.tracked:
                if tracked.id and tracked.stuck and tracked.ended_at is None:
                    in_flight[tracked.id] = tracked
        while time.time() < drain_deadline:
            with lock:
                running = len(in_flight)
            if not running:
                break
            now = time.time()
            if now - last_report >= 30:
                last_report = now
                with lock:
                    few = ", ".join(sorted(in_flight)[:3]) if running <= 3 else ""
                log(
                    f"  {now - run.started:5.0f} s: draining, {running} still running"
                    + (f" ({few})" if few else "")
                )
            time.sleep(0.5)
        run.drain_ended = time.time()
    finally:
        stop.set()
        poller.join(timeout=5)
        crasher.join(timeout=60)
        submitters.shutdown(wait=False, cancel_futures=True)
        http.close()


# -- judging ---------------------------------------------------------------------------------


def _part_of(request: dict[str, Any]) -> tuple[str | None, int | None]:
    query = parse_qs(urlsplit(request.get("webhook_url") or "").query)
    gid = query.get("gid", [None])[0]
    part = query.get("part", [None])[0]
    return gid, int(part) if part is not None and part.isdigit() else None


def _owner(name: str) -> str | None:
    """The generation id in `{generations|thumbnails}/{user}/{generation}/{file}`."""
    parts = name.split("/")
    return parts[2] if len(parts) == 4 else None


def _log_lines(logs_dir: Path) -> list[tuple[str, str]]:
    """(process, line) for every line of every process log."""
    lines = []
    for path in sorted(logs_dir.glob("*.log")):
        process = path.stem
        for line in path.read_text(errors="replace").splitlines():
            lines.append((process, line))
    return lines


def _submitted_by_a_dispatcher(lines: list[tuple[str, str]]) -> set[str]:
    """fal request ids a dispatcher recorded (it logs "part submitted to fal" after that)."""
    ids = set()
    for process, line in lines:
        if process != "dispatcher" or "part submitted to fal" not in line:
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("falRequestId"):
                ids.add(entry["falRequestId"])
    return ids


@dataclass
class Verdict:
    generation_id: str | None
    number: int
    fault: str
    prompt: str
    num_images: int
    outcome: str  # completed | failed:<code> | canceled | lost:<status> | missing | refused
    expected: str
    problems: list[str] = field(default_factory=list)
    fal_requests: dict[int, list[str]] = field(default_factory=dict)
    seconds: float | None = None
    evidence: list[str] = field(default_factory=list)
    # Ended as its fault says (status, code; a completed one with exactly its images).
    outcome_ok: bool = False
    # Functions crashed while it was running.
    crashes: list[str] = field(default_factory=list)

    @property
    def wrong(self) -> bool:
        return bool(self.problems)

    @property
    def terminal(self) -> bool:
        return self.outcome.split(":")[0] in TERMINAL

    @property
    def lost(self) -> bool:
        return self.outcome.startswith("lost") or self.outcome == "missing"


@dataclass
class Report:
    verdicts: list[Verdict]
    invariants: dict[str, float]
    excused_parts: list[str]
    unattributed_requests: list[str]
    orphans: list[str]
    missing_objects: list[str]
    kills: list[Kill]
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


def judge(run: Run, db, gcs) -> Report:  # noqa: ANN001
    stack = run.stack
    # Every record in the stack is this run's. One whose POST answer never came (a client
    # timeout) is matched to its planned generation by the number in its prompt.
    records = {
        snapshot.id: snapshot.to_dict() for snapshot in db.collection("generations").stream()
    }
    tracked_ids = {t.id for t in run.tracked if t.id}
    by_number = {t.planned.number: t for t in run.tracked}
    prefix = re.compile(rf"^chaos {run.seed}-(\d+) ")
    for generation_id, record in records.items():
        match = prefix.match(record.get("prompt", ""))
        tracked = by_number.get(int(match.group(1))) if match else None
        if generation_id not in tracked_ids and tracked is not None and tracked.id is None:
            tracked.id = generation_id
            tracked.answer_lost = True
    accepted = [t for t in run.tracked if t.id is not None]
    trust = ssl.create_default_context(capath=stack.env["SSL_CERT_DIR"])
    with httpx.Client(base_url=stack.env["FAL_SIM_URL"], verify=trust, timeout=30.0) as sim:
        sim_requests = sim.get("/_sim/requests").json()
    bucket = gcs.bucket(stack.env["IMAGES_BUCKET"])
    objects = {blob.name for blob in gcs.list_blobs(bucket)}
    records_of_others = sorted(set(records) - {t.id for t in accepted})
    lines = _log_lines(stack.state_dir / "logs")
    recorded_by_dispatcher = _submitted_by_a_dispatcher(lines)
    dispatcher_kills = [
        k.killed_at for k in run.kills if k.function == "dispatcher" and k.killed_at
    ]

    by_part: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    unattributed = []
    ours = {t.id for t in accepted}
    for request in sim_requests:
        gid, part = _part_of(request)
        if gid is not None and gid in ours and part is not None:
            by_part[(gid, part)].append(request)
        else:
            unattributed.append(request["request_id"])

    referenced: set[str] = set()
    for record in records.values():
        for image in record.get("images") or []:
            referenced.add(image["path"])
            if image.get("thumbnail_path"):
                referenced.add(image["thumbnail_path"])
    missing = sorted(referenced - objects)
    # An object no record names is an orphan, unless its generation is still running (a copy
    # not yet recorded: that generation is counted as lost, not its objects as orphans).
    unfinished = {i for i, r in records.items() if r.get("status") not in TERMINAL}
    unrecorded = sorted(o for o in objects - referenced if _owner(o) in unfinished)
    orphans = sorted(o for o in objects - referenced if _owner(o) not in unfinished)

    verdicts: list[Verdict] = []
    excused: list[str] = []
    duplicates = 0
    over_requests = 0
    for tracked in run.tracked:
        fault = FAULTS_BY_NAME[tracked.planned.fault]
        expect = fault.expect
        verdict = Verdict(
            tracked.id,
            tracked.planned.number,
            fault.name,
            tracked.planned.body["prompt"],
            tracked.planned.body["numImages"],
            "refused",
            expect.describe(),
        )
        verdicts.append(verdict)
        for kill in run.kills:
            began = tracked.submit_started or 0.0
            if (
                kill.killed_at
                and began <= (kill.restarted_at or kill.killed_at) + 5
                and (tracked.ended_at is None or tracked.ended_at >= kill.killed_at)
            ):
                verdict.crashes.append(kill.function)
        if tracked.id is None:
            verdict.problems.append(f"never accepted: {tracked.refused}")
            continue
        if tracked.ended_at and tracked.accepted_at:
            verdict.seconds = round(tracked.ended_at - tracked.accepted_at, 2)
        record = records.get(tracked.id)
        if record is None:
            verdict.outcome = "missing"
            verdict.problems.append("accepted, but its record does not exist")
            continue
        status = record["status"]
        parts = record.get("parts") or []
        error = record.get("error") or {}
        if status == "failed":
            verdict.outcome = f"failed:{error.get('code')}"
        elif status in TERMINAL:
            verdict.outcome = status
        else:
            states = ",".join(p.get("status", "?") for p in parts)
            verdict.outcome = f"lost:{status}"
            verdict.problems.append(f"not terminal by the deadline: {status} (parts {states})")
        outcome_problems = len(verdict.problems)
        if status in TERMINAL:
            if status != expect.status:
                verdict.problems.append(
                    f"ended {status} {error.get('code') or ''}, expected {expect.describe()}"
                    + (f" ({error.get('message', '')[:200]})" if error else "")
                )
            elif status == "failed" and error.get("code") not in expect.codes:
                verdict.problems.append(
                    f"failed with {error.get('code')!r} ({error.get('message', '')[:200]}), "
                    f"expected {sorted(expect.codes)}"
                )
        # Images: exactly the generation's, each index once, each with a thumbnail.
        images = record.get("images") or []
        indices = [image["index"] for image in images]
        collisions = len(indices) - len(set(indices))
        if collisions:
            duplicates += collisions
            verdict.problems.append(f"{collisions} images share an index: {sorted(indices)}")
        user = record["user_id"]
        # Duplicates: more objects under the generation's prefixes than the record has
        # images (an unfinished generation's copies are judged by its being lost instead).
        prefixes = (
            (f"generations/{user}/{tracked.id}/", "image"),
            (f"thumbnails/{user}/{tracked.id}/", "thumbnail"),
        )
        for object_prefix, kind in prefixes if status in TERMINAL else ():
            stored = sorted(name for name in objects if name.startswith(object_prefix))
            extra = len(stored) - len(images)
            if extra > 0:
                duplicates += extra
                verdict.problems.append(
                    f"{len(stored)} {kind} objects for {len(images)} images: {stored}"
                )
        if status == "completed":
            if sorted(indices) != list(range(record["num_images"])):
                verdict.problems.append(
                    f"completed with images {sorted(indices)} of {record['num_images']}"
                )
            if any(not image.get("thumbnail_path") for image in images):
                verdict.problems.append("an image has no thumbnail")
            flags = {bool(image.get("nsfw")) for image in images}
            if flags and flags != {expect.nsfw}:
                verdict.problems.append(f"nsfw flags {flags}, expected all {expect.nsfw}")
        verdict.outcome_ok = status in TERMINAL and len(verdict.problems) == outcome_problems
        # fal requests per part.
        for index in range(len(parts)):
            requests = sorted(by_part.get((tracked.id, index), []), key=lambda r: r["submitted_at"])
            verdict.fal_requests[index] = [r["request_id"] for r in requests]
            if len(requests) <= expect.requests_per_part:
                continue
            mid_submit = [
                r["request_id"]
                for r in requests
                if r["request_id"] not in recorded_by_dispatcher
                and any(r["submitted_at"] <= killed + 0.5 for killed in dispatcher_kills)
                and any(r["submitted_at"] >= killed - 60 for killed in dispatcher_kills)
            ]
            if mid_submit:
                excused.append(
                    f"{tracked.id} part {index}: {len(requests)} fal requests; "
                    f"{mid_submit} accepted by fal but never recorded before the dispatcher crash"
                )
                continue
            over_requests += 1
            verdict.problems.append(
                f"part {index} cost {len(requests)} fal requests "
                f"(at most {expect.requests_per_part}): {verdict.fal_requests[index]}"
            )
        if verdict.problems:
            verdict.evidence = _evidence(lines, tracked.id, verdict.fal_requests)

    lost = sum(1 for v in verdicts if v.lost)
    terminal = sum(1 for v in verdicts if v.terminal)
    wrong = sum(1 for v in verdicts if v.terminal and not v.outcome_ok)
    invariants = {
        "accepted": len(accepted),
        "refused": len(run.tracked) - len(accepted),
        "accepted_but_answer_lost": sum(1 for t in accepted if t.answer_lost),
        "never_submitted": len(run.planned) - len(run.tracked),
        "terminal": terminal,
        "lost": lost,
        "wrong_outcome": wrong,
        "duplicate_images": duplicates,
        "parts_over_request_limit": over_requests,
        "parts_excused_dispatcher_killed_mid_submit": len(excused),
        "orphan_objects": len(orphans),
        "missing_objects": len(missing),
        "unrecorded_objects_of_unfinished": len(unrecorded),
        "unattributed_fal_requests": len(unattributed),
        "records_of_no_submission": len(records_of_others),
        "submit_503_retries": sum(t.retried_503 for t in run.tracked),
        "submit_transport_retries": sum(t.retried_transport for t in run.tracked),
        "submit_replayed": sum(1 for t in accepted if t.replayed),
        "max_admission_seconds": round(
            max(
                (
                    t.accepted_at - t.submit_started
                    for t in accepted
                    if t.submit_started and t.accepted_at is not None
                ),
                default=0.0,
            ),
            1,
        ),
        "fal_requests": len(sim_requests),
        "objects": len(objects),
    }
    violations = []
    if invariants["refused"] or invariants["never_submitted"]:
        violations.append(
            f"{invariants['refused']} refused and {invariants['never_submitted']} never "
            "submitted (in time)"
        )
    if terminal != len(accepted):
        violations.append(f"terminal {terminal} != accepted {len(accepted)}")
    if lost:
        violations.append(f"lost = {lost}")
    if wrong:
        violations.append(f"{wrong} generations ended with an outcome their fault does not explain")
    if duplicates:
        violations.append(f"duplicate images = {duplicates}")
    if over_requests:
        violations.append(f"{over_requests} parts cost more fal requests than allowed")
    if orphans:
        violations.append(f"orphan objects = {len(orphans)}")
    if missing:
        violations.append(f"missing objects = {len(missing)} (a record names an absent object)")
    if unattributed:
        violations.append(f"{len(unattributed)} fal requests name no generation of this run")
    if records_of_others:
        violations.append(f"{len(records_of_others)} records no submit of this run made")
    for kill in run.kills:
        if kill.error or kill.killed_at is None:
            violations.append(f"crash of {kill.function}: {kill.error or 'never happened'}")
    return Report(
        verdicts, invariants, excused, unattributed, orphans, missing, run.kills, violations
    )


_PRODUCT = ("api", "dispatcher", "webhook", "watchdog", "deadletter", "cleanup", "relay")
_STAMP = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})[.,](\d{3})")
_FIELDS = ("part", "parts", "code", "falRequestId", "check", "verdict", "reason", "status")


def _evidence(
    lines: list[tuple[str, str]], generation_id: str, fal_requests: dict[int, list[str]]
) -> list[str]:
    """The stack's log lines about a generation (its id, or one of its fal request ids), in
    time order: every line of the product's functions, and the simulator's own lines but
    its access log (the watchdog's status polls would drown the rest)."""
    needles = [generation_id, *(r for ids in fal_requests.values() for r in ids)]
    found = []
    for process, line in lines:
        if not any(needle in line for needle in needles):
            continue
        if process not in _PRODUCT and (process != "falsim" or "falsim.server" in line):
            continue
        stamp = _STAMP.search(line)
        when = f"{stamp.group(2)}.{stamp.group(3)}" if stamp else "?"
        text = line
        with contextlib.suppress(ValueError, AttributeError):
            entry = json.loads(line)
            extra = " ".join(f"{k}={entry[k]}" for k in _FIELDS if entry.get(k) not in (None, ""))
            text = f"{entry.get('severity', '')} {entry.get('message', '')} {extra}".strip()
            if entry.get("stack_trace"):
                text += " | " + entry["stack_trace"].strip().splitlines()[-1]
        found.append((when, f"{when} {process}: {text[:400]}"))
    return [text for _, text in sorted(found)][:80]


# -- reporting -------------------------------------------------------------------------------


def table(report: Report) -> str:
    rows = [
        (
            "fault",
            "n",
            "completed",
            "failed (expected)",
            "wrong",
            "lost",
            "p50 s",
            "max s",
            "expected",
        )
    ]
    by_fault: dict[str, list[Verdict]] = defaultdict(list)
    for verdict in report.verdicts:
        by_fault[verdict.fault].append(verdict)
    totals: Counter[str] = Counter()
    for fault in FAULTS:
        verdicts = by_fault.get(fault.name, [])
        if not verdicts:
            continue
        ok = [v for v in verdicts if v.outcome_ok]
        completed = sum(1 for v in ok if v.outcome == "completed")
        failed_ok = sum(1 for v in ok if v.outcome.startswith("failed"))
        lost = sum(1 for v in verdicts if v.lost)
        wrong = sum(1 for v in verdicts if not v.outcome_ok and not v.lost)
        codes = Counter(v.outcome.split(":", 1)[1] for v in ok if v.outcome.startswith("failed"))
        seconds = sorted(v.seconds for v in verdicts if v.seconds is not None)
        p50 = f"{seconds[len(seconds) // 2]:.1f}" if seconds else "-"
        worst = f"{seconds[-1]:.1f}" if seconds else "-"
        failed_text = str(failed_ok) + (
            " (" + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())) + ")" if codes else ""
        )
        rows.append(
            (
                fault.name,
                str(len(verdicts)),
                str(completed),
                failed_text,
                str(wrong),
                str(lost),
                p50,
                worst,
                fault.expect.describe(),
            )
        )
        totals.update(
            n=len(verdicts), completed=completed, failed=failed_ok, wrong=wrong, lost=lost
        )
    rows.append(
        (
            "total",
            str(totals["n"]),
            str(totals["completed"]),
            str(totals["failed"]),
            str(totals["wrong"]),
            str(totals["lost"]),
            "",
            "",
            "",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for number, row in enumerate(rows):
        out.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if number == 0 or number == len(rows) - 2:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def invariant_lines(report: Report) -> str:
    i = report.invariants
    mark = lambda bad: "FAIL" if bad else "ok"  # noqa: E731
    lines = [
        f"{mark(i['terminal'] != i['accepted'])}  terminal {i['terminal']} / accepted "
        f"{i['accepted']} (refused {i['refused']}, never submitted {i['never_submitted']})",
        f"{mark(i['wrong_outcome'])}  outcomes the fault does not explain = {i['wrong_outcome']}",
        f"{mark(i['lost'])}  lost = {i['lost']}",
        f"{mark(i['duplicate_images'])}  duplicate images = {i['duplicate_images']}",
        f"{mark(i['parts_over_request_limit'])}  parts over their fal request limit = "
        f"{i['parts_over_request_limit']} (excused, dispatcher killed mid-submit: "
        f"{i['parts_excused_dispatcher_killed_mid_submit']}; {i['fal_requests']} fal requests)",
        f"{mark(i['orphan_objects'])}  orphan objects = {i['orphan_objects']} "
        f"(of {i['objects']}); missing objects = {i['missing_objects']}; objects of "
        f"unfinished generations not (yet) recorded = {i['unrecorded_objects_of_unfinished']}",
        f"{mark(i['unattributed_fal_requests'])}  fal requests of no generation = "
        f"{i['unattributed_fal_requests']}",
        f"{mark(i['records_of_no_submission'])}  records of no submission = "
        f"{i['records_of_no_submission']}",
        f"info  admissions: {i['submit_503_retries']} answers 503 and "
        f"{i['submit_transport_retries']} connection errors retried "
        f"({i['submit_replayed']} answered by idempotent replay), slowest accepted after "
        f"{i['max_admission_seconds']} s",
    ]
    for kill in report.kills:
        if kill.killed_at and kill.restarted_at:
            lines.append(
                f"{mark(kill.error)}  {kill.function} crashed after {kill.after_accepted} "
                f"accepted, back after {kill.restarted_at - kill.killed_at:.1f} s"
            )
        else:
            lines.append(f"FAIL  {kill.function} crash: {kill.error or 'did not happen'}")
    return "\n".join(lines)


def details(report: Report, evidence_lines: int = 20) -> str:
    out = []
    for verdict in report.verdicts:
        if not verdict.wrong:
            continue
        out.append(
            f"\n#{verdict.number} {verdict.generation_id} fault={verdict.fault} "
            f"images={verdict.num_images} outcome={verdict.outcome} expected={verdict.expected}"
            + (
                f" (running during the {' and '.join(verdict.crashes)} crash)"
                if verdict.crashes
                else ""
            )
        )
        out.extend(f"    - {problem}" for problem in verdict.problems)
        out.append(f"    fal requests per part: {verdict.fal_requests}")
        for line in verdict.evidence[:evidence_lines]:
            out.append(f"    | {line[:300]}")
        if len(verdict.evidence) > evidence_lines:
            out.append(f"    | … {len(verdict.evidence) - evidence_lines} more lines in the report")
    for text in report.excused_parts:
        out.append(f"\nexcused: {text}")
    for name in report.orphans[:20]:
        out.append(f"orphan object: {name}")
    for name in report.missing_objects[:20]:
        out.append(f"missing object: {name}")
    for request_id in report.unattributed_requests[:20]:
        out.append(f"fal request of no generation: {request_id}")
    return "\n".join(out)


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.chaos", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--generations", type=int, default=DEFAULT_GENERATIONS)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--no-kill", action="store_true", help="crash no function")
    parser.add_argument("--users", type=int, default=USERS, help="admin users submitting")
    parser.add_argument(
        "--faults", help="only these fault kinds, comma-separated (default: all of FAULTS)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds from the first submit to the end of the drain "
        f"(default {DEFAULT_TIMEOUT:.0f})",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the JSON report")
    parser.add_argument("--keep", action="store_true", help="keep the stack's directory")
    args = parser.parse_args(argv)
    if args.generations < 1 or args.concurrency < 1 or args.users < 1:
        parser.error("--generations, --concurrency and --users must be at least 1")
    only = frozenset(args.faults.split(",")) if args.faults else None
    if only is not None and not only <= set(FAULTS_BY_NAME):
        parser.error(
            f"unknown faults {sorted(only - set(FAULTS_BY_NAME))}; known: {list(FAULTS_BY_NAME)}"
        )

    def log(line: str) -> None:
        print(line, flush=True)

    began = time.time()
    state_dir = Path(tempfile.mkdtemp(prefix="imagegen-chaos-"))
    stack = LocalStack(
        state_dir=state_dir,
        inference_delay=INFERENCE_DELAY,
        watchdog_first_check=WATCHDOG_FIRST_CHECK,
        watchdog_recheck=WATCHDOG_RECHECK,
    )
    keep = args.keep
    report: Report | None = None
    try:
        log(f"starting a local stack in {state_dir} ...")
        stack.start()
        log(f"stack up in {time.time() - began:.1f} s")
        db, gcs = _clients(stack)
        keys = [
            (f"chaos-{n}", stack.create_api_key(f"chaos-{n}", "admin")) for n in range(args.users)
        ]
        planned = plan(args.generations, args.seed, Ports(internal=stack.ports["firestore"]), only)
        kills = (
            []
            if args.no_kill
            else [Kill(name, max(1, round(share * args.generations))) for name, share in KILLS]
        )
        mix = Counter(p.fault for p in planned)
        log(
            f"soak: {args.generations} generations, {args.concurrency} at a time, seed "
            f"{args.seed}; crashes: "
            + (", ".join(f"{k.function} after {k.after_accepted}" for k in kills) or "none")
        )
        log("  mix: " + ", ".join(f"{name} {n}" for name, n in mix.most_common()))
        run = Run(stack, planned, args.concurrency, args.timeout, kills, log, args.seed)
        soak(run, keys, db)
        report = judge(run, db, gcs)
        elapsed = time.time() - began
        log("")
        log(table(report))
        log("")
        log(invariant_lines(report))
        text = details(report)
        if text:
            log(text)
        log(
            f"\nsoak {run.drain_ended - run.started:.0f} s (submitting "
            f"{run.submit_ended - run.started:.0f} s), {elapsed:.0f} s in all"
        )
        if not report.ok:
            keep = True
        _write(args.output, args, run, report, elapsed, state_dir if keep else None)
        log(f"report: {args.output}")
    except BaseException:
        keep = True
        raise
    finally:
        stack.stop()
        if keep:
            log(f"stack directory kept (logs in {state_dir / 'logs'})")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
    if report is None or not report.ok:
        for violation in report.violations if report else ["no report"]:
            print(f"VIOLATION: {violation}", file=sys.stderr)
        return 1
    log("chaos: every invariant holds")
    return 0


def _write(
    path: Path,
    args: argparse.Namespace,
    run: Run,
    report: Report,
    elapsed: float,
    kept: Path | None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "ok": report.ok,
        "config": {
            "generations": args.generations,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "kill": not args.no_kill,
            "timeout": args.timeout,
            "watchdog_first_check": WATCHDOG_FIRST_CHECK,
            "inference_delay": INFERENCE_DELAY,
            "kill_downtime": KILL_DOWNTIME,
        },
        "seconds": {
            "total": round(elapsed, 1),
            "soak": round(run.drain_ended - run.started, 1),
            "submitting": round(run.submit_ended - run.started, 1),
        },
        "expected": {fault.name: fault.expect.describe() for fault in FAULTS},
        "table": table(report).splitlines(),
        "invariants": report.invariants,
        "violations": report.violations,
        "kills": [asdict(kill) for kill in report.kills],
        "excused_parts": report.excused_parts,
        "orphans": report.orphans,
        "missing_objects": report.missing_objects,
        "unattributed_fal_requests": report.unattributed_requests,
        "wrong": [asdict(v) for v in report.verdicts if v.wrong],
        "generations": [
            {k: v for k, v in asdict(verdict).items() if k != "evidence"}
            for verdict in report.verdicts
        ],
        "stack_dir": str(kept) if kept else None,
    }
    path.write_text(json.dumps(document, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
