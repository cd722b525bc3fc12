"""The webhook URL handed to fal carries the generation id and part, with an HMAC.

fal may deliver the webhook before the dispatcher has stored fal's request id (or the
dispatcher may crash in between); the signed query lets the webhook attribute the result
anyway, and the HMAC stops anyone from pointing a fal result at someone else's generation.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit


@dataclass(frozen=True)
class PartRef:
    generation_id: str
    part_index: int


def _mac(key: bytes, generation_id: str, part_index: int) -> str:
    message = f"{generation_id}\n{part_index}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def build(base_url: str, key: bytes, generation_id: str, part_index: int) -> str:
    scheme, netloc, path, query, _ = urlsplit(base_url)
    extra = urlencode(
        {"gid": generation_id, "part": part_index, "sig": _mac(key, generation_id, part_index)}
    )
    return urlunsplit((scheme, netloc, path or "/", f"{query}&{extra}" if query else extra, ""))


def parse(args: dict[str, str], key: bytes) -> PartRef | None:
    """The part named by a webhook's query string, or None if absent or not ours."""
    generation_id, part, sig = args.get("gid"), args.get("part"), args.get("sig")
    if (
        not generation_id
        or not part
        or not sig
        or not (part.isascii() and part.isdigit())
        or len(part) > 4
    ):
        return None
    if not hmac.compare_digest(_mac(key, generation_id, int(part)), sig):
        return None
    return PartRef(generation_id, int(part))
