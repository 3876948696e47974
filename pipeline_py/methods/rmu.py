"""RMU, Representation Misdirection for Unlearning (Li et al., "The WMDP Benchmark", ICML 2024).
L = MSE(h_ℓ(forget), c·u) + α·MSE(h_ℓ(retain), h_ℓ^frozen(retain)); only `layers`' MLP down_proj train.

h_ℓ is the residual stream after block ℓ = `layer`; u is a fixed random unit vector (uniform [0, 1)
entries, normalised, as in the paper's code; seeded by `vector_seed`), c the steering coefficient. Each
MSE averages over the non-pad positions (BOS, prompt, answer and EOS: every real token, as the paper
does on its unlabeled text) and the D dimensions. The retain term (α = `retain_weight`) anchors to a
frozen copy of the starting model; some public runs dropped it, here it stays and is weighted.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import UnlearnMethod, is_int, is_number, nonpad, register


def masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (h − target)² over the positions where mask [B, T] is True and all D dimensions."""
    return (h[mask].float() - (target[mask].float() if target.dim() == h.dim() else target)).pow(2).mean()


@register
@dataclass(frozen=True)
class RMU(UnlearnMethod):
    name = "rmu"
    needs_frozen = True
    layer: int = 2  # ℓ: block whose output is steered
    layers: tuple[int, ...] = (1, 2)  # blocks whose mlp.down_proj.weight trains (each <= layer)
    c: float = 60.0  # steering coefficient, the norm of c·u (paper: 6.5-80; here ~4x the layer-2 norm ≈ 14)
    retain_weight: float = 300.0  # α on the retain MSE (paper: 1200 on a 7B model; tuned on arithmetic)
    vector_seed: int = 0  # seed of the random direction u

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers) if isinstance(self.layers, (list, tuple)) else self.layers)
        super().__post_init__()
        self.check("layer", is_int(self.layer) and self.layer >= 0, "a block index >= 0")
        self.check("layers", isinstance(self.layers, tuple) and len(self.layers) > 0
                   and all(is_int(i) and 0 <= i <= self.layer for i in self.layers)
                   and len(set(self.layers)) == len(self.layers),
                   f"a non-empty list of distinct block indices in [0, layer = {self.layer}]")
        self.check("c", is_number(self.c) and self.c > 0, "a number > 0")
        self.check("vector_seed", is_int(self.vector_seed), "an integer")

    def prepare(self, model):
        n = model.cfg.n_layers
        self.check("layer", self.layer < n, f"< model.n_layers = {n}")
        super().prepare(model)
        u = torch.rand(model.cfg.d_model, generator=torch.Generator().manual_seed(self.vector_seed))
        self.run.control = (self.c * u / u.norm()).to(next(model.parameters()).device)  # c·u [D]

    def trainable(self, model):
        return [model.model.layers[i].mlp.down_proj.weight for i in self.layers]

    def forget_loss(self, model, forget):
        _, h = model(forget["input_ids"], hidden_layer=self.layer)
        return masked_mse(h, self.run.control, nonpad(forget))

    def retain_loss(self, model, retain):
        """α·MSE to the frozen starting model's hidden states (not the CE of the other methods)."""
        _, h_r = model(retain["input_ids"], hidden_layer=self.layer)
        _, h_ref = self.frozen(retain, hidden_layer=self.layer)
        return self.retain_weight * masked_mse(h_r, h_ref, nonpad(retain))
