"""Checkpoints as Hugging Face model directories, written atomically and read with checks.

A checkpoint directory holds `config.json` (a `LlamaForCausalLM` config), `model.safetensors`, the
tokenizer files and `record.json` (stage, parent, tokens, FLOPs of the stage and of its lineage).
`AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)` load it with no
project code.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_dir, atomic_path  # noqa: F401  (atomic_path: re-exported for its importers)
from .model import CausalLM, ModelConfig, n_params
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, TOKENIZER_FILES


def check_finite(model: torch.nn.Module, where: str) -> None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise FloatingPointError(f"{where}: parameter {name} holds NaN or inf; no checkpoint written")


def save_checkpoint(model: CausalLM, tokenizer_dir: str | Path, out_dir: str | Path, record: dict) -> None:
    """Write every file into a temporary directory, then move them into `out_dir`;
    `model.safetensors` moves last, so its presence means the checkpoint is complete."""
    out_dir = Path(out_dir)
    check_finite(model, f"saving {out_dir}")
    if not isinstance(model, CausalLM):  # a wrapped pretrained Hugging Face model
        from . import hf_model

        return hf_model.save(model, tokenizer_dir, out_dir, record)
    with atomic_dir(out_dir, last="model.safetensors", prefix=".ckpt-") as tmp:
        state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(model.cfg.to_hf(PAD_ID, BOS_ID, EOS_ID), indent=2))
        (tmp / "record.json").write_text(json.dumps(record, indent=2))
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copyfile(Path(tokenizer_dir) / name, tmp / name)


def load_checkpoint(ckpt_dir: str | Path) -> tuple[CausalLM, dict]:
    """The model (fp32, eval mode) and its record; a clear error for a missing or corrupt checkpoint."""
    ckpt_dir = Path(ckpt_dir)
    weights, config = ckpt_dir / "model.safetensors", ckpt_dir / "config.json"
    for f in (config, weights):
        if not f.is_file():
            raise FileNotFoundError(f"incomplete checkpoint: {f} is missing")
    record_path = ckpt_dir / "record.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record.get("backend") == "hf":  # written by hf_model.save: any architecture transformers knows
        from . import hf_model

        return hf_model.load(ckpt_dir), record
    try:
        cfg = ModelConfig.from_hf(json.loads(config.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"corrupt checkpoint config {config}: {e}") from e
    try:
        state = load_file(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"corrupt checkpoint weights {weights}: {e}") from e
    model = CausalLM(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        bad = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise ValueError(f"checkpoint {weights} does not match {config}: tensors {bad[:4]} have "
                         f"shapes {[found.get(k) for k in bad[:4]]}, expected {[expected.get(k) for k in bad[:4]]}")
    model.load_state_dict(state)
    return model.eval(), record


def make_record(stage: str, model: CausalLM, parent: dict | None, trained_tokens: int,
                frozen_tokens: int = 0, labeled_examples: int = 0, **extra) -> dict:
    """FLOPs ≈ 6·N·(tokens trained) + 2·N·(tokens through a forward without backward: teacher, reference,
    evaluation checks). Lineage sums add the parent's: FLOPs and labeled examples read (forget/retain labels)."""
    n = n_params(model)
    flops = 6 * n * trained_tokens + 2 * n * frozen_tokens
    parent = parent or {}
    return {"stage": stage, "n_params": n, "trained_tokens": trained_tokens, "frozen_tokens": frozen_tokens,
            "flops": flops, "lineage_flops": flops + parent.get("lineage_flops", 0),
            "labeled_examples": labeled_examples,
            "lineage_labeled_examples": labeled_examples + parent.get("lineage_labeled_examples", 0), **extra}
