"""NPO, Negative Preference Optimization (Zhang, Lin, Bai, Mei; "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning", COLM 2024).
L = (2/β)·mean_i log(1 + (p_θ(y_i|x_i) / p_ref(y_i|x_i))^β) + λ·CE_retain.

log p(y|x) is the sum of the answer tokens' log-probs (labels != -100); the reference is a frozen copy
of the model at the start of unlearning (the base), run without a graph and counted as frozen tokens.
λ defaults to 1 (the paper's NPO+RT, needed to keep add/sub); λ = 0 is plain NPO. At θ = ref the
loss is (2/β)·log 2, and as β → 0 it tends to gradient ascent on log p_θ(y|x).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..losses import sequence_logprob
from .base import UnlearnMethod, is_number, register


def npo_loss(logp: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """(2/β)·mean log(1 + exp(β·(log p_θ − log p_ref))) from sequence log-probs [B]."""
    return 2 / beta * F.softplus(beta * (logp - logp_ref)).mean()


@register
@dataclass(frozen=True)
class NPO(UnlearnMethod):
    name = "npo"
    needs_frozen = True
    beta: float = 0.1  # inverse temperature β of the preference loss (the paper's 0.1)

    def __post_init__(self):
        super().__post_init__()
        self.check("beta", is_number(self.beta) and self.beta > 0, "a number > 0")

    def forget_loss(self, model, forget):
        logp, _ = sequence_logprob(model(forget["input_ids"]), forget["labels"])
        logp_ref, _ = sequence_logprob(self.frozen(forget), forget["labels"])
        return npo_loss(logp, logp_ref, self.beta)
