"""Unlearning methods as plug-ins: each module of this package defines one `UnlearnMethod` subclass
decorated with `@register`; the config selects it by name. A new method is one new file."""
from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, UnlearnMethod, register

__all__ = ["REGISTRY", "UnlearnMethod", "register", "get_method", "available"]


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def available() -> list[str]:
    _discover()
    return sorted(REGISTRY)


def get_method(name: str, params: dict | None = None) -> UnlearnMethod:
    """The method `name` with its hyperparameters; unknown names and keys fail naming what is allowed."""
    if name not in available():
        raise ValueError(f"unlearn.methods: unknown method {name!r}; available: {available()}")
    return REGISTRY[name].from_params(params or {})
