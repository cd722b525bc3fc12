"""`make fuzz`: schemathesis against the API's own description, on a fresh local stack.

    python -m infra.fuzz [--max-examples N] [--seed S] [--time-limit SECONDS] [--no-coverage]

The API serves `GET /openapi.json`, generated from the pydantic models that validate its
requests and shape its answers. Schemathesis reads it and makes requests for every
operation in three phases:

- edges (ours, ~120 requests): what schemathesis does not generate: JSON nested 30,000
  deep, NaN and 1e400, lone surrogates, bodies past the size limit, other media types,
  path ids with a newline or a slash, date-times at the ends of the calendar;
- coverage (~1,350): schemathesis's deterministic cases: boundary values, missing and
  unknown fields, wrong types, methods an operation does not take;
- fuzzing: `--max-examples` random requests in all, half valid and half invalid, spread
  over the operations (those with a body get a larger share). Path parameters are made up
  or the ids of real records (generations, a batch, a LoRA, an API key) created first.

Coverage and fuzzing requests carry one of four credentials: a plain user's API key, an
administrator's, an invalid one (a made-up key, an unsigned JWT, the wrong scheme) or none;
the edges phase uses the administrator's, which passes every gate. Each answer must
pass `not_a_server_error` (no 5xx, whatever the input), `status_code_conformance` (a status
the operation documents), `content_type_conformance`, `response_schema_conformance` (the
body matches the documented schema) and `unsupported_method` (405 for a method an
operation does not take). Generated inputs depend only on `--seed`.

The exit status is non-zero on any failure; each distinct failure is listed once with a
curl command that reproduces it (see README.md, "Fuzzing").
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import math
import re
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

DEFAULT_MAX_EXAMPLES = 1000
DEFAULT_SEED = 20260
DEFAULT_TIME_LIMIT = 480.0
# A request may legitimately wait: `Prefer: wait=60` and seed 000's synchronous endpoint.
REQUEST_TIMEOUT = 75.0

# Headers `requests` and schemathesis add by themselves: curl sends its own.
TRANSPORT_HEADERS = frozenset(
    {"user-agent", "accept", "accept-encoding", "connection", "content-length"}
    | {"x-schemathesis-testcaseid"}
)
KINDS = ("user", "admin", "invalid", "none")
# Valid keys carry most of the traffic: without one, an operation stops at its 401.
FUZZ_KINDS = ("user",) * 5 + ("admin",) * 3 + ("invalid", "none")
COVERAGE_KINDS = ("user", "admin", "user", "admin", "user", "admin", "invalid", "none")
INVALID_AUTHORIZATIONS = (
    "Bearer igk_" + "x" * 43,  # an API key's shape, never issued
    "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",  # a JWT's shape, not signed
    "Basic Zm9vOmJhcg==",  # the wrong scheme
    "Bearer",  # a scheme and nothing else
)
# The edges phase: inputs schemathesis does not make, sent to every operation they fit.
EDGE_BODIES = {
    "JSON nested 30,000 deep": b"[" * 30_000 + b"]" * 30_000,
    "non-finite numbers": b'{"prompt": "x", "guidanceScale": NaN, "seed": Infinity}',
    "a number past float": b'{"prompt": "x", "numImages": 1e400, "defaultScale": -1e400}',
    "a lone surrogate": b'{"prompt": "\\ud800", "userId": "\\udfff"}',
    "not UTF-8": b'{"prompt": "\xff\xfe"}',
    "empty": b"",
    "over every size limit": b'{"prompt": "' + b"a" * (17 * 64 * 1024) + b'"}',
}
EDGE_CONTENT_TYPES = (
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
)
EDGE_PATH_IDS = ("a\nb", "a/b", "x" * 300, "é", "\x00", " ")
EDGE_DATE_TIMES = (
    "0001-01-01T00:00:00+01:00",  # no UTC moment
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
)
# Operations run in this order (deletions last), so that deleting a seeded record does not
# turn the other operations' requests about it into 404s.
METHOD_ORDER = {"GET": 0, "POST": 1, "PUT": 1, "PATCH": 1, "DELETE": 2}
# Every valid request to seed 000's synchronous endpoint waits for a generation to end.
COSTLY = {"POST /api/generate-image": 0.5}


@dataclass(frozen=True)
class Credential:
    kind: str  # one of KINDS
    authorization: str | None

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}


class Credentials:
    def __init__(self, user_key: str, admin_key: str) -> None:
        self.valid = {"user": f"Bearer {user_key}", "admin": f"Bearer {admin_key}"}

    def get(self, kind: str, variant: int = 0) -> Credential:
        if kind in self.valid:
            return Credential(kind, self.valid[kind])
        if kind == "invalid":
            return Credential(kind, INVALID_AUTHORIZATIONS[variant % len(INVALID_AUTHORIZATIONS)])
        return Credential("none", None)


@dataclass
class Finding:
    phase: str
    operation: str
    credential: str
    inputs: str  # "positive data", "negative data", or what an edge case is
    status: int | None
    titles: tuple[str, ...]
    message: str
    curl: str


@dataclass
class OperationStats:
    label: str
    requests: Counter[str] = field(default_factory=Counter)  # by credential kind
    statuses: Counter[int] = field(default_factory=Counter)
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.requests.values())


@dataclass
class Report:
    operations: list[OperationStats]
    findings: list[Finding]
    seed: int
    elapsed: float
    out_of_time: bool = False
    phase_totals: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(op.total for op in self.operations)

    @property
    def ok(self) -> bool:
        return not self.findings and not any(op.errors for op in self.operations)

    def table(self) -> str:
        width = max(len(op.label) for op in self.operations)
        head = f"{'operation':<{width}}  {'requests':>8}  " + "  ".join(f"{k:>7}" for k in KINDS)
        head += f"  {'failures':>8}  statuses"
        lines = [head, "-" * len(head)]
        for op in self.operations:
            statuses = " ".join(f"{s}×{n}" for s, n in sorted(op.statuses.items()))
            lines.append(
                f"{op.label:<{width}}  {op.total:>8}  "
                + "  ".join(f"{op.requests[k]:>7}" for k in KINDS)
                + f"  {op.failures:>8}  {statuses}"
            )
        lines.append("-" * len(head))
        totals = Counter[str]()
        for op in self.operations:
            totals.update(op.requests)
        lines.append(
            f"{'total':<{width}}  {self.total:>8}  "
            + "  ".join(f"{totals[k]:>7}" for k in KINDS)
            + f"  {sum(op.failures for op in self.operations):>8}"
        )
        return "\n".join(lines)

    def summary(self) -> str:
        phases = ", ".join(f"{n} {p}" for p, n in self.phase_totals.items())
        text = f"{self.total} requests ({phases}) in {self.elapsed:.1f} s, seed {self.seed}"
        if self.out_of_time:
            text += "; stopped at the time limit"
        return text

    def failures_text(self) -> str:
        """Each distinct failure once (same operation, checks and status), with a curl."""
        groups: dict[tuple[str, tuple[str, ...], int | None], list[Finding]] = {}
        for finding in self.findings:
            key = (finding.operation, finding.titles, finding.status)
            groups.setdefault(key, []).append(finding)
        out = []
        for (operation, titles, status), group in groups.items():
            first = group[0]
            out.append(
                f"✗ {operation} → {status}: {', '.join(titles)} ({len(group)}×; first in "
                f"the {first.phase} phase: {first.inputs}, {first.credential} credentials)"
                f"\n{_indent(first.message.strip())}\n\n  Reproduce with:\n    {first.curl}"
            )
        for op in self.operations:
            out += [f"✗ {op.label}: could not be fuzzed: {error}" for error in op.errors]
        return "\n\n".join(out)


def _indent(text: str, prefix: str = "  ", max_lines: int = 40) -> str:
    return "\n".join(prefix + line for line in text.splitlines()[:max_lines])


# -- real records ----------------------------------------------------------------------


def seed_records(api_url: str, keys: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    """Real records to aim path parameters at: per credential kind, parameter → ids.

    Best effort: a record that cannot be made (a limit, a pipeline that is down) is left
    out, and its operations get made-up ids only."""
    known: dict[str, dict[str, list[str]]] = {}

    def created(response: httpx.Response, key: str) -> list[str]:
        return [response.json()[key]] if response.status_code in (200, 201, 202) else []

    with httpx.Client(base_url=api_url, timeout=60.0) as http:
        admin = {"Authorization": f"Bearer {keys['admin']}"}
        # A LoRA nobody serves: the generation that uses it fails, which is a record too.
        lora_ids = created(
            http.post(
                "/v1/loras",
                headers=admin,
                json={"url": "https://lora.invalid/fuzz.safetensors", "trigger": "fuzzstyle"},
            ),
            "id",
        )
        key_ids = created(
            http.post("/v1/admin/apiKeys", headers=admin, json={"userId": "fuzz-revocable"}),
            "keyId",
        )
        for kind in ("user", "admin"):
            auth = {"Authorization": f"Bearer {keys[kind]}"}
            bodies: list[dict[str, Any]] = [
                {"prompt": "a lighthouse at dusk", "numImages": 2, "seed": 7}
            ]
            if lora_ids:
                bodies.append(
                    {"prompt": "fuzzstyle portrait", "model": "flux-lora", "loraId": lora_ids[0]}
                )
            generation_ids: list[str] = []
            for body in bodies:
                # Waiting a little yields a finished record (and frees the in-flight limit).
                response = http.post(
                    "/v1/images/generations", headers={**auth, "Prefer": "wait=10"}, json=body
                )
                generation_ids += created(response, "id")
            batch_ids = created(
                http.post(
                    "/v1/images/batch", headers=auth, json={"requests": [{"prompt": "a red fox"}]}
                ),
                "id",
            )
            known[kind] = {
                "generation_id": generation_ids,
                "image_id": generation_ids,
                "batch_id": batch_ids,
                "lora_id": lora_ids,
                "key_id": key_ids,
            }
    known["invalid"] = known["none"] = known["user"]
    return known


# -- fuzzing ---------------------------------------------------------------------------


def _checks() -> list[Any]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
        unsupported_method,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        unsupported_method,
    ]


def _label(operation: Any) -> str:
    return f"{operation.method.upper()} {operation.path}"


def _order(operation: Any) -> tuple[int, int, str]:
    has_inputs = bool(operation.body or operation.query or operation.path_parameters)
    return (int(has_inputs), METHOD_ORDER.get(operation.method.upper(), 1), operation.path)


def _weight(operation: Any) -> float:
    """An operation's share of the fuzzing budget: bodies and query strings have more to try."""
    weight = 1.0 + 2.0 * bool(operation.body) + bool(operation.query)
    return weight * COSTLY.get(_label(operation), 1.0)


