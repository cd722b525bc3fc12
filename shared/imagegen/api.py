"""The `api` function's router.

Every rule is declared here rather than in its resource module, so that routing a request
needs none of them: a resource's module is imported when a request first reaches it. A cold
instance pays for the resource it was woken for, not for all ten (decision 0010).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType

import flask
from werkzeug.routing import Map, Rule

from imagegen.openapi import Operation
from imagegen.routes.paths import API_KEYS_PATH, BATCH_PATH, GENERATIONS_PATH, LORAS_PATH
from imagegen.web import Handler, dispatch

# One function per module, each a plain import statement: the bundler's import analysis
# (infra/bundle.py) follows these, so a deployed function still ships what they load.


def _health() -> ModuleType:
    from imagegen.routes import health

    return health


def _openapi_doc() -> ModuleType:
    from imagegen.routes import openapi_doc

    return openapi_doc


def _generations() -> ModuleType:
    from imagegen.routes import generations

    return generations


def _batches() -> ModuleType:
    from imagegen.routes import batches

    return batches


def _models() -> ModuleType:
    from imagegen.routes import models

    return models


def _loras() -> ModuleType:
    from imagegen.routes import loras

    return loras


def _usage() -> ModuleType:
    from imagegen.routes import usage

    return usage


def _admin() -> ModuleType:
    from imagegen.routes import admin

    return admin


def _aliases() -> ModuleType:
    from imagegen.routes import aliases

    return aliases


def _playground() -> ModuleType:
    from imagegen.routes import playground

    return playground


@dataclass(frozen=True)
class Resource:
    """A resource module's rules, and how to load the module that serves them: it exports
    HANDLERS (endpoint name → handler) and OPERATIONS (its part of the API description)."""

    load: Callable[[], ModuleType]
    rules: tuple[Rule, ...]


def _rule(path: str, endpoint: str, method: str) -> Rule:
    return Rule(path, endpoint=endpoint, methods=[method])


RESOURCES = (
    Resource(_health, (_rule("/healthz", "health", "GET"),)),
    Resource(_openapi_doc, (_rule("/openapi.json", "openapi_document", "GET"),)),
    Resource(
        _generations,
        (
            _rule(GENERATIONS_PATH, "create_generation", "POST"),
            _rule(f"{GENERATIONS_PATH}/<generation_id>", "get_generation", "GET"),
            _rule(GENERATIONS_PATH, "list_generations", "GET"),
            _rule(f"{GENERATIONS_PATH}/<generation_id>", "delete_generation", "DELETE"),
            _rule(f"{GENERATIONS_PATH}/<generation_id>/cancel", "cancel_generation", "POST"),
        ),
    ),
    Resource(
        _batches,
        (
            _rule(BATCH_PATH, "create_batch", "POST"),
            _rule(f"{BATCH_PATH}/<batch_id>", "get_batch", "GET"),
        ),
    ),
    Resource(_models, (_rule("/v1/models", "list_models", "GET"),)),
    Resource(
        _loras,
        (
            _rule(LORAS_PATH, "list_loras", "GET"),
            _rule(LORAS_PATH, "create_lora", "POST"),
            _rule(f"{LORAS_PATH}/<lora_id>", "get_lora", "GET"),
            _rule(f"{LORAS_PATH}/<lora_id>", "delete_lora", "DELETE"),
        ),
    ),
    Resource(_usage, (_rule("/v1/usage", "get_usage", "GET"),)),
    Resource(
        _admin,
        (
            _rule(API_KEYS_PATH, "create_api_key", "POST"),
            _rule(API_KEYS_PATH, "list_api_keys", "GET"),
            _rule(f"{API_KEYS_PATH}/<key_id>", "revoke_api_key", "DELETE"),
        ),
    ),
    # The routes of the seed documents' own backends, for frontends written against them.
    Resource(
        _aliases,
        (
            _rule("/api/get-lora-models", "seed000_lora_models", "GET"),
            _rule("/api/generate-image", "seed000_generate_image", "POST"),
            _rule("/api/images/history/", "seed001_history", "GET"),
            _rule("/api/images/<image_id>/", "seed001_get_image", "GET"),
            _rule("/api/images/<image_id>/", "seed001_delete_image", "DELETE"),
        ),
    ),
    Resource(
        _playground,
        (
            _rule("/", "playground_page", "GET"),
            _rule("/assets/<path:name>", "playground_asset", "GET"),
        ),
    ),
)

URL_MAP = Map(
    [rule for resource in RESOURCES for rule in resource.rules],
    strict_slashes=False,
    merge_slashes=False,
)
_OWNERS = {rule.endpoint: resource.load for resource in RESOURCES for rule in resource.rules}
assert len(_OWNERS) == sum(len(r.rules) for r in RESOURCES), "endpoint names must be unique"


class _Handlers(Mapping[str, Handler]):
    """Endpoint name → handler, importing the handler's module on its first request (the
    import system's lock makes concurrent first requests safe)."""

    def __getitem__(self, endpoint: str) -> Handler:
        handler: Handler = _OWNERS[endpoint]().HANDLERS[endpoint]
        return handler

    def __iter__(self) -> Iterator[str]:
        return iter(_OWNERS)

    def __len__(self) -> int:
        return len(_OWNERS)


HANDLERS = _Handlers()


def operations() -> list[Operation]:
    """The whole API description's operations: loads every resource module."""
    return [op for resource in RESOURCES for op in resource.load().OPERATIONS]


def handle(request: flask.Request) -> flask.Response:
    return dispatch(request, URL_MAP, HANDLERS)
