"""Call a stage by name: from Snakemake (workflow/scripts/stage.py) or the shell.

    python -m pipeline_py pretrain data=results/arithmetic/seed0/data/train.jsonl \
        out=/tmp/base model='{d_model: 64}' train_cfg='{steps: 100, lr: 3e-3}'

Values are parsed as YAML. A path to a `*.safetensors` file stands for its checkpoint directory, so
rules can name checkpoint files as inputs and outputs while stages take directories.
"""
from __future__ import annotations

import inspect
import logging
import sys
import time
from pathlib import Path

import yaml

from . import era, figures, report, stages, wmdp

STAGES = {name: getattr(stages, name) for name in
          ("make_data", "filter_data", "pretrain", "unlearn", "noise", "distill", "relearn", "evaluate")}
STAGES["summarize"] = report.summarize
STAGES["pareto_plot"] = figures.pareto_plot
STAGES.update(pretrain_routed=era.pretrain_routed, ablate=era.ablate, load_base=wmdp.load_base)


def setup_logging(log_file: str | None = None) -> None:
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)


def as_dir(value):
    if isinstance(value, str) and value.endswith(".safetensors"):
        return str(Path(value).parent)
    return value


def call_stage(name: str, kwargs: dict, log_file: str | None = None) -> None:
    """Run stage `name` with the keyword arguments its signature accepts (others are ignored)."""
    if name not in STAGES:
        raise SystemExit(f"unknown stage {name!r}; stages: {sorted(STAGES)}")
    setup_logging(log_file)
    fn = STAGES[name]
    accepted = inspect.signature(fn).parameters
    args = {k: as_dir(v) for k, v in kwargs.items() if k in accepted}
    missing = [p.name for p in accepted.values() if p.default is p.empty and p.name not in args]
    if missing:
        raise SystemExit(f"stage {name}: missing arguments {missing}")
    t0 = time.time()
    logging.getLogger("pipeline_py").info("stage %s starts: %s", name, args)
    fn(**args)
    logging.getLogger("pipeline_py").info("stage %s done in %.1f s", name, time.time() - t0)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + f"\n\nstages: {', '.join(STAGES)}")
        return
    kwargs = {}
    for item in argv[1:]:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {item!r}")
        kwargs[key] = yaml.safe_load(value)
    call_stage(argv[0], kwargs)
