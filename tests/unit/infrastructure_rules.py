"""The rules tying terraform/ to the code, as functions that return the problems they find.

tests/unit/test_infrastructure.py applies each rule to the real Terraform and code (no
problems) and to a copy with one rule broken (the problem is reported). Everything here is
offline: the HCL is parsed (python-hcl2, as checkov ships it), the code is read with `ast`,
and Firestore queries are built with the real client library and recorded, never sent.

What each side contributes:

- Terraform: `Infra.load()` reads the modules into plain dicts and lists (`Infra.functions`,
  the grants of identities.tf, the indexes of firestore.tf, ...). Values are the HCL
  expressions as written (`"${var.project_id}"`), compared as strings.
- Code: `settings_reads()` is a static call graph from each `functions/<name>/main.py` entry
  point through `imagegen`, collecting the Settings fields read on the way (over-approximate:
  a method call by name may reach any method of that name). `recorded_queries()` runs every
  code path that builds a Firestore query and records the query.
"""

from __future__ import annotations

import ast
import copy
import re
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import yaml
from pydantic import SecretStr

from imagegen.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
STACK = TERRAFORM / "modules" / "imagegen"
FUNCTION_MODULE = TERRAFORM / "modules" / "function"
PACKAGE = ROOT / "shared" / "imagegen"
FUNCTIONS = ROOT / "functions"

# -- the settings: what a deployment must, must not and may set ---------------------------

# Must be set on every function whose code reads them: their defaults name the local stack
# (127.0.0.1, imagegen-local), a resource this deployment creates, or leave a check off.
REQUIRED = {
    "gcp_project": "the default is the local stack's project",
    "images_bucket": "names a bucket this deployment creates",
    "lora_bucket": "names a bucket this deployment creates",
    "generations_topic": "names the topic this deployment creates",
    "webhook_url": "the default is a loopback URL",
    "tasks_queue": "the default is the local stack's queue",
    "watchdog_url": "the default is a loopback URL; it is also the OIDC audience",
    "watchdog_invoker": "unset, the watchdog accepts calls without Cloud Tasks' token",
    "cleanup_url": "the default is a loopback URL; it is also the OIDC audience",
    "cleanup_invoker": "unset, the cleanup function accepts calls without Scheduler's token",
    "retention_days": "the images bucket's lifecycle rule is derived from it",
    "fal_key": "no default",
    "webhook_hmac_key": "no default (at least 16 characters)",
}
# Must never be set in a deployment: local-stack and test switches.
LOCAL_ONLY = {
    "tasks_emulator_host": "points the Cloud Tasks client at the emulator",
    "storage_emulator_host": "points the storage client at the emulator, anonymously",
    "pubsub_emulator_host": "points the publisher at the emulator, over plain gRPC",
    "signing_credentials_file": "a key file; deployed functions sign through IAM signBlob",
    "image_fetch_insecure_hosts": "allows plain-http loopback fetches for the fal simulator",
    "watchdog_first_check_seconds": "overrides every model's deadline, for tests",
}
# May be set where read; their defaults are production values.
TUNABLE = {
    "api_key_cache_seconds",
    "lora_url_ttl_seconds",
    "lora_max_bytes",
    "webhook_ingest_budget_seconds",
    "submit_lease_seconds",
    "watchdog_recheck_seconds",
    "watchdog_max_checks",
    "stuck_after_minutes",
    "orphan_min_age_minutes",
    "cleanup_time_budget_seconds",
    "fal_jwks_url",
    "fal_jwks_ttl_seconds",
    "webhook_tolerance_seconds",
    "signed_url_ttl_seconds",
    "firebase_project_id",
    "firebase_certs_url",
    "requests_per_hour",
    "max_in_flight",
    "monthly_megapixels",
    "max_megapixels",
    "max_request_bytes",
    "image_download_max_bytes",
    "image_download_timeout_seconds",
    "image_fetch_allowed_hosts",
    "image_max_pixels",
    "fal_submit_timeout_seconds",
    "log_level",
}
# Read by libraries rather than by Settings; the only other variables a function may get.
LIBRARY_VARS = {
    "THREADS": "functions-framework: gunicorn's threads per instance",
    "GOOGLE_CLOUD_PROJECT": "google-cloud-* clients: the default project",
    "SSL_CERT_DIR": "httpx (ours and fal_client's): where the trusted CAs are",
}
# Every function trusts the runtime image's hashed CA directory (Ubuntu's ca-certificates):
# docs/decisions/0011-trust-from-a-ca-directory.md.
IMAGE_CA_DIR = "/etc/ssl/certs"
# Project-level roles a function's own account may hold (Firestore has no finer IAM).
FUNCTION_PROJECT_ROLES = {"roles/datastore.user"}
BROAD_ROLES = {
    "roles/owner",
    "roles/editor",
    "roles/viewer",
    "roles/storage.admin",
    "roles/storage.objectAdmin",
    "roles/iam.serviceAccountTokenCreator",
    "roles/iam.serviceAccountUser",
    "roles/secretmanager.secretAccessor",
    "roles/pubsub.editor",
    "roles/run.invoker",
}


def env_name(setting: str) -> str:
    return setting.upper()


def secret_settings() -> set[str]:
    return {name for name, info in Settings.model_fields.items() if info.annotation is SecretStr}


# -- Terraform ------------------------------------------------------------------------------


def _one(value: Any) -> Any:
    """python-hcl2 wraps every attribute in a list; blocks are lists of dicts."""
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


_QUOTED = re.compile(r'^\$\{"(.*)"\}$', re.S)


def _plain(value: Any) -> Any:
    """An attribute value without python-hcl2's list wrapping and position keys (and a
    template inside a map, which it renders as ${"..."}, as the template)."""
    value = _one(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, str) and (match := _QUOTED.match(value)):
        return match.group(1)
    return value


