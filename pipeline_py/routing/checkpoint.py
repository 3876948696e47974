"""The routed checkpoint format: a directory with `routed.safetensors` (the expanded weights),
`routing.json` (the architecture: the ModelConfig fields plus `layers` and `extra`), `record.json` and the
tokenizer files. Deliberately no `config.json`: it is not a standard checkpoint (`era.ablate` turns it into one).
Each file is written atomically, the weights last, so their presence means the checkpoint is complete.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..atomic import atomic_path
from ..checkpoint import check_finite
from ..model import ModelConfig
from ..tokenizer import TOKENIZER_FILES
from .model import RoutedLM

WEIGHTS, ROUTING = "routed.safetensors", "routing.json"  # not config.json: not a standard checkpoint


def save_routed(model: RoutedLM, tokenizer_dir: str | Path, out_dir: str | Path, record: dict) -> None:
    """Routed weights, `routing.json` (architecture) and `record.json`; the weights file is renamed last."""
    out_dir = Path(out_dir)
    check_finite(model, f"saving {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    arch = {**{f.name: getattr(model.cfg, f.name) for f in fields(model.cfg)}, "layers": list(model.layers),
            "extra": model.extra}
    for name, text in ((ROUTING, json.dumps(arch, indent=2)), ("record.json", json.dumps(record, indent=2))):
        with atomic_path(out_dir / name) as tmp:
            Path(tmp).write_text(text)
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).is_file():
            with atomic_path(out_dir / name) as tmp:
                Path(tmp).write_bytes((Path(tokenizer_dir) / name).read_bytes())
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(state, tmp, metadata={"format": "pt"})


def load_routed(ckpt_dir: str | Path) -> tuple[RoutedLM, dict]:
    """The routed model (fp32, eval mode) and its record; a clear error for an incomplete checkpoint."""
    ckpt_dir = Path(ckpt_dir)
    for f in (ckpt_dir / ROUTING, ckpt_dir / WEIGHTS):
        if not f.is_file():
            raise FileNotFoundError(f"incomplete routed checkpoint: {f} is missing (run pretrain_routed)")
    arch = json.loads((ckpt_dir / ROUTING).read_text())
    layers, extra = tuple(arch.pop("layers")), arch.pop("extra")
    model = RoutedLM(ModelConfig(**arch), layers, extra)
    model.load_state_dict(load_file(ckpt_dir / WEIGHTS))
    record_path = ckpt_dir / "record.json"
    return model.eval(), json.loads(record_path.read_text()) if record_path.is_file() else {}
