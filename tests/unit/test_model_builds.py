"""Every pydantic model of ours defers its build to first use (a cold start builds only what
its first request needs), so a model that cannot build would fail on a request, not at
import: each one is built here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pydantic
import pytest

import imagegen
from imagegen.settings import Settings


def _models() -> list[type[pydantic.BaseModel]]:
    found: dict[str, type[pydantic.BaseModel]] = {}
    for info in pkgutil.walk_packages(imagegen.__path__, "imagegen."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, pydantic.BaseModel)
                and value.__module__ == module.__name__
                # Settings are read once, on the first request of every function alike.
                and value is not Settings
                # A parametrised generic (RootModel[list[X]]) is the base of a class of ours.
                and "[" not in value.__name__
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


MODELS = _models()


def test_the_package_has_models_to_check() -> None:
    assert len(MODELS) > 40


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.__module__}.{m.__qualname__}")
def test_model_defers_its_build_and_builds(model: type[pydantic.BaseModel]) -> None:
    assert model.model_config.get("defer_build") is True
    assert model.model_rebuild(force=True, raise_errors=True) is True
    assert model.__pydantic_complete__
