"""The libraries a function's deployment lacks, made unimportable (`make bench`'s cold starts).

.venv holds every dependency of every function and the dev tools; a deployed function has
only its bundle's requirements. Libraries probe for optional packages (the Cloud Tasks
client imports aiohttp's transport when aiohttp is importable, httpx its CLI's rich and
pygments), so in .venv a function would load 100+ ms of libraries its deployment never
sees. BENCH_ABSENT_MODULES (comma-separated module names, each with its submodules) lists
what the function's bundle does not install; importing one raises ModuleNotFoundError, as
it would in the deployment. One difference remains: `importlib.util.find_spec` of one
raises that error too, where the deployment would return None (no first request the
bench times failed from it: each is checked).
"""

import os
import sys

_ABSENT = frozenset(name for name in os.environ.get("BENCH_ABSENT_MODULES", "").split(",") if name)


class _Absent:
    @staticmethod
    def find_spec(name, path=None, target=None):
        # A set lookup per dot: this runs for every import of the process being timed.
        if name in _ABSENT or any(name[:i] in _ABSENT for i, c in enumerate(name) if c == "."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


if _ABSENT:
    sys.meta_path.insert(0, _Absent())