def _ansi_c(text: str) -> str:
    """bash's $'…' quoting, byte by byte, for text with control or non-ASCII characters
    (header values go on the wire as Latin-1)."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    plain = {b for b in range(32, 127)} - set(b"'\\")
    return "$'" + "".join(chr(b) if b in plain else f"\\x{b:02x}" for b in raw) + "'"


def _targets_authorization(case: Any) -> bool:
    """A coverage case about the Authorization header itself (say, leaving it out)."""
    from schemathesis.generation.meta import CoveragePhaseData

    meta = case._meta  # reading `case.meta` would revalidate the case
    data = getattr(getattr(meta, "phase", None), "data", None)
    return isinstance(data, CoveragePhaseData) and (data.parameter or "") == "Authorization"


class Fuzzer:
    """One run: the operations of one API description, one seed, one deadline."""

    def __init__(
        self,
        api_url: str,
        keys: dict[str, str],
        known: dict[str, dict[str, list[str]]],
        *,
        seed: int,
        deadline: float,
    ) -> None:
        import requests
        import schemathesis
        from schemathesis.core.result import Err

        self.api_url = api_url
        self.schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
        # The keys are throwaway ones; the curl commands name them $USER_KEY and $ADMIN_KEY.
        self.schema.config.output.sanitization.enabled = False
        self.placeholders = {
            keys["user"]: "$USER_KEY",
            keys["admin"]: "$ADMIN_KEY",
            api_url: "$API_URL",
        }
        operations = []
        for result in self.schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()  # the description itself is broken
            operations.append(result.ok())
        self.operations = sorted(operations, key=_order)
        self.stats = {_label(op): OperationStats(_label(op)) for op in self.operations}
        self.credentials = Credentials(keys["user"], keys["admin"])
        self.known = known
        self.seed = seed
        self.deadline = deadline
        self.checks = _checks()
        self.session = requests.Session()
        self.findings: list[Finding] = []
        self.phase_totals: Counter[str] = Counter()
        self.bodies_dir: Path | None = None
        self.out_of_time = False

    # -- one request ---------------------------------------------------------------------
    def curl(self, request: Any) -> str:
        """The request exactly as sent (a `requests.PreparedRequest`), as a curl command;
        keys and the URL as $USER_KEY, $ADMIN_KEY and $API_URL. A body that is long or not
        printable is saved to a file, and sent from it."""
        parts = [f"curl -X {request.method}"]
        for name, value in request.headers.items():
            if name.lower() not in TRANSPORT_HEADERS:
                parts.append(f"-H {self._shell(f'{name}: {value}')}")
        body = request.body
        if body:
            raw = body.encode() if isinstance(body, str) else bytes(body)
            text = raw.decode("utf-8", "replace")
            if len(raw) <= 1000 and text.isprintable() and text.encode() == raw:
                parts.append(f"--data-binary {self._shell(text)}")
            else:
                parts.append(f"--data-binary @{self._save_body(raw)}")
        parts.append(self._shell(request.url))
        return " ".join(parts)

    def _shell(self, text: str) -> str:
        """`text` quoted for bash, with the run's keys and URL as variables to expand."""
        pattern = "|".join(re.escape(value) for value in self.placeholders)
        pieces = re.split(f"({pattern})", text)
        quoted = []
        for piece in pieces:
            if piece in self.placeholders:
                quoted.append(f'"{self.placeholders[piece]}"')
            elif piece and piece.isprintable() and piece.isascii():
                quoted.append(shlex.quote(piece))
            elif piece:
                quoted.append(_ansi_c(piece))
        return "".join(quoted) or "''"

    def _save_body(self, raw: bytes) -> str:
        if self.bodies_dir is None:
            self.bodies_dir = Path(tempfile.mkdtemp(prefix="imagegen-fuzz-bodies-"))
        path = self.bodies_dir / f"{len(list(self.bodies_dir.iterdir())) + 1}.body"
        path.write_bytes(raw)
        return str(path)

    def send(
        self,
        phase: str,
        operation: Any,
        case: Any,
        credential: Credential,
        extra_headers: dict[str, str] | None = None,
        what: str | None = None,
    ) -> None:
        import requests
        from schemathesis.core.failures import FailureGroup

        if time.monotonic() > self.deadline:
            self.out_of_time = True
            return
        stats = self.stats[_label(operation)]
        mode = what or (f"{case._meta.generation.mode.value} data" if case._meta else "?")
        if _targets_authorization(case):
            headers: dict[str, str] = {}
            credential = Credential("invalid" if case.headers else "none", None)
        else:
            headers = credential.headers()
            if case.headers and not headers:
                case.headers.pop("Authorization", None)  # "no credentials" means none at all
        headers.update(extra_headers or {})
        stats.requests[credential.kind] += 1
        self.phase_totals[phase] += 1

        def found(request: Any, status: int | None, titles: tuple[str, ...], text: str) -> None:
            stats.failures += 1
            if isinstance(request, requests.PreparedRequest):
                curl = self.curl(request)
            else:
                curl = case.as_curl_command(headers=headers, base_url=self.api_url)
            self.findings.append(
                Finding(phase, stats.label, credential.kind, mode, status, titles, text, curl)
            )

        try:
            response = case.call(
                base_url=self.api_url,
                session=self.session,
                headers=headers,
                timeout=REQUEST_TIMEOUT,
            )
        except requests.RequestException as exc:
            found(exc.request, None, ("Request failed",), f"{type(exc).__name__}: {exc}")
            return
        stats.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=self.checks, headers=headers)
        except FailureGroup as group:
            found(
                response.request,
                response.status_code,
                tuple(sorted({failure.title for failure in group.exceptions})),
                "\n".join(failure.message for failure in group.exceptions)
                + f"\n\nResponse body: {response.text[:500]}",
            )

    # -- phases --------------------------------------------------------------------------
    def edges(self, operation: Any) -> None:
        """Hostile inputs schemathesis does not generate (deep nesting, non-finite numbers,
        bodies past the size limit, other media types, odd path ids, date-times at the ends
        of the calendar), with the admin's key: it passes every gate before the parsing."""
        # (what it is, the case's parts, extra headers)
        inputs: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        if operation.body:
            octets = {"media_type": "application/octet-stream"}  # sent as they are
            inputs += [
                (name, {"body": raw, **octets}, {"Content-Type": "application/json"})
                for name, raw in EDGE_BODIES.items()
            ]
            inputs += [
                (
                    f"Content-Type {media}",
                    {"body": b'{"prompt": "x"}', **octets},
                    {"Content-Type": media},
                )
                for media in EDGE_CONTENT_TYPES
            ]
        for parameter in operation.path_parameters:
            inputs += [
                (f"{parameter.name} {value!r}", {"path_parameters": {parameter.name: value}}, {})
                for value in EDGE_PATH_IDS
            ]
        for parameter in operation.query:
            if "date-time" in str(parameter.definition):
                inputs += [
                    (f"{parameter.name} {value}", {"query": {parameter.name: value}}, {})
                    for value in EDGE_DATE_TIMES
                ]
        admin = self.credentials.get("admin")
        for what, parts, headers in inputs:
            self.send("edges", operation, operation.Case(**parts), admin, headers, what)
            if self.out_of_time:
                return

    def coverage(self, operation: Any, per_operation: int | None) -> None:
        """Schemathesis's deterministic cases for `operation` (every `step`-th one if
        `per_operation` caps them), credentials in a fixed rotation."""
        from schemathesis import GenerationMode

        cases = list(
            self.schema.iter_coverage_cases(
                operation,
                generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                generation_config=self.schema.config.generation_for(operation=operation),
            )
        )
        if per_operation is not None and len(cases) > per_operation:
            step = len(cases) / per_operation
            cases = [cases[int(i * step)] for i in range(per_operation)]
        rotation = itertools.cycle(COVERAGE_KINDS)
        for index, case in enumerate(cases):
            self.send("coverage", operation, case, self.credentials.get(next(rotation), index))
            if self.out_of_time:
                return

    def strategy(self, operation: Any, mode: Any, credential: Credential) -> Any:
        """Cases for `operation`; path parameters are made up, or the ids of real records
        that `credential` may (user, admin) or may not (invalid, none) see."""
        from hypothesis import strategies as st

        made_up = operation.as_strategy(generation_mode=mode)
        ids = self.known.get(credential.kind, {})
        names = [p.name for p in operation.path_parameters]
        if not names or not all(ids.get(name) for name in names):
            return made_up
        real = st.fixed_dictionaries({name: st.sampled_from(ids[name]) for name in names})
        return st.one_of(
            made_up,
            real.flatmap(
                lambda values: operation.as_strategy(generation_mode=mode, path_parameters=values)
            ),
        )

    def paired(self, operation: Any, mode: Any, credential: Credential) -> Any:
        from hypothesis import strategies as st

        return st.tuples(st.just(credential), self.strategy(operation, mode, credential))

    def fuzz(self, operation: Any, budget: int) -> None:
        """About `budget` random requests: half valid inputs, half invalid ones."""
        import hypothesis
        from hypothesis import strategies as st
        from schemathesis import GenerationMode

        stats = self.stats[_label(operation)]
        kinds = st.sampled_from(FUZZ_KINDS)
        credentials = st.builds(
            self.credentials.get, kinds, st.integers(0, len(INVALID_AUTHORIZATIONS) - 1)
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            drawn = credentials.flatmap(functools.partial(self.paired, operation, mode))

            @hypothesis.seed(self.seed)
            @hypothesis.settings(
                max_examples=max(1, math.ceil(budget / 2)),
                database=None,
                deadline=None,
                phases=[hypothesis.Phase.generate],
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            @hypothesis.given(drawn)
            def run(pair: tuple[Credential, Any]) -> None:
                credential, case = pair
                self.send("fuzzing", operation, case, credential)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                pass  # e.g. nothing is invalid about an operation without inputs
            except Exception as exc:  # noqa: BLE001 -- reported, and the run fails
                stats.errors.append(f"{mode.value} data: {type(exc).__name__}: {exc}"[:500])


def fuzz(
    api_url: str,
    keys: dict[str, str],
    *,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    seed: int = DEFAULT_SEED,
    time_limit: float = DEFAULT_TIME_LIMIT,
    coverage: bool = True,
    coverage_per_operation: int | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """Fuzzes every operation of the API at `api_url`: the edges phase, the coverage phase
    (unless `coverage` is False; at most `coverage_per_operation` cases per operation if
    given), then about `max_examples` random requests in all; no request is sent after
    `time_limit` seconds. `keys` holds a plain user's and an administrator's API key."""
    started = time.monotonic()
    known = seed_records(api_url, keys)
    fuzzer = Fuzzer(api_url, keys, known, seed=seed, deadline=started + time_limit)
    operations = fuzzer.operations
    for operation in operations:
        fuzzer.edges(operation)
    log(f"  edges: {fuzzer.phase_totals['edges']} requests")
    if coverage:
        for operation in operations:
            fuzzer.coverage(operation, coverage_per_operation)
            if fuzzer.out_of_time:
                break
        log(f"  coverage: {fuzzer.phase_totals['coverage']} requests")
    remaining, weights = max_examples, sum(_weight(op) for op in operations)
    for operation in operations:
        if fuzzer.out_of_time:
            break
        # What an operation cannot use (too few distinct inputs) goes to the later ones.
        budget = max(2, math.ceil(remaining * _weight(operation) / weights))
        before = fuzzer.phase_totals["fuzzing"]
        fuzzer.fuzz(operation, budget)
        sent = fuzzer.phase_totals["fuzzing"] - before
        remaining, weights = max(0, remaining - sent), weights - _weight(operation)
        log(f"  fuzzing {_label(operation)}: {sent} requests")
    if fuzzer.out_of_time:
        log(f"  time limit of {time_limit:.0f} s reached: the remaining requests were skipped")
    return Report(
        list(fuzzer.stats.values()),
        fuzzer.findings,
        seed,
        time.monotonic() - started,
        fuzzer.out_of_time,
        fuzzer.phase_totals,
    )


# -- the stack -------------------------------------------------------------------------


@contextlib.contextmanager
def running_stack() -> Iterator[tuple[str, Callable[[str, str], str]]]:
    """A fresh local stack in a temporary directory: its API URL and its key issuer."""
    from infra.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="imagegen-fuzz-") as state_dir:
        stack = LocalStack(state_dir=Path(state_dir), inference_delay=0.2)
        try:
            stack.start()
            yield stack.env["API_URL"], stack.create_api_key
        finally:
            stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.fuzz", description="Fuzz the API with schemathesis."
    )
    parser.add_argument(
        "--max-examples",
        type=int,
        default=DEFAULT_MAX_EXAMPLES,
        help=f"random requests in all, after the coverage phase (default {DEFAULT_MAX_EXAMPLES})",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generation seed")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT,
        help=f"stop sending after this many seconds (default {DEFAULT_TIME_LIMIT:.0f})",
    )
    parser.add_argument(
        "--no-coverage", action="store_true", help="skip the deterministic coverage phase"
    )
    args = parser.parse_args(argv)

    print("starting a local stack...", flush=True)
    with running_stack() as (api_url, issue_key):
        keys = {"user": issue_key("fuzz-user", "user"), "admin": issue_key("fuzz-admin", "admin")}
        print(f"fuzzing {api_url}/openapi.json (seed {args.seed})", flush=True)
        report = fuzz(
            api_url,
            keys,
            max_examples=args.max_examples,
            seed=args.seed,
            time_limit=args.time_limit,
            coverage=not args.no_coverage,
            log=lambda line: print(line, flush=True),
        )
    print()
    print(report.table())
    print()
    print(report.summary())
    if not report.ok:
        print(f"\n{len(report.findings)} failing requests:\n", file=sys.stderr)
        print(report.failures_text(), file=sys.stderr)
        print(
            "\nThe curl commands need API_URL, ADMIN_KEY and USER_KEY: README.md, "
            '"Fuzzing", sets them for `make dev`.',
            file=sys.stderr,
        )
        return 1
    print("no failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
