r"""Call a stage by its dotted path, from a Snakemake rule (workflow/scripts/call.py) or the shell:

    python -m pipeline_py pipeline_py.stages.pretrain.pretrain data=results/arithmetic/seed0/data/train.jsonl \
        tokenizer=results/arithmetic/seed0/data/tokenizer.json out=/tmp/base/model.safetensors \
        model='{d_model: 64}' train_cfg='{steps: 100, lr: 3e-3}' runtime='{precision: fp32}' seed=0

Values are parsed as YAML. An argument whose parameter is typed with a config section (pipeline_py.section)
is built from its mapping, so it is checked key by key. A path to a `*.safetensors` file stands for its
checkpoint directory, so rules name checkpoint files as inputs and outputs while stages take directories.
A key the function does not take, or a parameter left without a value, is an error naming both.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import sys
import time
import typing
from pathlib import Path

import yaml

from .section import Section


def setup_logging(log_file: str | None = None) -> None:
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)


def resolve(path: str):
    """The function a dotted path names, e.g. 'pipeline_py.stages.distill.distill'."""
    module, _, name = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise SystemExit(f"cannot find the stage function {path!r}: {e}") from None
    if not callable(fn):
        raise SystemExit(f"{path!r} is not a function")
    return fn


def as_dir(value):
    if isinstance(value, str) and value.endswith(".safetensors"):
        return str(Path(value).parent)
    return value


def bind(fn, kwargs: dict, where: str) -> dict:
    """The keyword arguments of `fn`: every key must be a parameter, every parameter without a default given;
    a mapping for a section-typed parameter becomes that section."""
    params = inspect.signature(fn).parameters
    hints = typing.get_type_hints(fn)
    unknown = sorted(set(kwargs) - set(params))
    missing = [p for p, v in params.items() if v.default is v.empty and p not in kwargs]
    if unknown or missing:
        raise SystemExit(f"{where}: {fn.__module__}.{fn.__name__} "
                         + (f"takes no argument {unknown}" if unknown else f"needs {missing}")
                         + f"; its parameters: {list(params)}")
    out = {}
    for k, v in kwargs.items():
        tp = hints.get(k)
        if isinstance(tp, type) and issubclass(tp, Section) and isinstance(v, dict):
            try:
                v = tp.from_dict(v, k)
            except ValueError as e:
                raise SystemExit(f"{where}: {e}") from None
        out[k] = as_dir(v)
    return out


def call(path: str, kwargs: dict, log_file: str | None = None, where: str = "") -> None:
    """Run the stage function at `path` with `kwargs`, logging its start, arguments and duration."""
    setup_logging(log_file)
    fn = resolve(path)
    args = bind(fn, kwargs, where or path)
    log = logging.getLogger("pipeline_py")
    t0 = time.time()
    log.info("%s starts: %s", path, args)
    fn(**args)
    log.info("%s done in %.1f s", path, time.time() - t0)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    kwargs = {}
    for item in argv[1:]:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {item!r}")
        kwargs[key] = yaml.safe_load(value)
    call(argv[0], kwargs)
