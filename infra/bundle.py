"""Deployment bundles: one zip per Cloud Function, what Terraform uploads and deploys.

    python -m infra.bundle [--out dist] [--explain]     # `make bundle`

`dist/<function>.zip` holds the function's folder (`main.py` at the root), the shared
package (`imagegen/`, without caches or tests) and a `requirements.txt` pinned exactly from
`uv.lock` with only the distributions that function can import, and what they depend on.

Which distributions a function needs is derived, not declared: starting from its `main.py`,
the imports are followed through `imagegen` name by name (a module-level import loads a
module; a function's or class's own imports, which this package makes lazily so that each
function only pays for the libraries it uses, count only when something reachable refers to
that function or class). Each imported module is mapped to the distribution that installed
it in this environment, and the lock file's dependency graph adds what those depend on.
The analysis errs towards including: a class brings all its methods, a decorated function
counts as used unless the decorator is a known pure one (functools.cache and friends).
If a dynamic lookup ever hides a dependency from it, name the distribution in EXTRA.
tests/e2e/test_bundles.py runs every third-party import the analysis found in each
installed bundle, so a library missing from a function's requirements fails there.

Bundles are deterministic (sorted entries, fixed timestamps and modes, stored uncompressed):
an unchanged function produces a byte-identical zip, so Terraform redeploys only what
changed.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TypeGuard

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"
PACKAGE_DIR = ROOT / "shared" / "imagegen"
PACKAGE = "imagegen"
LOCK = ROOT / "uv.lock"

# Distributions a function needs that the import analysis cannot see (keep this empty
# unless a dynamic import makes it necessary): {function: {distribution, ...}}.
EXTRA: dict[str, set[str]] = {}

# Decorators that neither call nor register the function they wrap: a function decorated
# only with these is used when something refers to it, not merely by being defined.
PURE_DECORATORS = {
    "cache",
    "lru_cache",
    "cached_property",
    "wraps",
    "contextmanager",
    "asynccontextmanager",
    "dataclass",
    "property",
    "staticmethod",
    "classmethod",
    "abstractmethod",
    "overload",
    "final",
    "Once",  # imagegen.once: calls the factory on first use, not when decorating
}
SKIPPED_PARTS = {"__pycache__", "tests", "test", ".pytest_cache", ".ruff_cache", ".venv"}
SKIPPED_SUFFIXES = {".pyc", ".pyo"}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# The environment the Cloud Functions build runs with (terraform/modules/function sets the
# same; tests/unit/test_infrastructure.py checks they agree). The buildpack compiles the
# uploaded folder with `compileall -f -q .`; with SOURCE_DATE_EPOCH set it writes
# hash-checked bytecode, which stays valid after the image export resets every file's
# mtime to 1980-01-01 00:00:01 UTC. Timestamped bytecode would not: every instance would
# compile the package from source again on its cold start (decision 0009).
BUILD_ENVIRONMENT = {"SOURCE_DATE_EPOCH": "315532801"}


# ---------------------------------------------------------------------------------------
# Entry points


@dataclass(frozen=True)
class EntryPoint:
    name: str  # the function folder's name
    target: str  # the decorated function in main.py
    signature_type: str  # "http" or "cloudevent"
    folder: Path


SIGNATURES = {"http": "http", "cloud_event": "cloudevent"}


def entry_point(folder: Path) -> EntryPoint:
    """The target and signature type of `folder/main.py`, from its functions_framework
    decorator (`@functions_framework.http` or `@functions_framework.cloud_event`)."""
    tree = ast.parse((folder / "main.py").read_text())
    found = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            dotted = _dotted(decorator)
            if dotted and dotted.startswith("functions_framework."):
                kind = dotted.removeprefix("functions_framework.")
                if kind in SIGNATURES:
                    found.append(EntryPoint(folder.name, node.name, SIGNATURES[kind], folder))
    if len(found) != 1:
        raise SystemExit(f"{folder / 'main.py'}: expected one functions_framework entry point")
    return found[0]


def entry_points(functions_dir: Path = FUNCTIONS_DIR) -> list[EntryPoint]:
    return [entry_point(p.parent) for p in sorted(functions_dir.glob("*/main.py"))]


# ---------------------------------------------------------------------------------------
# Import analysis

# What a name is bound to: ("module", "imagegen.x"), ("symbol", "imagegen.x", "Name") or
# ("external", "dotted.name") for anything outside the package.
Binding = tuple[str, ...]
# A unit of code that runs as a whole: ("module", m) is m's top-level code, ("def", m, name)
# one of its top-level functions or classes (a class with all its methods).
Node = tuple[str, ...]


@dataclass
class _Module:
    name: str
    tree: ast.Module
    is_package: bool
    future_annotations: bool
    defs: dict[str, ast.AST] = field(default_factory=dict)
    bindings: dict[str, Binding] = field(default_factory=dict)


def _dotted(node: ast.AST) -> str | None:
    """`a.b.c` for a Name/Attribute chain (a call's function for a decorator call)."""
    if isinstance(node, ast.Call):
        node = node.func
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _is_type_checking(node: ast.AST) -> TypeGuard[ast.If]:
    return isinstance(node, ast.If) and _dotted(node.test) in (
        "TYPE_CHECKING",
        "typing.TYPE_CHECKING",
    )


class ImportGraph:
    """The package's modules, and what each function's code can reach through them."""

    def __init__(self, package_dir: Path = PACKAGE_DIR, package: str = PACKAGE) -> None:
        self.package = package
        self.modules: dict[str, _Module] = {}
        for path in sorted(package_dir.rglob("*.py")):
            relative = path.relative_to(package_dir)
            if SKIPPED_PARTS & set(relative.parts):
                continue
            parts = [package, *relative.with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            self._parse(".".join(parts), path, is_package)
        # Bindings once every module is known: `from imagegen import x` must know x is one.
        for module in self.modules.values():
            self._bind(module)

    def _parse(self, name: str, path: Path, is_package: bool) -> _Module:
        tree = ast.parse(path.read_text(), str(path))
        future = any(
            isinstance(n, ast.ImportFrom)
            and n.module == "__future__"
            and any(a.name == "annotations" for a in n.names)
            for n in tree.body
        )
        module = self.modules[name] = _Module(name, tree, is_package, future)
        return module

    def _bind(self, module: _Module) -> None:
        for stmt in self._top_level(module.tree.body):
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                module.defs[stmt.name] = stmt
            elif isinstance(stmt, ast.Import | ast.ImportFrom):
                module.bindings.update(self._import_bindings(stmt, module))

    @staticmethod
    def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
        """Statements that run when the module loads, through if/try/with blocks but not
        into `if TYPE_CHECKING:`."""
        for stmt in body:
            yield stmt
            if _is_type_checking(stmt):
                yield from ImportGraph._top_level(stmt.orelse)
            elif isinstance(stmt, ast.If | ast.For | ast.While | ast.With | ast.Try):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(stmt, block, [])
                    if block == "handlers":
                        inner = [s for h in inner for s in h.body]
                    yield from ImportGraph._top_level(inner)

    # -- imports

    def _absolute(self, stmt: ast.ImportFrom, module: _Module) -> str:
        if not stmt.level:
            return stmt.module or ""
        base = module.name.split(".")
        if not module.is_package:
            base.pop()
        base = base[: len(base) - (stmt.level - 1)]
        return ".".join(base + ([stmt.module] if stmt.module else []))

    def _internal(self, dotted: str) -> bool:
        return dotted == self.package or dotted.startswith(self.package + ".")

    def _import_bindings(self, stmt: ast.Import | ast.ImportFrom, module: _Module):
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                target = alias.name if alias.asname else alias.name.split(".")[0]
                kind = "module" if self._internal(target) else "external"
                yield (alias.asname or alias.name.split(".")[0]), (kind, target)
            return
        source = self._absolute(stmt, module)
        for alias in stmt.names:
            if alias.name == "*":
                continue
            bound = alias.asname or alias.name
            if not self._internal(source):
                yield bound, ("external", f"{source}.{alias.name}")
            elif f"{source}.{alias.name}" in self.modules:
                yield bound, ("module", f"{source}.{alias.name}")
            else:
                yield bound, ("symbol", source, alias.name)

    def _import_effects(self, stmt: ast.Import | ast.ImportFrom, module: _Module):
        """What running an import statement needs: modules of the package it loads
        (("module", m) nodes) and external modules (("external", dotted))."""
        if isinstance(stmt, ast.Import):
            names = [a.name for a in stmt.names]
        else:
            source = self._absolute(stmt, module)
            if source == "__future__":
                return
            # `from a.b import c` needs a.b.c's owner, or a.b's (c is then an attribute).
            names = [f"{source}.{a.name}" for a in stmt.names if a.name != "*"] or [source]
            if self._internal(source):
                names.insert(0, source)
            if any(a.name == "*" for a in stmt.names) and source in self.modules:
                yield ("star", source)
        for dotted in names:
            if self._internal(dotted):
                parts = dotted.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    if prefix in self.modules:
                        yield ("module", prefix)
            else:
                yield ("external", dotted)

    # -- references

    def _resolve_symbol(self, module_name: str, name: str, attrs: list[str], seen: frozenset):
        """The nodes `module.name.attrs…` refers to: a function or class of the module, what
        it imported under that name, a submodule, or else (a variable) its top-level code."""
        module = self.modules.get(module_name)
        if module is None or (module_name, name) in seen:
            return
        seen = seen | {(module_name, name)}
        yield ("module", module_name)
        if name in module.defs:
            yield ("def", module_name, name)
        elif name in module.bindings:
            yield from self._resolve_binding(module.bindings[name], attrs, seen)
        elif f"{module_name}.{name}" in self.modules:
            yield from self._resolve_binding(("module", f"{module_name}.{name}"), attrs, seen)

    def _resolve_binding(self, binding: Binding, attrs: list[str], seen=frozenset()):
        if binding[0] == "module":
            current = binding[1]
            yield ("module", current)
            for i, attr in enumerate(attrs):
                if f"{current}.{attr}" not in self.modules:
                    yield from self._resolve_symbol(current, attr, attrs[i + 1 :], seen)
                    return
                current = f"{current}.{attr}"
                yield ("module", current)
        elif binding[0] == "symbol":
            yield from self._resolve_symbol(binding[1], binding[2], attrs, seen)

    def _references(self, code: Iterable[ast.AST], module: _Module, local: dict[str, Binding]):
        """Nodes that names in `code` refer to (attribute chains resolved through modules)."""
        for tree in code:
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute | ast.Name) and isinstance(node.ctx, ast.Load):
                    chain = _dotted(node)
                    if chain is None:
                        continue
                    head, *attrs = chain.split(".")
                    if head in local:
                        yield from self._resolve_binding(local[head], attrs)
                    elif head in module.defs:
                        yield ("def", module.name, head)
                    elif head in module.bindings:
                        yield from self._resolve_binding(module.bindings[head], attrs)

    # -- the code of a node

    def _strip(self, tree: ast.AST, module: _Module) -> list[ast.AST]:
        """`tree` without what never runs: `if TYPE_CHECKING:` blocks, and annotations of
        functions when they are strings (`from __future__ import annotations`)."""
        kept: list[ast.AST] = []

        def visit(node: ast.AST) -> None:
            if _is_type_checking(node):
                for statement in node.orelse:
                    visit(statement)
                return
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                args = node.args
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    for d in node.decorator_list:
                        visit(d)
                    if not module.future_annotations and node.returns is not None:
                        visit(node.returns)
                for default in [*args.defaults, *args.kw_defaults]:
                    if default is not None:
                        visit(default)
                if not module.future_annotations:
                    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
                    every += [a for a in (args.vararg, args.kwarg) if a is not None]
                    for a in every:
                        if a.annotation is not None:
                            visit(a.annotation)
                body = node.body if isinstance(node.body, list) else [node.body]
                for stmt in body:
                    visit(stmt)
                return
            if isinstance(node, ast.AnnAssign) and module.future_annotations:
                # A variable's annotation is a string (class fields: see their callers).
                for side in (node.target, node.value):
                    if side is not None:
                        visit(side)
                return
            if isinstance(node, ast.expr | ast.Import | ast.ImportFrom):
                kept.append(node)
                return
            for child in ast.iter_child_nodes(node):
                visit(child)

        visit(tree)
        return kept

    def _module_code(self, module: _Module) -> tuple[list[ast.AST], list[Node]]:
        """What runs when the module loads, and the definitions it hands to decorators that
        may call or register them (such a definition counts as used)."""
        code: list[ast.AST] = []
        used: list[Node] = []

        def top(body: list[ast.stmt]) -> None:
            for stmt in body:
                if _is_type_checking(stmt):
                    top(stmt.orelse)
                elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    code.extend(self._strip_decorators_and_header(stmt, module))
                    if any(not self._pure(d) for d in stmt.decorator_list):
                        used.append(("def", module.name, stmt.name))
                elif isinstance(stmt, ast.If | ast.For | ast.While | ast.With | ast.Try):
                    header = [getattr(stmt, "test", None), getattr(stmt, "iter", None)]
                    header += [i.context_expr for i in getattr(stmt, "items", [])]
                    header += [h.type for h in getattr(stmt, "handlers", [])]
                    for part in header:
                        if part is not None:
                            code.extend(self._strip(part, module))
                    for block in ("body", "orelse", "finalbody"):
                        top(getattr(stmt, block, []))
                    for handler in getattr(stmt, "handlers", []):
                        top(handler.body)
                else:
                    code.extend(self._strip(stmt, module))

        top(module.tree.body)
        return code, used

    def _strip_decorators_and_header(
        self, stmt: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, module: _Module
    ) -> list[ast.AST]:
        """The parts of a top-level def or class that run at load time: decorators and
        defaults; for a class also its bases and its body except the methods' bodies."""
        if isinstance(stmt, ast.ClassDef):
            code: list[ast.AST] = []
            for part in [*stmt.decorator_list, *stmt.bases, *(k.value for k in stmt.keywords)]:
                code.extend(self._strip(part, module))
            for inner in stmt.body:
                if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    code.extend(self._strip_decorators_and_header(inner, module))
                else:
                    # Field annotations (strings here) count once the class is used, when
                    # pydantic resolves them: see _node_code.
                    code.extend(self._strip(inner, module))
            return code
        code = []
        args = stmt.args
        parts: list[ast.expr | None] = [*stmt.decorator_list, *args.defaults, *args.kw_defaults]
        if not module.future_annotations:  # annotations are evaluated when `def` runs
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            parts += [a.annotation for a in every if a is not None] + [stmt.returns]
        for item in parts:
            if item is not None:
                code.extend(self._strip(item, module))
        return code

    def _pure(self, decorator: ast.AST) -> bool:
        dotted = _dotted(decorator)
        return dotted is not None and dotted.split(".")[-1] in PURE_DECORATORS

    def _node_code(self, node: Node) -> tuple[_Module, list[ast.AST], list[Node]]:
        module = self.modules[node[1]]
        if node[0] == "module":
            code, used = self._module_code(module)
            return module, code, used
        definition = module.defs[node[2]]
        if isinstance(definition, ast.ClassDef):
            code = self._strip(definition, module)
            for inner in definition.body:
                if isinstance(inner, ast.AnnAssign):
                    code.extend(self._strip(inner.annotation, module))
            return module, code, []
        return module, self._strip(definition, module), []

    # -- reachability

    def reachable(self, main_py: Path) -> Reach:
        """Everything the code of `main_py` can run: package nodes and external imports."""
        entry = self._parse("main", main_py, is_package=False)
        self._bind(entry)
        try:
            return self._walk(entry)
        finally:
            del self.modules["main"]

    def _walk(self, entry: _Module) -> Reach:
        reach = Reach()
        # Breadth first, so that --explain shows the shortest way to each import.
        todo: deque[tuple[Node, Node | None]] = deque([(("module", entry.name), None)])
        while todo:
            node, parent = todo.popleft()
            if node in reach.nodes:
                continue
            reach.nodes[node] = parent
            if node[0] == "def":
                todo.append((("module", node[1]), node))
            module, code, used = self._node_code(node)
            todo.extend((u, node) for u in used)
            local: dict[str, Binding] = {}
            for part in code:
                if isinstance(part, ast.Import | ast.ImportFrom):
                    if node[0] == "def":
                        local.update(self._import_bindings(part, module))
                    for effect in self._import_effects(part, module):
                        if effect[0] == "external":
                            reach.external.setdefault(effect[1], node)
                            if effect[1].split(".")[0] not in sys.stdlib_module_names:
                                reach.statements.add(ast.unparse(part))
                        elif effect[0] == "star":
                            source = self.modules[effect[1]]
                            for name in source.defs:
                                todo.append((("def", effect[1], name), node))
                        else:
                            todo.append((effect, node))
            todo.extend((ref, node) for ref in self._references(code, module, local))
        return reach


@dataclass
class Reach:
    # Every reachable node, with the node that first reached it (for --explain).
    nodes: dict[Node, Node | None] = field(default_factory=dict)
    # Every external module imported by reachable code, with the node importing it.
    external: dict[str, Node] = field(default_factory=dict)
    # Those statements (third-party ones): each must succeed where the function runs.
    statements: set[str] = field(default_factory=set)

    def path_to(self, node: Node | None) -> list[str]:
        path = []
        while node is not None:
            path.append(node[1] if node[0] == "module" else f"{node[1]}.{node[2]}")
            node = self.nodes.get(node)
        return list(reversed(path))


# ---------------------------------------------------------------------------------------
# Modules → distributions → pinned requirements


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def module_owners() -> dict[str, str]:
    """Importable module name → the installed distribution that provides it."""
    owners: dict[str, str] = {}
    for dist in metadata.distributions():
        name = normalize(dist.metadata["Name"])
        for file in dist.files or ():
            parts = list(file.parts)
            if not parts or parts[0].endswith((".dist-info", ".data")) or ".." in parts:
                continue
            leaf = parts[-1]
            if leaf == "__init__.py":
                module = parts[:-1]
            elif leaf.endswith(".py"):
                module = [*parts[:-1], leaf[:-3]]
            elif leaf.endswith((".so", ".pyd")):
                module = [*parts[:-1], leaf.split(".")[0]]
            else:
                continue
            if module and all(p.isidentifier() for p in module):
                owners.setdefault(".".join(module), name)
    return owners


def distribution_of(dotted: str, owners: dict[str, str]) -> str | None:
    """The distribution providing `dotted` (its longest prefix that is a module); None for
    the standard library."""
    parts = dotted.split(".")
    if parts[0] in sys.stdlib_module_names or parts[0] == "__future__":
        return None
    for i in range(len(parts), 0, -1):
        owner = owners.get(".".join(parts[:i]))
        if owner:
            return owner
    raise SystemExit(f"cannot tell which distribution provides `{dotted}`: is .venv synced?")


def uv_command() -> list[str]:
    """uv as the Makefile runs it (`python3 -m uv`), or from PATH."""
    if shutil.which("uv"):
        return ["uv"]
    return ["python3", "-m", "uv"]


@dataclass(frozen=True)
class Lock:
    """uv.lock's runtime dependency graph and its exported pins."""

    graph: dict[str, set[str]]  # distribution → what it depends on (extras included)
    pins: dict[str, list[str]]  # distribution → its requirement lines (with markers)

    @classmethod
    def load(cls, lock: Path = LOCK) -> Lock:
        data = tomllib.loads(lock.read_text())
        graph: dict[str, set[str]] = {}
        extras: dict[tuple[str, str], set[str]] = {}
        edges: dict[str, list[dict]] = {}
        for package in data["package"]:
            name = normalize(package["name"])
            edges.setdefault(name, []).extend(package.get("dependencies", []))
            for extra, deps in package.get("optional-dependencies", {}).items():
                extras.setdefault((name, extra), set()).update(normalize(d["name"]) for d in deps)
                edges.setdefault(name, []).extend(d for d in deps if d.get("extra"))
        for name, deps in edges.items():
            targets = graph.setdefault(name, set())
            for dep in deps:
                # Markers are kept (conservatively) as edges; the exported pins carry them.
                target = normalize(dep["name"])
                targets.add(target)
                for extra in dep.get("extra", []):
                    targets |= extras.get((target, extra), set())
        exported = subprocess.run(
            [*uv_command(), "export", "--frozen", "--no-dev", "--no-emit-project"]
            + ["--no-hashes", "--no-annotate", "--no-header", "--quiet"],
            cwd=lock.parent,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        pins: dict[str, list[str]] = {}
        for line in exported.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
            if not match:
                raise SystemExit(f"unexpected line in `uv export`: {line}")
            pins.setdefault(normalize(match.group(1)), []).append(line)
        return cls(graph, pins)

    def closure(self, direct: Iterable[str]) -> set[str]:
        found: set[str] = set()
        todo = list(direct)
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(self.graph.get(name, ()))
        return found

    def requirements(self, direct: Iterable[str]) -> str:
        direct = sorted(set(direct))
        missing = [d for d in direct if d not in self.pins]
        if missing:
            raise SystemExit(
                f"{', '.join(missing)} imported but not a runtime dependency in uv.lock:"
                " add it to pyproject.toml's dependencies"
            )
        lines = [line for name in sorted(self.closure(direct)) for line in self.pins.get(name, [])]
        header = "# Pinned from uv.lock by infra/bundle.py; direct: " + ", ".join(direct)
        return "\n".join([header, *lines]) + "\n"


# ---------------------------------------------------------------------------------------
# Bundles


@dataclass(frozen=True)
class Bundle:
    function: EntryPoint
    direct: tuple[str, ...]  # distributions imported (directly) by the function's code
    requirements: str
    why: dict[str, list[str]]  # distribution → import path that needs it
    imports: tuple[str, ...]  # every external import statement its code can run


def plan(
    functions_dir: Path = FUNCTIONS_DIR, package_dir: Path = PACKAGE_DIR, lock: Lock | None = None
) -> list[Bundle]:
    graph = ImportGraph(package_dir)
    owners = module_owners()
    lock = lock or Lock.load()
    bundles = []
    for function in entry_points(functions_dir):
        reach = graph.reachable(function.folder / "main.py")
        why: dict[str, list[str]] = {}
        for dotted, node in sorted(reach.external.items()):
            dist = distribution_of(dotted, owners)
            if dist and dist not in why:
                why[dist] = [*reach.path_to(node), dotted]
        for dist in EXTRA.get(function.name, ()):
            why.setdefault(normalize(dist), ["infra/bundle.py EXTRA"])
        direct = tuple(sorted(why))
        requirements = lock.requirements(direct)
        bundles.append(Bundle(function, direct, requirements, why, tuple(sorted(reach.statements))))
    return bundles


def _files(root: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir() or SKIPPED_PARTS & set(relative.parts):
            continue
        if path.suffix in SKIPPED_SUFFIXES or relative.name == "requirements.txt":
            continue
        if relative.name.startswith("test_") or relative.name == "conftest.py":
            continue
        yield f"{prefix}{relative.as_posix()}", path


def zip_bytes(bundle: Bundle, package_dir: Path = PACKAGE_DIR) -> bytes:
    entries = dict(_files(bundle.function.folder, ""))
    entries.update(_files(package_dir, f"{package_dir.name}/"))
    contents = {name: path.read_bytes() for name, path in entries.items()}
    contents["requirements.txt"] = bundle.requirements.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(contents):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            # Stored, not deflated: the bytes then depend on nothing but the inputs (not on
            # the zlib build), so any machine rebuilds an unchanged function identically.
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o100644 << 16
            info.create_system = 3  # Unix, whatever the building machine
            archive.writestr(info, contents[name])
    return buffer.getvalue()


def build(out: Path, *, explain: bool = False) -> list[tuple[Bundle, Path]]:
    """Writes `out/<function>.zip` for every function (a zip is only rewritten when its
    bytes change); returns each bundle with its zip."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for bundle in plan():
        data = zip_bytes(bundle)
        target = out / f"{bundle.function.name}.zip"
        changed = not target.exists() or target.read_bytes() != data
        if changed:
            temporary = target.with_suffix(".zip.tmp")
            temporary.write_bytes(data)
            temporary.replace(target)
        digest = hashlib.sha256(data).hexdigest()[:12]
        state = "written" if changed else "unchanged"
        print(
            f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}"
            f"  {len(data) / 1024:.0f} KiB  sha256 {digest}  {state}"
            f"  ({bundle.function.signature_type} {bundle.function.target}:"
            f" {', '.join(bundle.direct)})"
        )
        if explain:
            for dist, path in bundle.why.items():
                print(f"    {dist:24} {' → '.join(path)}")
        written.append((bundle, target))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="default: dist/")
    parser.add_argument(
        "--explain", action="store_true", help="show why each distribution is included"
    )
    args = parser.parse_args(argv)
    build(args.out.resolve(), explain=args.explain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
