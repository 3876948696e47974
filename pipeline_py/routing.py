"""Gradient routing (ERA: expand, route, ablate; Cloud et al. 2024): the routed model, its masks and data.

Expand: chosen layers get `extra` MLP hidden neurons beyond the `d_ff` originals. Route: on the MLP
hidden activation h [B, T, F+k] of those layers, h' = m ⊙ h + (1 − m) ⊙ stopgrad(h): the forward value
is h exactly (an identity whose backward multiplies by m), only the gradient is weighted per token.
Ablate: drop the extra neurons (rows of gate/up, columns of down) to get the standard architecture back.

The route of position t is chosen by its *target*, token t+1: strength s ∈ [0, 1] (1 for a routed token of
a labeled forget example, times its unigram weight under soft routing, 0 otherwise; `route_tokens` says
which tokens: the answer and its EOS, or the whole example); the original neurons
get weight 1 − s·(1 − forget_weight), the extra neurons always 1 (retain tokens train everything).

Two L1 terms make the groups specialise: the original neurons get no gradient at routed positions, so
without a signal there they keep firing on forget inputs and the extra neurons (and attention) must learn
to override them, an activation-scale race that stalls learning; `l1_orig` · Σ|h_orig| at routed
positions teaches them to stay quiet there. `l1` · Σ|h_extra| outside labeled forget examples keeps retain
data off the neurons that ablation deletes, while leaving them free across a forget example (its prompt
positions included), where they take over the forget computation that would otherwise leak into the
original neurons through attention from earlier positions.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .batches import PackedStream
from .checkpoint import atomic_path, check_finite
from .model import CausalLM, ModelConfig
from .section import Section, key
from .tokenizer import TOKENIZER_FILES

WEIGHTS, ROUTING = "routed.safetensors", "routing.json"  # not config.json: not a standard checkpoint
ROUTE_TOKENS = ("answer", "example")  # which targets of a labeled forget example are routed


@dataclass(frozen=True, kw_only=True)
class EraConfig(Section):
    """Gradient routing (ERA: expand, route, ablate): a routed pretraining with the base's recipe, then ablation."""

    layers: list[int] = key([0, 1, 2, 3], "blocks whose MLP is expanded and routed", ge=0, nonempty=True, unique=True)
    steps_factor: float = key(1.0, "routed pretraining steps / the base's (the LR schedule stretches with them)", gt=0)
    extra: int = key(64, "k extra MLP hidden neurons per routed layer", gt=0)
    forget_weight: float = key(0.0, "gradient weight of the original neurons on routed tokens (paper: -0.75)", le=1)
    route_tokens: str = key("answer", "targets routed in a labeled forget example: the answer (+ EOS) or the "
                            "whole example", choices=ROUTE_TOKENS)
    soft: bool = key(False, "scale each token's routing by its forget/retain unigram frequency ratio")
    l1: float = key(1e-3, "L1 on the extra neurons' activations outside labeled forget examples", ge=0)
    l1_orig: float = key(1e-3, "L1 on the original neurons' activations at routed positions", ge=0)
    labeled_fraction: float = key(1.0, "share of forget examples whose label routing may use", ge=0, le=1)
    finetune_steps: int = key(100, "coherence finetune steps after ablation (0 = none)", ge=0)
    finetune_lr: float = key(1e-4, "its constant AdamW learning rate", gt=0)
    undo_alphas: list[float] = key([], "noise strengths of ERA + UNDO students", ge=0, le=1, unique=True)


class RoutedMLP(nn.Module):
    """SwiGLU MLP with F original and k extra hidden neurons (extra ones last). `route` = (w_orig, w_extra),
    each [B, T], weights the gradient of the hidden activation; `h` keeps the last forward's hidden
    activation [B, T, F+k] (before routing) for the L1 penalties."""

    def __init__(self, d_model: int, d_ff: int, extra: int):
        super().__init__()
        self.d_ff = d_ff
        self.gate_proj = nn.Linear(d_model, d_ff + extra, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff + extra, bias=False)
        self.down_proj = nn.Linear(d_ff + extra, d_model, bias=False)
        self.route: tuple[torch.Tensor, torch.Tensor] | None = None
        self.h: torch.Tensor | None = None

    def forward(self, x):  # [B, T, D] -> [B, T, F+k] -> [B, T, D]
        h = self.h = F.silu(self.gate_proj(x)) * self.up_proj(x)
        if self.route is not None:
            h = RouteGrad.apply(h, self.route[0], self.route[1], self.d_ff)
        return self.down_proj(h)


