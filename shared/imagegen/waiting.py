"""`Prefer: wait=N` (RFC 7240): hold a response until the generation ends or N seconds pass.

For synchronous clients (seed 000's endpoint answered with the images). The wait polls the
record with a gentle backoff; the function's own timeout must exceed the longest wait.
"""

from __future__ import annotations

import re
import time

from imagegen.models.records import Generation
from imagegen.repository import GenerationRepository

MAX_WAIT_SECONDS = 60
_WAIT = re.compile(r"(?:^|[\s,;])wait\s*=\s*(\d{1,6})(?:$|[\s,;])", re.IGNORECASE)


def preferred_wait(prefer: str | None) -> int | None:
    """Seconds asked for by a Prefer header, capped at 60; None if it asks for no wait."""
    if not prefer:
        return None
    match = _WAIT.search(prefer)
    if match is None:
        return None
    return min(int(match.group(1)), MAX_WAIT_SECONDS)


def wait_for_end(repo: GenerationRepository, generation: Generation, seconds: float) -> Generation:
    deadline = time.monotonic() + seconds
    delay = 0.1
    current = generation
    while not current.is_terminal:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 1.0)
        current = repo.get(generation.id) or current
    return current