def parse_dir(directory: Path) -> dict[str, list[Any]]:
    """Every top-level construct (resource, module, locals, ...) of a module directory."""
    merged: dict[str, list[Any]] = defaultdict(list)
    for tf in sorted(directory.glob("*.tf")):
        for kind, items in hcl2.loads(tf.read_text()).items():
            merged[kind].extend(items)
    return merged


def _by_name(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in blocks:
        for name, body in block.items():
            out[name] = body
    return out


def _resources(parsed: dict[str, list[Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for block in parsed.get("resource", []):
        for rtype, instances in block.items():
            out[rtype].update(instances)
    return out


def _locals(parsed: dict[str, list[Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in parsed.get("locals", []):
        out.update({k: _plain(v) for k, v in block.items() if not k.startswith("__")})
    return out


@dataclass
class Infra:
    """The parts of terraform/ the rules look at, as parsed HCL (copy and mutate freely)."""

    functions: dict[str, dict[str, Any]]
    modules: dict[str, dict[str, Any]]
    resources: dict[str, dict[str, dict[str, Any]]]
    locals: dict[str, Any]
    function_module: dict[str, dict[str, dict[str, Any]]]
    environments: dict[str, dict[str, list[Any]]]

    @classmethod
    def load(cls) -> Infra:
        stack = parse_dir(STACK)
        modules = {name: _plain(body) for name, body in _by_name(stack["module"]).items()}
        functions = {
            name: body for name, body in modules.items() if body.get("source") == "../function"
        }
        environments = {
            d.name: parse_dir(d) for d in sorted((TERRAFORM / "environments").iterdir())
        }
        return cls(
            functions=functions,
            modules=modules,
            resources=_resources(stack),
            locals=_locals(stack),
            function_module=_resources(parse_dir(FUNCTION_MODULE)),
            environments=environments,
        )

    def copy(self) -> Infra:
        return copy.deepcopy(self)

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        return _plain(self.resources[rtype][name])


# -- Code: entry points ---------------------------------------------------------------------


@dataclass(frozen=True)
class EntryPoint:
    function: str  # folder under functions/
    target: str  # the decorated def
    signature: str  # "http" or "cloudevent"


def entry_points() -> dict[str, EntryPoint]:
    """Each functions/<name>/main.py's decorated function and its signature type."""
    kinds = {"http": "http", "cloud_event": "cloudevent"}
    found: dict[str, EntryPoint] = {}
    for main in sorted(FUNCTIONS.glob("*/main.py")):
        for node in ast.parse(main.read_text()).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Attribute)
                    and isinstance(decorator.value, ast.Name)
                    and decorator.value.id == "functions_framework"
                    and decorator.attr in kinds
                ):
                    name = main.parent.name
                    found[name] = EntryPoint(name, node.name, kinds[decorator.attr])
    return found


# -- Code: which settings each function reads -----------------------------------------------

Node = tuple[str, ...]  # ("module", name) or ("def", module, qualname)


@dataclass
class _Module:
    name: str
    tree: ast.Module
    aliases: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    defs: dict[str, ast.AST] = field(default_factory=dict)


class CallGraph:
    """A static call graph over imagegen and the functions' main.py files.

    Nodes are modules (their top-level code runs on import) and top-level functions, classes
    and methods. An edge is any reference: a name defined or imported in the module, a
    `module.attr` of an imported module, and, for `anything.attr`, every method named
    `attr` in the package (receivers are not typed, so this over-approximates). Reaching a
    class reaches its constructor; reaching a def reaches its module.
    """

    def __init__(self) -> None:
        self.modules: dict[str, _Module] = {}
        for path in sorted(PACKAGE.rglob("*.py")):
            parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            self._add(".".join(parts), path)
        for main in sorted(FUNCTIONS.glob("*/main.py")):
            self._add(f"functions.{main.parent.name}", main)
        self.methods: dict[str, set[Node]] = defaultdict(set)
        for module in self.modules.values():
            for qualname in module.defs:
                if "." in qualname:
                    self.methods[qualname.split(".", 1)[1]].add(("def", module.name, qualname))
        fields = set(Settings.model_fields)
        self.fields = fields
        settings_module = self.modules["imagegen.settings"]
        # Properties and helpers of Settings read fields too (firebase_project, ...).
        self.settings_members = {
            qualname.split(".", 1)[1]: {
                n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and n.attr in fields
            }
            for qualname, node in settings_module.defs.items()
            if qualname.startswith("Settings.")
        }

    def _add(self, name: str, path: Path) -> None:
        module = _Module(name, ast.parse(path.read_text()))
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("imagegen"):
                        local = alias.asname or alias.name.split(".")[0]
                        target = alias.name if alias.asname else alias.name.split(".")[0]
                        module.aliases[local] = (target, None)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("imagegen"):
                for alias in node.names:
                    module.aliases[alias.asname or alias.name] = (node.module or "", alias.name)
        for node in module.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                module.defs[node.name] = node
            if isinstance(node, ast.ClassDef):
                for member in node.body:
                    if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                        module.defs[f"{node.name}.{member.name}"] = member
        self.modules[name] = module

    def _resolve(self, module: str, attr: str | None) -> Node | None:
        if attr is None:
            return ("module", module) if module in self.modules else None
        if f"{module}.{attr}" in self.modules:
            return ("module", f"{module}.{attr}")
        target = self.modules.get(module)
        if target is None:
            return None
        if attr in target.defs:
            return ("def", module, attr)
        if attr in target.aliases:
            return self._resolve(*target.aliases[attr])
        return None

    def _roots(self, node: Node) -> tuple[_Module, list[ast.AST]]:
        if node[0] == "module":
            module = self.modules[node[1]]
            roots: list[ast.AST] = []
            for statement in module.tree.body:
                if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                    roots.extend(statement.decorator_list)
                elif isinstance(statement, ast.ClassDef):
                    roots.extend([*statement.decorator_list, *statement.bases])
                    for member in statement.body:
                        if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                            roots.extend(member.decorator_list)
                        else:
                            roots.append(member)
                else:
                    roots.append(statement)
            return module, roots
        module = self.modules[node[1]]
        return module, [module.defs[node[2]]]

    def _edges(self, node: Node) -> tuple[set[str], set[Node]]:
        reads: set[str] = set()
        out: set[Node] = set()
        if node[0] == "def":
            out.add(("module", node[1]))
            definition = self.modules[node[1]].defs[node[2]]
            if isinstance(definition, ast.ClassDef):
                for special in ("__init__", "__post_init__", "__call__"):
                    if f"{node[2]}.{special}" in self.modules[node[1]].defs:
                        out.add(("def", node[1], f"{node[2]}.{special}"))
                return reads, out
        module, roots = self._roots(node)
        for root in roots:
            for n in ast.walk(root):
                if isinstance(n, ast.Name):
                    if n.id in module.defs:
                        out.add(("def", module.name, n.id))
                    elif n.id in module.aliases:
                        resolved = self._resolve(*module.aliases[n.id])
                        if resolved:
                            out.add(resolved)
                elif isinstance(n, ast.Attribute):
                    if n.attr in self.fields:
                        reads.add(n.attr)
                    reads |= self.settings_members.get(n.attr, set())
                    resolved = self._attribute(module, n)
                    if resolved:
                        out.add(resolved)
                    else:
                        out |= self.methods.get(n.attr, set())
        return reads, out

    def _attribute(self, module: _Module, n: ast.Attribute) -> Node | None:
        """`alias.attr` where alias is an imported module or a known class."""
        if not isinstance(n.value, ast.Name):
            return None
        base = n.value.id
        if base in module.aliases:
            target, attr = module.aliases[base]
            dotted = target if attr is None else f"{target}.{attr}"
            if dotted in self.modules:
                return self._resolve(dotted, n.attr)
            cls = self._resolve(target, attr)
            if cls and cls[0] == "def" and f"{cls[2]}.{n.attr}" in self.modules[cls[1]].defs:
                return ("def", cls[1], f"{cls[2]}.{n.attr}")
        elif base in module.defs and f"{base}.{n.attr}" in module.defs:
            return ("def", module.name, f"{base}.{n.attr}")
        return None

    def reach(self, function: str) -> tuple[set[str], set[Node]]:
        """(Settings fields read, nodes reached) from functions/<function>/main.py."""
        entry = entry_points()[function]
        todo: list[Node] = [
            ("module", f"functions.{function}"),
            ("def", f"functions.{function}", entry.target),
        ]
        seen: set[Node] = set()
        reads: set[str] = set()
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            if node[0] == "module":
                parts = node[1].split(".")
                todo.extend(
                    ("module", ".".join(parts[:i]))
                    for i in range(1, len(parts))
                    if ".".join(parts[:i]) in self.modules
                )
            found, edges = self._edges(node)
            reads |= found
            todo.extend(edges)
        return reads, seen


@cache
def settings_reads() -> dict[str, frozenset[str]]:
    """Settings fields each function's code can read."""
    graph = CallGraph()
    return {name: frozenset(graph.reach(name)[0]) for name in entry_points()}


# -- Code: the Firestore queries ------------------------------------------------------------

EQUALITY_OPS = {"EQUAL", "IN", "ARRAY_CONTAINS", "ARRAY_CONTAINS_ANY", "IS_NULL", "IS_NAN"}


@dataclass(frozen=True)
class Query:
    """A query's shape as Firestore's index selection sees it."""

    site: str  # the code that built it
    collection: str
    equalities: frozenset[str]
    inequalities: frozenset[str]
    orders: tuple[tuple[str, str], ...]  # explicit order_by, (field, ASCENDING|DESCENDING)

    def normalized_orders(self) -> tuple[tuple[str, str], ...]:
        """Explicit orders, else Firestore's implicit ones (inequality fields ascending),
        without the trailing __name__ that every index carries anyway."""
        orders = self.orders or tuple((f, "ASCENDING") for f in sorted(self.inequalities))
        return tuple(o for o in orders if o[0] != "__name__")

    def composite(self) -> tuple[frozenset[str], tuple[tuple[str, str], ...]] | None:
        """The composite index it needs, as (equality fields, ordered fields), or None when
        Firestore serves it from automatic single-field indexes (one field ordered, or
        equality filters only, which it merges)."""
        orders = self.normalized_orders()
        equalities = self.equalities - {f for f, _ in orders}
        if not orders:
            return None
        if not equalities and len(orders) == 1:
            return None
        return equalities, orders

    def exact(self) -> tuple[frozenset[str], tuple[tuple[str, str], ...]] | None:
        """The index that serves it in one scan (equality-only queries included)."""
        needed = self.composite()
        if needed is not None:
            return needed
        if len(self.equalities) >= 2 and not self.normalized_orders():
            return self.equalities, ()
        return None

    def describe(self) -> str:
        parts = [f"{f} ==" for f in sorted(self.equalities)]
        parts += [f"{f} range" for f in sorted(self.inequalities)]
        parts += [f"order {f} {d}" for f, d in self.orders]
        return f"{self.site}: {self.collection} where {', '.join(parts) or '-'}"


def _enum_name(message: Any, field_name: str) -> str:
    enum = message.DESCRIPTOR.fields_by_name[field_name].enum_type
    return str(enum.values_by_number[getattr(message, field_name)].name)


def _query_shape(site: str, structured: Any) -> Query:
    pb = structured._pb
    collection = pb.from_[0].collection_id
    equalities: set[str] = set()
    inequalities: set[str] = set()

    def visit(flt: Any) -> None:
        kind = flt.WhichOneof("filter_type")
        if kind == "composite_filter":
            for sub in flt.composite_filter.filters:
                visit(sub)
        elif kind == "field_filter":
            op = _enum_name(flt.field_filter, "op")
            target = equalities if op in EQUALITY_OPS else inequalities
            target.add(flt.field_filter.field.field_path)
        elif kind == "unary_filter":
            equalities.add(flt.unary_filter.field.field_path)

    if pb.HasField("where"):
        visit(pb.where)
    orders = tuple((o.field.field_path, _enum_name(o, "direction")) for o in pb.order_by)
    return Query(site, collection, frozenset(equalities), frozenset(inequalities), orders)


class _Recorder:
    def __init__(self) -> None:
        self.site = "?"
        self.queries: list[Query] = []

    @contextmanager
    def at(self, site: str) -> Iterator[None]:
        self.site = site
        yield
        self.site = "?"


class _AggregationResult:
    value = 0


@contextmanager
def _recording() -> Iterator[tuple[_Recorder, Any]]:
    """A real Firestore client whose queries are recorded instead of sent."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore
    from google.cloud.firestore_v1.aggregation import AggregationQuery
    from google.cloud.firestore_v1.query import Query as FirestoreQuery

    recorder = _Recorder()

    def stream(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        recorder.queries.append(_query_shape(recorder.site, self._to_protobuf()))
        return iter(())

    def aggregate(self: Any, *args: Any, **kwargs: Any) -> list[list[Any]]:
        nested = self._nested_query._to_protobuf()
        recorder.queries.append(_query_shape(recorder.site, nested))
        return [[_AggregationResult()]]

    saved = (FirestoreQuery.stream, AggregationQuery.get)
    FirestoreQuery.stream = stream  # type: ignore[method-assign]
    AggregationQuery.get = aggregate  # type: ignore[method-assign]
    try:
        yield recorder, firestore.Client(project="p", credentials=AnonymousCredentials())
    finally:
        FirestoreQuery.stream, AggregationQuery.get = saved  # type: ignore[method-assign]


# Where the code builds Firestore queries (module:qualname), and which exercise below runs
# each. A new query site fails the completeness check until it is exercised here.
QUERY_SITES = {
    "repository:GenerationRepository.list_for_user": "history",
    "repository:ApiKeyRepository._where": "api keys",
    "cleanup:FirestoreCleanupStore._expired_query": "cleanup",
    "cleanup:FirestoreCleanupStore._stuck_query": "cleanup",
    "cleanup:FirestoreCleanupStore._page": "cleanup",
    "repository:count_of": "history and cleanup counts",
    "loras:LoraRepository.list": "loras",
}


def query_sites() -> set[str]:
    """Functions of imagegen that call where/order_by/collection_group or count(alias=)."""
    sites: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        for scope, qualname in _scopes(tree):
            for n in ast.walk(scope):
                if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                    continue
                attr = n.func.attr
                if attr in ("where", "order_by", "collection_group", "find_nearest") or (
                    attr == "count" and any(k.arg == "alias" for k in n.keywords)
                ):
                    sites.add(f"{module}:{qualname}")
    return sites


def _scopes(tree: ast.Module) -> Iterable[tuple[ast.AST, str]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node, node.name
        elif isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield member, f"{node.name}.{member.name}"


@cache
def recorded_queries() -> tuple[Query, ...]:
    """Every query shape the code builds, with each optional filter on and off."""
    from itertools import product

    from imagegen.cleanup import FirestoreCleanupStore
    from imagegen.loras import LoraRepository
    from imagegen.models.records import GenerationStatus
    from imagegen.repository import (
        ApiKeyRepository,
        GenerationRepository,
        HistoryFilter,
        HistoryPosition,
    )

    now = datetime(2026, 1, 1, tzinfo=UTC)
    with _recording() as (recorder, client):
        with recorder.at("history"):
            history = GenerationRepository(client)
            for status, model, after, before in product(
                (None, GenerationStatus.COMPLETED), (None, "flux-dev"), (None, now), (None, now)
            ):
                selection = HistoryFilter("u", status, model, after, before)
                history.list_for_user(selection, 10)
                history.list_for_user(selection, 10, after=HistoryPosition(now, "g"))
        with recorder.at("cleanup"):
            store = FirestoreCleanupStore(client)
            store.expired(now, 10, None)
            store.expired(now, 10, (now, "g"))
            store.count_expired(now)
            store.stuck(now, 10, None)
            store.count_stuck(now)
        with recorder.at("api keys"):
            keys = ApiKeyRepository(client)
            keys.find_by_key_id("k")
            keys.list_for_user("u", 10)
        with recorder.at("loras"):
            LoraRepository(client).list()
        return tuple(dict.fromkeys(recorder.queries))


# -- the rules ------------------------------------------------------------------------------


def check_function_inventory(infra: Infra, entries: dict[str, EntryPoint]) -> list[str]:
    """Every function folder is deployed, with its own entry point and signature type."""
    problems = []
    for name in sorted(set(entries) - set(infra.functions)):
        problems.append(f"functions/{name} has no module block in terraform")
    for name in sorted(set(infra.functions) - set(entries)):
        problems.append(f"terraform deploys `{name}`, which has no functions/{name}/main.py")
    for name in sorted(set(entries) & set(infra.functions)):
        spec, entry = infra.functions[name], entries[name]
        if spec.get("entry_point") != entry.target:
            problems.append(
                f"{name}: entry_point {spec.get('entry_point')!r} but main.py defines "
                f"{entry.target!r}"
            )
        triggered = spec.get("event_trigger") is not None
        if entry.signature == "cloudevent" and not triggered:
            problems.append(f"{name}: main.py is a CloudEvent function but has no event_trigger")
        if entry.signature == "http" and triggered:
            problems.append(f"{name}: main.py is an HTTP function but has an event_trigger")
        if spec.get("source_archive") != f"${{var.dist_dir}}/{name}.zip":
            problems.append(f"{name}: source_archive is not the bundle dist/{name}.zip")
    return problems


def check_environment(infra: Infra, reads: dict[str, frozenset[str]]) -> list[str]:
    """Each function gets every required setting its code reads and nothing it does not."""
    problems = []
    fields = set(Settings.model_fields)
    classified = set(REQUIRED) | set(LOCAL_ONLY) | TUNABLE
    for name in sorted(fields - classified):
        problems.append(
            f"setting {name} is not classified as REQUIRED, LOCAL_ONLY or TUNABLE "
            "(tests/unit/infrastructure_rules.py)"
        )
    for name in sorted(classified - fields):
        problems.append(f"{name} is classified but is not a field of Settings")
    by_env = {env_name(f): f for f in fields}
    secrets = secret_settings()
    for function, spec in sorted(infra.functions.items()):
        env = spec.get("environment") or {}
        secret_env = spec.get("secrets") or {}
        read = reads.get(function, frozenset())
        for var in sorted(set(env) | set(secret_env)):
            if var in LIBRARY_VARS:
                continue
            setting = by_env.get(var)
            if setting is None:
                problems.append(
                    f"{function} sets {var}, which is not a setting (imagegen.settings)"
                )
                continue
            if setting in LOCAL_ONLY:
                problems.append(f"{function} sets {var}: {LOCAL_ONLY[setting]}, local only")
            if setting not in read:
                problems.append(f"{function} sets {var}, which its code never reads")
            if setting in secrets and var in env:
                problems.append(f"{function} gets the secret {var} as a plain environment variable")
            if setting not in secrets and var in secret_env:
                problems.append(f"{function} gets {var} from Secret Manager but it is no secret")
        for setting in sorted(read & set(REQUIRED)):
            if env_name(setting) not in env and env_name(setting) not in secret_env:
                problems.append(
                    f"{function} reads {env_name(setting)} but terraform does not set it "
                    f"({REQUIRED[setting]})"
                )
    return problems


def check_sizing(infra: Infra) -> list[str]:
    """Threads, CPU and timeouts agree with the concurrency and the code's own budgets."""
    from imagegen.waiting import MAX_WAIT_SECONDS

    problems = []
    defaults = {name: info.default for name, info in Settings.model_fields.items()}

    def setting(spec: dict[str, Any], name: str) -> float:
        value = (spec.get("environment") or {}).get(env_name(name), defaults[name])
        return float(value)

    for function, spec in sorted(infra.functions.items()):
        concurrency = spec.get("concurrency", 1)
        threads = (spec.get("environment") or {}).get("THREADS")
        if threads is None or int(threads) != concurrency:
            problems.append(
                f"{function}: THREADS is {threads}, concurrency {concurrency}: gunicorn would "
                "queue requests inside the instance"
            )
        cpu = spec.get("cpu")
        if concurrency > 1 and (cpu is None or float(cpu) < 1):
            problems.append(f"{function}: concurrency {concurrency} needs at least 1 vCPU")
    checks = [
        ("api", MAX_WAIT_SECONDS, "the longest `Prefer: wait` (imagegen.waiting)"),
        (
            "cleanup",
            setting(infra.functions.get("cleanup", {}), "cleanup_time_budget_seconds"),
            "CLEANUP_TIME_BUDGET_SECONDS",
        ),
        (
            "webhook",
            setting(infra.functions.get("webhook", {}), "webhook_ingest_budget_seconds"),
            "WEBHOOK_INGEST_BUDGET_SECONDS",
        ),
    ]
    for function, budget, what in checks:
        timeout = infra.functions.get(function, {}).get("timeout_seconds", 60)
        if not timeout > budget:
            problems.append(f"{function}: timeout {timeout} s is not above {what} ({budget:g} s)")
    job = infra.resource("google_cloud_scheduler_job", "cleanup")
    deadline = float(str(job["attempt_deadline"]).rstrip("s"))
    cleanup_timeout = infra.functions.get("cleanup", {}).get("timeout_seconds", 60)
    if deadline <= cleanup_timeout:
        problems.append(
            f"the scheduler's attempt_deadline ({deadline:g} s) ends before the cleanup "
            f"function's timeout ({cleanup_timeout} s)"
        )
    return problems


def check_build_environment(infra: Infra) -> list[str]:
    """The function module builds with the environment the bundles are measured with."""
    from infra.bundle import BUILD_ENVIRONMENT

    function = _plain(infra.function_module["google_cloudfunctions2_function"]["this"])
    built = (function.get("build_config") or {}).get("environment_variables") or {}
    if built != BUILD_ENVIRONMENT:
        return [
            f"the function module builds with environment_variables {built!r}, not "
            f"infra.bundle.BUILD_ENVIRONMENT {BUILD_ENVIRONMENT!r}"
        ]
    return []


def check_trust(infra: Infra) -> list[str]:
    """Every function reads its TLS trust anchors from the image's CA directory."""
    return [
        f"{function}: SSL_CERT_DIR is {found!r}, not {IMAGE_CA_DIR!r}"
        for function, spec in sorted(infra.functions.items())
        if (found := (spec.get("environment") or {}).get("SSL_CERT_DIR")) != IMAGE_CA_DIR
    ]


def _ref(expression: str) -> str:
    return f"${{{expression}}}"


def check_names(infra: Infra) -> list[str]:
    """Topics, triggers, the queue, buckets and URLs agree with the code and infra/stack.py."""
    from imagegen.cleanup import ORPHAN_PREFIXES
    from infra import stack

    problems = []
    defaults = {name: info.default for name, info in Settings.model_fields.items()}
    topics = {k: _plain(v) for k, v in infra.resources["google_pubsub_topic"].items()}
    requests_topic = topics.get("generation_requests", {}).get("name")
    dead_topic = topics.get("dead_letter", {}).get("name")
    if not requests_topic == defaults["generations_topic"] == stack.TOPIC:
        problems.append(
            f"topic {requests_topic!r}, GENERATIONS_TOPIC default "
            f"{defaults['generations_topic']!r} and the local stack's {stack.TOPIC!r} differ"
        )
    if dead_topic != stack.DEAD_LETTER_TOPIC:
        problems.append(
            f"dead-letter topic {dead_topic!r}, local stack {stack.DEAD_LETTER_TOPIC!r}"
        )
    topic_refs = {
        _ref("google_pubsub_topic.generation_requests.id"): stack.TOPIC,
        _ref("google_pubsub_topic.dead_letter.id"): stack.DEAD_LETTER_TOPIC,
    }
    deployed_triggers = {
        (topic_refs.get(spec["event_trigger"].get("topic"), "?"), name)
        for name, spec in infra.functions.items()
        if spec.get("event_trigger")
    }
    local_triggers = {(topic, function) for _, _, topic, function in stack.TRIGGERS}
    if deployed_triggers != local_triggers:
        problems.append(
            f"Eventarc triggers (topic, function) {sorted(deployed_triggers)} differ from the "
            f"local stack's relays {sorted(local_triggers)}"
        )
    dispatcher_trigger = (infra.functions.get("dispatcher") or {}).get("event_trigger") or {}
    dead_letter = dispatcher_trigger.get("dead_letter") or {}
    if dead_letter.get("topic") != _ref("google_pubsub_topic.dead_letter.id"):
        problems.append("the dispatcher's trigger does not dead-letter to the dead-letter topic")
    attempts = infra.locals.get("max_delivery_attempts")
    if dead_letter.get("max_delivery_attempts") != _ref("local.max_delivery_attempts") or (
        attempts != stack.MAX_DELIVERY_ATTEMPTS
    ):
        problems.append(
            f"max delivery attempts {attempts} differ from the local stack's "
            f"{stack.MAX_DELIVERY_ATTEMPTS}"
        )
    if not 5 <= (attempts or 0) <= 100:
        problems.append(f"max delivery attempts {attempts} outside Pub/Sub's 5..100")

    queue = infra.resource("google_cloud_tasks_queue", "watchdog")
    queue_re = re.compile(r"^projects/[^/]+/locations/[^/]+/queues/([^/]+)$")
    for where, full in (
        ("TASKS_QUEUE default", defaults["tasks_queue"]),
        ("stack", stack.TASKS_QUEUE),
    ):
        match = queue_re.match(full)
        if not match or match.group(1) != queue["name"]:
            problems.append(f"queue {queue['name']!r} is not the {where}'s ({full!r})")
    expected_queue = (
        "projects/${var.project_id}/locations/${var.region}/queues/"
        "${google_cloud_tasks_queue.watchdog.name}"
    )
    if infra.locals.get("tasks_queue") != expected_queue or queue.get("location") != _ref(
        "var.region"
    ):
        problems.append("local.tasks_queue is not the watchdog queue's full name")

    images = infra.modules.get("images_bucket", {})
    loras = infra.modules.get("lora_bucket", {})
    for module, setting in ((images, "images_bucket"), (loras, "lora_bucket")):
        suffix = str(defaults[setting]).removeprefix("imagegen")
        if not str(module.get("name", "")).endswith(suffix):
            problems.append(
                f"bucket {module.get('name')!r} does not end like {defaults[setting]!r}"
            )
    if sorted(images.get("delete_prefixes") or []) != sorted(ORPHAN_PREFIXES):
        problems.append(
            f"the images bucket's lifecycle prefixes {images.get('delete_prefixes')} are not "
            f"the code's {list(ORPHAN_PREFIXES)} (imagegen.cleanup.ORPHAN_PREFIXES)"
        )
    if "var.retention_days" not in str(images.get("delete_after_days")):
        problems.append("the images bucket's lifecycle age is not derived from var.retention_days")

    # Functions know one another (and themselves: the audience of their callers' tokens) by
    # Cloud Run's deterministic URL, https://<service>-<project number>.<region>.run.app.
    urls = str(infra.locals.get("function_url"))
    if "https://${name}-${local.project_number}.${var.region}.run.app" not in urls or any(
        f"'{name}'" not in urls for name in infra.functions
    ):
        problems.append(f"local.function_url is not every function's Cloud Run URL: {urls}")
    expected = {
        "IMAGES_BUCKET": _ref("module.images_bucket.name"),
        "LORA_BUCKET": _ref("module.lora_bucket.name"),
        "GENERATIONS_TOPIC": _ref("google_pubsub_topic.generation_requests.name"),
        "TASKS_QUEUE": _ref("local.tasks_queue"),
        "WEBHOOK_URL": _ref("local.function_url.webhook"),
        "WATCHDOG_URL": _ref("local.function_url.watchdog"),
        "CLEANUP_URL": _ref("local.function_url.cleanup"),
        "WATCHDOG_INVOKER": _ref('google_service_account.invoker["tasks"].email'),
        "CLEANUP_INVOKER": _ref('google_service_account.invoker["scheduler"].email'),
        "RETENTION_DAYS": _ref("var.retention_days"),
        "GCP_PROJECT": _ref("var.project_id"),
    }
    for function, spec in sorted(infra.functions.items()):
        for var, value in (spec.get("environment") or {}).items():
            if var in expected and value != expected[var]:
                problems.append(f"{function}: {var} = {value!r}, expected {expected[var]!r}")

    # The callers sign as the accounts the callees accept, with the callees' URL as audience.
    watchdog_invokers = (infra.functions.get("watchdog") or {}).get("invokers") or {}
    tasks_sa = _ref('google_service_account.invoker["tasks"].email')
    if list(watchdog_invokers.values()) != [f"serviceAccount:{tasks_sa}"]:
        problems.append(f"the watchdog's invokers {watchdog_invokers} are not the tasks account")
    cleanup_invokers = (infra.functions.get("cleanup") or {}).get("invokers") or {}
    scheduler_sa = _ref('google_service_account.invoker["scheduler"].email')
    if list(cleanup_invokers.values()) != [f"serviceAccount:{scheduler_sa}"]:
        problems.append(f"the cleanup function's invokers {cleanup_invokers} are not Scheduler's")
    job = infra.resource("google_cloud_scheduler_job", "cleanup")
    target = job.get("http_target") or {}
    token = target.get("oidc_token") or {}
    if not (
        target.get("uri") == token.get("audience") == _ref("local.function_url.cleanup")
        and token.get("service_account_email") == scheduler_sa
    ):
        problems.append("the scheduler job does not call CLEANUP_URL as CLEANUP_INVOKER")
    return problems


def check_indexes(infra: Infra, queries: Iterable[Query]) -> list[str]:
    """Every query that needs a composite index has it; every composite index serves one."""
    problems = []
    firestore = infra.modules.get("firestore", {})
    indexes = {
        key: (
            spec["collection"],
            tuple((f["field_path"], f["order"]) for f in spec["fields"]),
        )
        for key, spec in (firestore.get("composite_indexes") or {}).items()
    }

    def serves(
        index: tuple[str, tuple[tuple[str, str], ...]],
        collection: str,
        shape: tuple[frozenset[str], tuple[tuple[str, str], ...]],
    ) -> bool:
        index_collection, fields = index
        fields = tuple(f for f in fields if f[0] != "__name__")
        equalities, orders = shape
        prefix, suffix = fields[: len(equalities)], fields[len(equalities) :]
        return (
            index_collection == collection
            and {f for f, _ in prefix} == equalities
            and suffix == orders
        )

    queries = list(queries)
    for query in queries:
        needed = query.composite()
        if needed and not any(serves(i, query.collection, needed) for i in indexes.values()):
            fields = [*sorted(needed[0]), *(f"{f} {d}" for f, d in needed[1])]
            problems.append(f"no composite index ({', '.join(fields)}) for {query.describe()}")
    for key, index in sorted(indexes.items()):
        if not any(
            (shape := q.exact()) is not None and serves(index, q.collection, shape) for q in queries
        ):
            problems.append(f"composite index {key} {index} serves no query of the code")
    ttl = firestore.get("ttl_fields") or {}
    wanted = {("idempotencyKeys", "expire_at"), ("deletedGenerations", "expire_at")}
    have = {(t["collection"], t["field"]) for t in ttl.values()}
    for collection, name in sorted(wanted - have):
        problems.append(f"no TTL policy on {collection}.{name}")
    for collection, name in sorted(have):
        queried = any(
            q.collection == collection
            and name in q.equalities | q.inequalities | {f for f, _ in q.orders}
            for q in queries
        )
        if queried:
            problems.append(f"TTL field {collection}.{name} has its indexes off but is queried")
    return problems


def check_query_sites(sites: set[str]) -> list[str]:
    problems = [
        f"{site} builds a Firestore query that recorded_queries() does not run"
        for site in sorted(sites - set(QUERY_SITES))
    ]
    problems += [
        f"{site} no longer builds a query: drop it from QUERY_SITES"
        for site in sorted(set(QUERY_SITES) - sites)
    ]
    return problems


def check_access(infra: Infra, reads: dict[str, frozenset[str]]) -> list[str]:
    """Ingress, invokers and grants follow from what each function's code does."""
    problems = []
    loc = infra.locals
    fn_ref = {name: f"${{local.fn.{name}}}" for name in infra.functions}
    member_of = {v: k for k, v in fn_ref.items()}
    for name, spec in sorted(infra.functions.items()):
        public = bool(spec.get("public"))
        invokers = spec.get("invokers") or {}
        if public and name not in ("api", "webhook"):
            problems.append(f"{name} is public; only the api and fal's webhook may be")
        if not public and spec.get("event_trigger") is None and not invokers:
            problems.append(f"{name} is a private HTTP function nobody may invoke")
        if any(m in ("allUsers", "allAuthenticatedUsers") for m in invokers.values()):
            problems.append(f"{name} lists a public principal among its invokers")
    # The module derives ingress and allUsers from `public` alone.
    function = _plain(infra.function_module["google_cloudfunctions2_function"]["this"])
    ingress = (function.get("service_config") or {}).get("ingress_settings")
    if ingress != '${var.public ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"}':
        problems.append(f"the function module's ingress is {ingress!r}, not derived from public")
    public_member = _plain(
        infra.function_module["google_cloud_run_v2_service_iam_member"]["public"]
    )
    if public_member.get("count") != "${var.public ? 1 : 0}":
        problems.append("allUsers may invoke a function not declared public")

    # Project-level roles come from two lists only; everything else is resource-level.
    for role in sorted(set(loc.get("function_project_roles") or []) - FUNCTION_PROJECT_ROLES):
        problems.append(f"functions hold the project-level role {role}")
    for role in sorted(set(loc.get("build_project_roles") or []) & BROAD_ROLES):
        problems.append(f"the build account holds the broad project-level role {role}")
    grants = str(loc.get("project_grants"))
    if "roles/" in grants or "local.function_project_roles" not in grants:
        problems.append("project_grants grants roles other than the two role lists")
    for module in (infra.resources, infra.function_module):
        for rtype, instances in module.items():
            if rtype.startswith("google_project_iam") and set(instances) != {"grants"}:
                problems.append(f"project IAM outside project_grants: {rtype} {sorted(instances)}")

    secret_grants = loc.get("secret_grants") or {}
    granted = {(g["secret"], member_of.get(g["member"])) for g in secret_grants.values()}
    # local.secrets is keyed by the setting's name (fal_key, webhook_hmac_key).
    secret_keys = {env_name(setting): setting for setting in secret_settings()}
    wanted = {
        (secret_keys.get(var, var), name)
        for name, spec in infra.functions.items()
        for var in (spec.get("secrets") or {})
    }
    for secret, name in sorted(wanted - granted):
        problems.append(f"{name} reads the secret {secret} but may not access it")
    for secret, name in sorted(granted - wanted):
        problems.append(f"{name} may access the secret {secret} but is not given it")

    signers = set(loc.get("url_signers") or [])
    signing = {name for name, read in reads.items() if "signing_credentials_file" in read}
    for name in sorted(signing - signers):
        problems.append(f"{name} signs URLs (imagegen.url_signing) but may not signBlob as itself")
    for name in sorted(signers - signing):
        problems.append(f"{name} may signBlob as itself but never signs a URL")

    creators = set((loc.get("task_creators") or {}).keys())
    enqueueing = {name for name, read in reads.items() if "tasks_queue" in read}
    for name in sorted(enqueueing ^ creators):
        problems.append(
            f"{name}: creates watchdog tasks: {name in enqueueing}, may enqueue: {name in creators}"
        )
    publishers = {member_of.get(g["member"]) for g in (loc.get("topic_grants") or {}).values()}
    publishing = {name for name, read in reads.items() if "generations_topic" in read}
    for name in sorted(publishing ^ publishers):
        problems.append(
            f"{name}: publishes generations: {name in publishing}, "
            f"may publish: {name in publishers}"
        )
    for key, grant in sorted((loc.get("bucket_grants") or {}).items()):
        if grant.get("role") not in ("roles/storage.objectUser", "roles/storage.objectViewer"):
            problems.append(f"bucket grant {key} is {grant.get('role')}")
    return problems


def check_cloudbuild(path: Path, makefile: Path) -> list[str]:
    """cloudbuild.yaml parses, its steps run only Makefile targets and known tools, the tests
    run in the emulators image, the environment is a substitution, apply is main-only."""
    problems = []
    try:
        build = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f"cloudbuild.yaml does not parse: {exc}"]
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile.read_text(), flags=re.M))
    steps = build.get("steps") or []
    ids = [s.get("id") for s in steps]
    for wanted in ("install", "lint", "test", "bundle", "plan", "apply"):
        if wanted not in ids:
            problems.append(f"cloudbuild.yaml has no `{wanted}` step")
    if "_ENV" not in (build.get("substitutions") or {}):
        problems.append("cloudbuild.yaml does not take the environment as _ENV")
    for step in steps:
        script = step.get("script") or " ".join(step.get("args") or [])
        for target in re.findall(r"(?:^|[;&|{(])\s*make\s+([A-Za-z][\w-]*)", script, re.M):
            if target not in targets:
                problems.append(f"step {step.get('id')} runs `make {target}`: no such target")
        continued = False
        for line in script.splitlines():
            words = line.strip().split()
            starts_command = not continued
            continued = line.rstrip().endswith("\\")
            if not starts_command or not words or words[0].startswith("#"):
                continue
            if "=" in words[0] or words[0] in SHELL_WORDS:
                continue
            if words[0] not in CI_TOOLS:
                problems.append(f"step {step.get('id')} runs `{words[0]}`, not a known tool")
    test = next((s for s in steps if s.get("id") == "test"), {})
    if not re.match(
        r"gcr\.io/google\.com/cloudsdktool/google-cloud-cli:emulators$", str(test.get("name"))
    ):
        problems.append("the test step does not run in the cloud-sdk emulators image")
    apply = next((s for s in steps if s.get("id") == "apply"), {})
    if not re.search(r'BRANCH_NAME.*!=\s*"main"', str(apply.get("script"))):
        problems.append("the apply step is not guarded by BRANCH_NAME == main")
    return problems


# What the build's scripts may run: the Makefile, and what the images provide.
CI_TOOLS = {
    "make",
    "terraform",
    "gcloud",
    "python3",
    "apt-get",
    "command",
    "curl",
    "grep",
    "sed",
    "sha256sum",
    "chmod",
    "mkdir",
    "cd",
    "test",
    "echo",
    "exit",
    "set",
    "export",
}
SHELL_WORDS = {"if", "then", "else", "elif", "fi", "for", "do", "done", "{", "}", "(", ")"}


def checkov_results(directory: Path = TERRAFORM) -> dict[str, Any]:
    """checkov's JSON report over a terraform directory (offline: --skip-download)."""
    import json
    import sys

    checkov = Path(sys.executable).with_name("checkov")
    completed = subprocess.run(
        [
            str(checkov),
            "-d",
            str(directory),
            "--framework",
            "terraform",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    report = json.loads(completed.stdout)
    return report[0] if isinstance(report, list) else report