class RouteGrad(torch.autograd.Function):
    """h' = m ⊙ h + (1 − m) ⊙ stopgrad(h): the value is h itself, the gradient is m ⊙ ∂L/∂h', with
    m = w_orig [B, T] on the first F neurons and w_extra [B, T] on the rest."""

    @staticmethod
    def forward(ctx, h, w_orig, w_extra, d_ff: int):
        ctx.save_for_backward(w_orig, w_extra)
        ctx.d_ff = d_ff
        return h.view_as(h)

    @staticmethod
    def backward(ctx, g):  # g [B, T, F+k]
        w_orig, w_extra = ctx.saved_tensors
        F_ = ctx.d_ff
        w_orig, w_extra = (w.unsqueeze(-1).to(g.dtype) for w in (w_orig, w_extra))
        return torch.cat([g[..., :F_] * w_orig, g[..., F_:] * w_extra], dim=-1), None, None, None


class RoutedLM(CausalLM):
    """The Llama of model.py with the MLPs of `layers` expanded by `extra` neurons."""

    def __init__(self, cfg: ModelConfig, layers: tuple[int, ...], extra: int):
        super().__init__(cfg)
        bad = [i for i in layers if i >= cfg.n_layers]
        if bad:
            raise ValueError(f"era.layers {bad} do not exist: the model has {cfg.n_layers} blocks "
                             f"(0..{cfg.n_layers - 1})")
        self.layers, self.extra = tuple(layers), extra
        for i in self.layers:
            self.model.layers[i].mlp = RoutedMLP(cfg.d_model, cfg.d_ff, extra)
        self.reset_parameters()

    def routed(self) -> list[RoutedMLP]:
        return [self.model.layers[i].mlp for i in self.layers]

    def forward(self, input_ids, route: tuple[torch.Tensor, torch.Tensor] | None = None, hidden_layer=None):
        """Logits [B, T, V]; `route` = (w_orig, w_extra) [B, T] gradient weights, None = plain training."""
        for mlp in self.routed():
            mlp.route = route
        try:
            return super().forward(input_ids, hidden_layer=hidden_layer)
        finally:
            for mlp in self.routed():
                mlp.route = None

    def l1_penalty(self, routed: torch.Tensor, forget: torch.Tensor, l1: float, l1_orig: float) -> torch.Tensor:
        """The specialising L1 of the last forward, summed over routed layers and averaged over positions:
        l1 · (1 − forget_t) Σ_k |h_extra| + l1_orig · routed_t Σ_j |h_orig|. `routed` [B, T]: the routing
        strength of each position; `forget` [B, T]: 1 where the position belongs to a labeled forget example
        (both target-aligned, as `targets` gives them)."""
        total = 0.0
        for mlp in self.routed():
            a = mlp.h.abs().float()
            total = total + (l1 * (1 - forget) * a[..., mlp.d_ff:].sum(-1)
                             + l1_orig * routed * a[..., :mlp.d_ff].sum(-1)).mean()
        return total

    def ablate(self) -> CausalLM:
        """A standard CausalLM with the extra neurons' input and output weights removed."""
        plain = CausalLM(self.cfg)
        F_ = self.cfg.d_ff
        state = {}
        for name, p in self.state_dict().items():
            i = int(name.split(".")[2]) if name.startswith("model.layers.") else -1
            if i in self.layers and name.endswith(("gate_proj.weight", "up_proj.weight")):
                p = p[:F_]  # [F+k, D] -> [F, D]
            elif i in self.layers and name.endswith("down_proj.weight"):
                p = p[:, :F_]  # [D, F+k] -> [D, F]
            state[name] = p.detach().clone()
        plain.load_state_dict(state)
        return plain.to(next(self.parameters()).device)


