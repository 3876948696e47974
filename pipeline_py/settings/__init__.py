"""Settings: what is retained, what is forgotten, and how both are measured.

A setting is a module that provides
- `METRICS`: a `Metrics` naming the retain and forget metrics of its evaluation dicts and their direction;
- `make_data(out_dir, data, seed) -> dict`: writes train/eval/attack JSONL and `tokenizer.json` into
  `out_dir` and returns the manifest entries it wants recorded (sources, versions);
- `evaluator(tok, rows) -> Callable[[model, precision, device], dict[str, float]]`.

Data rows are dicts with at least `prompt`, `answer` (the text a model learns: loss falls on the answer),
`op` (a group used to balance pretraining batches and to report per-group metrics) and `forget`.
`make_data` records the setting's name in `manifest.json` beside the data, and later stages look it up
there (`setting_of`), so no rule needs to pass it along.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REGISTRY = {  # setting name -> module
    "arithmetic": "pipeline_py.arithmetic",
    "language": "pipeline_py.language",
    "wmdp": "pipeline_py.wmdp",  # a pretrained Hugging Face model, WMDP corpora, lm-eval scores
}


@dataclass(frozen=True)
class Metrics:
    retain: str  # key of the retain metric in an evaluation dict, e.g. "acc_retain"
    forget: str  # key of the forget metric, e.g. "acc_forget"
    higher_is_better: bool  # True for accuracies, False for cross-entropies

    def better(self, a: float, b: float) -> bool:
        """Is value a better (for the model's retain skill) than b?"""
        return a > b if self.higher_is_better else a < b

    def within(self, value: float, target: float, tolerance: float) -> bool:
        """Is `value` no worse than `target` by more than `tolerance`?"""
        return value >= target - tolerance if self.higher_is_better else value <= target + tolerance


def unit_hash(*parts) -> float:
    """A stable number in [0, 1) from its arguments (independent of PYTHONHASHSEED): the settings' splits
    and subsamples hash with it."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def get_setting(name: str) -> ModuleType:
    if name not in REGISTRY:
        raise ValueError(f"setting: unknown setting {name!r}; known: {sorted(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def setting_name(data_file: str | Path) -> str:
    """The name of the setting that wrote the data directory holding `data_file` (from its manifest.json)."""
    manifest = Path(data_file).parent / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"missing {manifest}: the data directory was not written by make_data")
    return json.loads(manifest.read_text())["setting"]


def setting_of(data_file: str | Path) -> ModuleType:
    """The setting that wrote the data directory holding `data_file`."""
    return get_setting(setting_name(data_file))
