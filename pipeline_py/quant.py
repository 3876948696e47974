"""Quantization attack: round-to-nearest (RTN) weight quantization, as in Zhang et al., "Catastrophic
Failure of LLM Unlearning via Quantization" (ICLR 2025), where quantizing an unlearned model to 4 bits
brought much of the forgotten knowledge back.

Scheme (weight-only, no calibration data):
- symmetric, per output channel: each output row r of a weight matrix W [out, in] gets its own scale
  s_r = max_j |W_rj| / Q with Q = 2^(bits-1) - 1 (7 for 4 bits, 127 for int8);
- integer codes q = clamp(round(W / s_r), -Q, Q): the symmetric range [-7, 7] / [-127, 127]. The code -8
  (-128) is never used: with s_r = max|row| / Q every |W / s_r| <= Q, so a [-8, 7] clip would change
  nothing and the grid stays symmetric about zero (15 / 255 levels);
- `round` is torch.round, round half to even (a weight exactly halfway between two grid points goes to
  the even code);
- dequantized weights W' = q · s_r are written in fp32 into a copy of the model, so every later stage
  (evaluation, relearning attack) runs on it unchanged; |W - W'| <= s_r / 2 entrywise;
- an all-zero row keeps scale 0 and stays zero.

Which weights: the weight of every linear layer (`nn.Linear`, and transformers' `Conv1D`, whose weight is
stored [in, out], so its output channels are columns) inside the transformer blocks: attention q/k/v/o
and MLP gate/up/down projections, as the paper's RTN, GPTQ and AWQ runs do. By default the token
embeddings (`nn.Embedding`) and the LM head (the model's output projection) stay in full precision, as
GPTQ / AWQ leave them; `include_lm_head` / `include_embeddings` quantize them too (same per-row scheme:
one scale per vocabulary row). A weight shared by several modules (tied embeddings and head) is quantized
once, if any module holding it is selected. 1-D parameters (norm gains, biases) are never touched.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

QUANT_BITS = (8, 4)  # the attack's standard precisions: int8 and 4-bit


def qmax(bits: int) -> int:
    """Largest integer code of the symmetric `bits`-bit grid: 2^(bits-1) - 1."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"quantization bits must be an integer in [2, 16], got {bits!r}")
    return 2 ** (bits - 1) - 1


def quantize_rows(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes [out, in] (int32, in [-Q, Q]) and per-row scales [out, 1] (fp32) of a 2-D matrix."""
    if w.ndim != 2:
        raise ValueError(f"per-row quantization needs a 2-D weight matrix, got shape {tuple(w.shape)}")
    Q = qmax(bits)
    w32 = w.detach().float()
    if not torch.isfinite(w32).all():
        raise ValueError("cannot quantize a weight matrix holding NaN or inf")
    scale = w32.abs().amax(dim=1, keepdim=True) / Q
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # zero rows: codes 0, scale stays 0
    q = torch.round(w32 / safe).clamp_(-Q, Q)
    return q.to(torch.int32), scale


def fake_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The dequantized matrix q · scale in fp32 (same shape as `w`)."""
    q, scale = quantize_rows(w, bits)
    return q.float() * scale


def _is_conv1d(module: nn.Module) -> bool:  # transformers.pytorch_utils.Conv1D (GPT-2 style), weight [in, out]
    return type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None \
        and module.weight.ndim == 2


def _output_head(model: nn.Module) -> nn.Module | None:
    """The module that projects to the vocabulary: `get_output_embeddings()` of a Hugging Face model
    (also behind the pipeline's wrapper, `model.hf`), else `lm_head`."""
    for m in (model, getattr(model, "hf", None)):
        getter = getattr(m, "get_output_embeddings", None)
        if callable(getter):
            head = getter()
            if head is not None:
                return head
    return getattr(model, "lm_head", None)


def quantized_weights(model: nn.Module, include_lm_head: bool = False,
                      include_embeddings: bool = False) -> list[str]:
    """Names (as `named_parameters` gives them) of the weight matrices `quantize_model` quantizes."""
    return [name for name, _, _ in _selected(model, include_lm_head, include_embeddings)]


def _selected(model: nn.Module, include_lm_head: bool, include_embeddings: bool):
    """(parameter name, parameter, transposed) for each selected weight, each parameter once."""
    head = _output_head(model)
    names = {id(p): n for n, p in model.named_parameters()}  # first name of each (possibly tied) parameter
    chosen: dict[int, tuple[str, nn.Parameter, bool]] = {}
    for _, module in model.named_modules():
        w = getattr(module, "weight", None)
        if not isinstance(w, torch.Tensor) or w.ndim != 2 or id(w) not in names:
            continue
        if module is head:
            take = include_lm_head
        elif isinstance(module, nn.Embedding):
            take = include_embeddings
        else:
            take = isinstance(module, nn.Linear) or _is_conv1d(module)
        if take and id(w) not in chosen:
            chosen[id(w)] = (names[id(w)], w, _is_conv1d(module))
    return sorted(chosen.values(), key=lambda t: t[0])


def quantize_model(model: nn.Module, bits: int, include_lm_head: bool = False,
                   include_embeddings: bool = False) -> nn.Module:
    """A copy of `model` in fp32 whose selected weight matrices (see the module docstring) hold their
    RTN-dequantized values; `model` itself is left untouched."""
    qmax(bits)
    out = copy.deepcopy(model).float()
    with torch.no_grad():
        for _, w, transposed in _selected(out, include_lm_head, include_embeddings):
            w.copy_(fake_quantize(w.T, bits).T if transposed else fake_quantize(w, bits))
    return out