def targets(per_token: torch.Tensor) -> torch.Tensor:
    """A per-token value [B, T] moved to the position that *predicts* the token: position t takes the value of
    token t+1 (its target); the last position has no target and gets 0."""
    s = torch.zeros_like(per_token, dtype=torch.float32)
    s[:, :-1] = per_token[:, 1:]
    return s


def route_weights(strength: torch.Tensor, forget_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token strengths [B, T] (of each token as a target) → gradient weights (w_orig, w_extra) [B, T] of
    the predicting positions (see `targets`)."""
    s = targets(strength)
    return 1.0 - s * (1.0 - forget_weight), torch.ones_like(s)


def labeled_mask(rows: list[dict], fraction: float, seed: int) -> np.ndarray:
    """Which examples carry a forget label routing may use: a seeded `fraction` of the forget examples."""
    draw = np.random.default_rng(seed + 7919).random(len(rows))
    return np.array([bool(r["forget"]) for r in rows]) & (draw < fraction)


def unigram_weights(ids: list[list[int]], labeled: np.ndarray, vocab_size: int) -> np.ndarray:
    """Soft routing weight per token v: f_F(v) / (f_F(v) + f_R(v)), with f the token's relative frequency
    (add-one smoothed) in labeled forget examples (F) and all other examples (R). [V]"""
    counts = [Counter(), Counter()]
    for seq, lab in zip(ids, labeled):
        counts[int(lab)].update(seq)
    freq = []
    for c in counts:
        n = np.ones(vocab_size)
        for v, k in c.items():
            n[v] += k
        freq.append(n / n.sum())
    return freq[1] / (freq[0] + freq[1])


class RoutedStream(PackedStream):
    """PackedStream that also yields `strength` [B, T], each token's routing strength as a target, and
    `forget` [B, T], 1 on every token of a labeled forget example. Draws the same examples in the same order
    as PackedStream with the same seed, so tokens match the base's."""

    def __init__(self, tok, rows: list[dict], batch_size: int, seq_len: int, seed: int, era: EraConfig):
        super().__init__(tok, rows, batch_size, seq_len, seed)
        self.labeled = labeled_mask(rows, era.labeled_fraction, seed)
        start = self.prompt_lens if era.route_tokens == "answer" else [0] * len(self.ids)
        routable = [seq[s:] for seq, s in zip(self.ids, start)]  # the tokens routing may flag, per example
        token_w = unigram_weights(routable, self.labeled, tok.get_vocab_size()) if era.soft else None
        self.strengths = []  # plain floats: resume states hold them
        for seq, s, lab in zip(self.ids, start, self.labeled):
            w = np.zeros(len(seq))
            if lab:
                w[s:] = token_w[seq[s:]] if token_w is not None else 1.0
            self.strengths.append(w.tolist())
        self.s_buffer: list[float] = []
        self.f_buffer: list[float] = []
        self.routed_tokens = 0.0  # Σ of strengths drawn: how much of the stream was routed

    def __next__(self) -> dict[str, torch.Tensor]:
        need = self.B * self.T
        while len(self.buffer) < need:
            for i in self.rng.choice(len(self.ids), size=max(64, need // 16), p=self.p):
                self.buffer.extend(self.ids[i])
                self.s_buffer.extend(self.strengths[i])
                self.f_buffer.extend([float(self.labeled[i])] * len(self.ids[i]))
        x = torch.tensor(self.buffer[:need], dtype=torch.long).view(self.B, self.T)
        s = torch.tensor(self.s_buffer[:need], dtype=torch.float32).view(self.B, self.T)
        f = torch.tensor(self.f_buffer[:need], dtype=torch.float32).view(self.B, self.T)
        del self.buffer[:need], self.s_buffer[:need], self.f_buffer[:need]
        self.tokens_seen += need
        self.routed_tokens += float(s.sum())
        return {"input_ids": x, "labels": x.clone(), "strength": s, "forget": f}

    def state_dict(self) -> dict:
        """PackedStream's position plus the pending strengths and labels (for resuming)."""
        return {**super().state_dict(), "strengths": list(self.s_buffer), "forget": list(self.f_buffer),
                "routed_tokens": self.routed_tokens}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.s_buffer, self.f_buffer = list(state["strengths"]), list(state["forget"])
        self.routed_tokens = float(state["routed_tokens"])


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
