from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    """Every model of ours. Its validator and serializer are built on first use rather than
    at import: an instance starting cold builds only the models its first request needs
    (decision 0010). pydantic>=2.14 makes that first build safe across threads."""

    model_config = ConfigDict(defer_build=True)


class ApiModel(Model):
    """A body the public API reads: camelCase or snake_case in, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


class ResponseModel(Model):
    """A body the public API writes: always camelCase."""

    model_config = ConfigDict(
        alias_generator=to_camel, serialize_by_alias=True, validate_by_name=True
    )
