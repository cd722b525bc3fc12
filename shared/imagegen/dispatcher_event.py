"""The dispatcher's event edge: Eventarc CloudEvent → Pub/Sub envelope → generation id.

A message that can never be understood is logged and acknowledged (returning drops it);
only failures that another delivery could fix are raised.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic

from imagegen import context
from imagegen.dispatch import dispatch
from imagegen.models.events import generation_id_of
from imagegen.settings import get_settings

log = logging.getLogger(__name__)


def handle(data: Any, event_id: str | None = None) -> None:
    try:
        generation_id = generation_id_of(data)
    except pydantic.ValidationError as exc:
        log.error("dropping malformed Pub/Sub event %s: %s", event_id, exc.errors()[:3])
        return
    dispatch(
        generation_id,
        context.generations(),
        context.fal_gateway(),
        context.url_signer,
        get_settings(),
        context.watchdog(),
    )
