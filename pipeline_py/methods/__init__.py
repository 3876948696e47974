"""Unlearning methods as plug-ins: each module of this package defines one `UnlearnMethod` subclass
decorated with `@register`; the config selects it by name. A new method is one new file.

A config entry may also name a variant of a method: `maxent_sam: {method: maxent, sam_rho: 0.01}` runs
the `maxent` module under the name `maxent_sam` (its own output directory), so one study can hold a
method and its variants side by side."""
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
    """The method `name` (or the module named by a `method` key of `params`) with its hyperparameters;
    unknown names and keys fail naming what is allowed."""
    params = dict(params or {})
    kind = params.pop("method", name)
    if kind not in available():
        where = f"unlearn.hparams.{name}.method" if kind != name else f"unlearn.hparams.{name}"
        raise ValueError(f"{where}: unknown method {kind!r}; available: {available()}")
    try:
        return REGISTRY[kind].from_params(params)
    except ValueError as e:  # name the config entry, not the module, in the message
        raise ValueError(str(e).replace(f"unlearn.hparams.{kind}", f"unlearn.hparams.{name}")) from None
