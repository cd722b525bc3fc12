"""Loaded as `sitecustomize` (through PYTHONPATH) by `make bench`'s importtime runs only.

`python -X importtime` says which imports pulled a module in, but not which code ran the
outermost one when it happened during a request. For each library named in
BENCH_TRACE_IMPORTS (comma-separated), this prints the call stack of its first import to
stderr, one line: `bench-import-trace: <module> <- file:line function <- ...`, innermost
first. The "import" audit event fires only when a module is really loaded, not cached.
"""

import os
import sys

_WATCHED = tuple(name for name in os.environ.get("BENCH_TRACE_IMPORTS", "").split(",") if name)
_seen: set[str] = set()
# The project root (bench/bare/importtrace/ is three levels down), to shorten paths.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))) + "/"


def _library(module: str) -> str | None:
    for name in _WATCHED:
        if module == name or module.startswith(name + "."):
            return name
    return None


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/shared/", _ROOT):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _hook(event: str, args: tuple) -> None:
    if event != "import":
        return
    try:
        module = args[0]
        library = _library(module)
        if library is None or library in _seen:
            return
        _seen.add(library)
        frames = []
        frame = sys._getframe(1)
        while frame is not None and len(frames) < 12:
            filename = frame.f_code.co_filename
            if not filename.startswith("<frozen"):
                frames.append(f"{_short(filename)}:{frame.f_lineno} {frame.f_code.co_name}")
            frame = frame.f_back
        sys.stderr.write(f"bench-import-trace: {module} <- {' <- '.join(frames)}\n")
    except Exception:  # noqa: BLE001 - never break the import being traced
        pass


if _WATCHED:
    sys.addaudithook(_hook)

# This sitecustomize shadows bench/bare/deployed's (both are on PYTHONPATH): do its part too.
if os.environ.get("BENCH_ABSENT_MODULES"):
    import deployment_only  # noqa: F401 - installs itself
