"""MaxEnt: push the forget predictions to the uniform distribution, keep retain CE low.
L = KL(U ‖ p_θ) on forget answer tokens + λ·CE_retain."""
from __future__ import annotations

from dataclasses import dataclass

from ..losses import kl_uniform, token_ce
from .base import UnlearnMethod, register


@register
@dataclass(frozen=True)
class MaxEnt(UnlearnMethod):
    name = "maxent"

    def loss(self, model, forget, retain):
        loss = kl_uniform(model(forget["input_ids"]), forget["labels"])
        if self.retain_weight:
            loss = loss + self.retain_weight * token_ce(model(retain["input_ids"]), retain["labels"])
        return loss
