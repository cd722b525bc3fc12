"""The garbage collector's settings for a function instance (decision 0012).

A cold instance's first request imports the client libraries it needs: 200-260 ms of
imports, hundreds of thousands of objects, almost none of them garbage. At CPython's
default threshold a young collection runs every 700 net allocations, over a hundred of them
during those imports, each finding nothing to free, and every tenth of those also traverses
the older objects. Fewer young collections made a cold start 30-70 ms faster (bench/README.md).

Called by each `main.py` once its code is imported: gunicorn's arbiter imports it and then
forks the worker, so what is loaded by then is frozen (the worker's collections never
traverse it, nor write to the memory pages it shares with the arbiter).
"""

from __future__ import annotations

import gc

# Young collections after this many net allocations instead of 700: a handful during a cold
# start instead of ~120; in steady state, one every several requests. What a collection
# can find (reference cycles) waits at most this long, a few MB at worst.
YOUNG_GENERATION_THRESHOLD = 50_000


def configure_gc() -> None:
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
