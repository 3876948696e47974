"""GradDiff: gradient ascent on forget data, descent on retain data.
L = −CE_forget + λ·CE_retain (λ = 15 in the paper's arithmetic runs)."""
from __future__ import annotations

from dataclasses import dataclass

from ..losses import token_ce
from .base import UnlearnMethod, register


@register
@dataclass(frozen=True)
class GradDiff(UnlearnMethod):
    name = "graddiff"
    retain_weight: float = 15.0

    def forget_loss(self, model, forget):
        return -token_ce(model(forget["input_ids"]), forget["labels"])
