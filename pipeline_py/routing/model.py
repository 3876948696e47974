"""The routed architecture: the `RouteGrad` autograd op, the expanded `RoutedMLP`, and `RoutedLM` (the Llama
of model.py with some MLPs expanded) with its specialising L1 penalty and its ablation.

Two L1 terms make the groups specialise: the original neurons get no gradient at routed positions, so
without a signal there they keep firing on forget inputs and the extra neurons (and attention) must learn
to override them, an activation-scale race that stalls learning; `l1_orig` · Σ|h_orig| at routed
positions teaches them to stay quiet there. `l1` · Σ|h_extra| outside labeled forget examples keeps retain
data off the neurons that ablation deletes, while leaving them free across a forget example (its prompt
positions included), where they take over the forget computation that would otherwise leak into the
original neurons through attention from earlier positions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import CausalLM, ModelConfig


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
            a = mlp.h.abs().float()  # [B, T, F+k]
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
