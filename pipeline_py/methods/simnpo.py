"""SimNPO (Fan, Liu, Lin, Jia, Zhang, Mei, Liu; "Simplicity Prevails: Rethinking Negative Preference
Optimization for LLM Unlearning", 2024): NPO without a reference model, length-normalised.
L = −(2/β)·mean_i log σ(−(β/|y_i|)·log p_θ(y_i|x_i) − γ) + λ·CE_retain.

log p(y|x) sums the answer tokens' log-probs (labels != -100) and |y| counts them (EOS included).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..losses import sequence_logprob
from .base import UnlearnMethod, is_number, register


def simnpo_loss(logp: torch.Tensor, length: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """−(2/β)·mean log σ(−β·logp/|y| − γ) = (2/β)·mean softplus(β·logp/|y| + γ), from [B] tensors."""
    return 2 / beta * F.softplus(beta * logp / length.clamp(min=1) + gamma).mean()


@register
@dataclass(frozen=True)
class SimNPO(UnlearnMethod):
    name = "simnpo"
    beta: float = 2.5  # inverse temperature β (the paper's TOFU value)
    gamma: float = 0.0  # reward margin γ (the paper finds 0 works best for unlearning)

    def __post_init__(self):
        super().__post_init__()
        self.check("beta", is_number(self.beta) and self.beta > 0, "a number > 0")
        self.check("gamma", is_number(self.gamma) and self.gamma >= 0, "a number >= 0")

    def forget_loss(self, model, forget):
        logp, length = sequence_logprob(model(forget["input_ids"]), forget["labels"])
        return simnpo_loss(logp, length, self.beta, self.gamma)
