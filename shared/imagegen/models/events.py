"""Events the functions receive: the Pub/Sub envelope and its message, and fal's webhook.

Envelope first, then the inner model: a malformed envelope and a malformed payload are
different failures, and both are reported as such rather than as a KeyError.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from imagegen.models.base import Model


class PubSubMessage(Model):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    data: bytes = b""
    message_id: str = Field("", alias="messageId")
    publish_time: str | None = Field(None, alias="publishTime")
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("data", mode="before")
    @classmethod
    def _decode(cls, value: Any) -> bytes:
        if value in (None, ""):
            return b""
        if isinstance(value, bytes):
            value = value.decode("ascii")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("message.data is not base64") from exc


class PubSubEnvelope(Model):
    """What Eventarc delivers for google.cloud.pubsub.topic.v1.messagePublished."""

    model_config = ConfigDict(extra="ignore")

    message: PubSubMessage
    subscription: str | None = None


class GenerationMessage(Model):
    """The body the api publishes: only the id; the record in Firestore is the truth."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    generation_id: str = Field(alias="generationId", min_length=1, max_length=128)


class FalImage(Model):
    model_config = ConfigDict(extra="ignore")

    url: str
    width: int | None = None
    height: int | None = None
    content_type: str | None = None


class FalOutput(Model):
    model_config = ConfigDict(extra="ignore")

    images: list[FalImage] = Field(default_factory=list)
    seed: int | str | None = None
    has_nsfw_concepts: list[bool] = Field(default_factory=list)
    timings: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None


class FalWebhook(Model):
    """fal's webhook body (https://docs.fal.ai/model-apis/model-endpoints/webhooks)."""

    model_config = ConfigDict(extra="ignore")

    request_id: str = Field(min_length=1, max_length=256)
    gateway_request_id: str | None = None
    status: Literal["OK", "ERROR"]
    payload: dict[str, Any] | None = None
    error: str | None = None
    payload_error: str | None = None


def generation_id_of(data: Any) -> str:
    """Envelope first, then the inner message; raises pydantic.ValidationError if either is
    malformed (callers drop such messages: no redelivery can fix them)."""
    envelope = PubSubEnvelope.model_validate(data)
    return GenerationMessage.model_validate_json(envelope.message.data).generation_id
