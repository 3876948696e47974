"""MaxEnt: push the forget predictions to the uniform distribution, keep retain CE low.
L = KL(U ‖ p_θ) on forget answer tokens + λ·CE_retain [+ w·MMD²(h_ℓ(forget), N(0, I))].

RepNoise option (Rosati et al. 2024, "Representation Noising"), off by default: with
`repnoise_weight` w > 0 it adds w times the squared MMD (Gaussian kernels, `losses.mmd_rbf`) between the
residual-stream vectors after block `repnoise_layer` at the non-pad forget positions and as many fresh
N(0, I) samples, so the forget representations are pushed to *be distributed like* Gaussian noise.
(An MSE to fresh noise samples would only shrink them to 0: E‖h − z‖² = ‖h‖² + D.) The paper sums
the MMD over all layers and adds gradient ascent on harmful data; here one layer, with MaxEnt's loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import kl_uniform, mmd_rbf
from .base import UnlearnMethod, is_int, is_number, nonpad, register


@register
@dataclass(frozen=True)
class MaxEnt(UnlearnMethod):
    name = "maxent"
    repnoise_weight: float = 0.0  # w on the RepNoise MMD term (0 = plain MaxEnt)
    repnoise_layer: int = 2  # block whose output representations are noised

    def __post_init__(self):
        super().__post_init__()
        self.check("repnoise_weight", is_number(self.repnoise_weight) and self.repnoise_weight >= 0,
                   "a number >= 0 (0 = RepNoise off)")
        self.check("repnoise_layer", is_int(self.repnoise_layer) and self.repnoise_layer >= 0,
                   "a block index >= 0")

    def prepare(self, model):
        super().prepare(model)
        n = model.cfg.n_layers
        self.check("repnoise_layer", not self.repnoise_weight or self.repnoise_layer < n, f"< model.n_layers = {n}")

    def forget_loss(self, model, forget):
        if self.repnoise_weight:
            logits, h = model(forget["input_ids"], hidden_layer=self.repnoise_layer)
            h = h[nonpad(forget)].float()  # [N, D]
            return kl_uniform(logits, forget["labels"]) + self.repnoise_weight * mmd_rbf(h, torch.randn_like(h))
        return kl_uniform(model(forget["input_ids"]), forget["labels"])
