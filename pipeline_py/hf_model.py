"""Pretrained Hugging Face causal LMs (any architecture `AutoModelForCausalLM` knows: gemma-2, Llama, ...)
behind the interface the pipeline's own Llama offers: `model(input_ids) -> logits [B, T, V]`,
`model(input_ids, hidden_layer=l) -> (logits, h_l)`, `model.cfg.{n_layers, d_model}` and
`model.model.layers[i].mlp.down_proj` (RMU's trainable weights).

A checkpoint of a wrapped model is what `save_pretrained` writes plus the tokenizer files, `record.json`
(whose `backend` is "hf", so `checkpoint.load_checkpoint` knows to come here) and the evaluation
settings file of the setting (`lm_eval.json`). `transformers` is imported only when a stage loads one.
"""
from __future__ import annotations

import json
import operator
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_dir

BACKEND = "hf"
# files that travel from a tokenizer directory into every checkpoint of an HF model
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
              "chat_template.jinja", "lm_eval.json")


@dataclass(frozen=True)
class HFShape:
    n_layers: int  # transformer blocks
    d_model: int  # residual width


class HFCausalLM(nn.Module):
    """A thin wrapper over a `PreTrainedModel`; parameters are named `hf.<HF name>`."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model
        c = hf_model.config.get_text_config() if hasattr(hf_model.config, "get_text_config") else hf_model.config
        self.cfg = HFShape(n_layers=c.num_hidden_layers, d_model=c.hidden_size)

    @property
    def model(self):  # the backbone (`model.layers[i]`), as in the pipeline's own Llama
        return self.hf.model

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids: torch.Tensor, hidden_layer: int | None = None):
        """Logits [B, T, V]; with `hidden_layer` = l also the residual stream after block l [B, T, D].

        The residual stream is captured by a forward hook on decoder layer l, not read from
        `output_hidden_states`: Hugging Face's last entry of `hidden_states` is the state after the final
        norm, not the last block's output, so RMU steering block L-1 would steer the normed tensor."""
        if hidden_layer is None:
            return self.hf(input_ids=input_ids, use_cache=False).logits
        n = self.cfg.n_layers
        try:
            layer = operator.index(hidden_layer)
        except TypeError:
            layer = None
        if layer is None or isinstance(hidden_layer, bool) or not 0 <= layer < n:
            raise ValueError(f"hidden_layer must be a block index in [0, {n - 1}], got {hidden_layer!r}")
        captured: list[torch.Tensor] = []

        def grab(module, args, output):  # a decoder layer returns its output tensor (older versions: a tuple)
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)

        handle = self.model.layers[layer].register_forward_hook(grab)
        try:
            logits = self.hf(input_ids=input_ids, use_cache=False).logits
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"decoder layer {layer} ran {len(captured)} times in one forward, expected once")
        return logits, captured[0]

    def fresh_copy(self, seed: int) -> "HFCausalLM":
        """The same architecture with freshly initialised weights (Unlearn-and-Distill's student)."""
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        return HFCausalLM(AutoModelForCausalLM.from_config(self.hf.config, dtype=torch.float32))


def load_pretrained(name_or_path: str, revision: str | None = None) -> HFCausalLM:
    """A model from the hub or a local directory, in fp32 (the pipeline keeps fp32 master weights)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision, dtype=torch.float32)
    return HFCausalLM(hf).eval()


def save(model: HFCausalLM, tokenizer_dir: str | Path, out_dir: str | Path, record: dict) -> None:
    """Write into a temporary directory, then move the files into `out_dir`, weights last."""
    with atomic_dir(out_dir, last="model.safetensors", prefix=".ckpt-") as tmp:
        model.hf.save_pretrained(tmp, max_shard_size="1000GB")  # one file, the output rules name
        (tmp / "record.json").write_text(json.dumps({**record, "backend": BACKEND}, indent=2))
        for name in SIDE_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copyfile(Path(tokenizer_dir) / name, tmp / name)
        if not (tmp / "model.safetensors").is_file():
            raise RuntimeError(f"save_pretrained wrote {sorted(os.listdir(tmp))}, expected one model.safetensors")


def load(ckpt_dir: str | Path) -> HFCausalLM:
    try:
        return load_pretrained(str(ckpt_dir))
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"corrupt Hugging Face checkpoint {ckpt_dir}: {e}") from e
