"""UnDIAL (Dong, Lin, Belkin, Huerta, Vulić; "UNDIAL: Self-Distillation with Adjusted Logits for Robust
Unlearning in Large Language Models", NAACL 2025): self-distillation toward the frozen original model's
logits with the actual next token's logit lowered by γ.
L = mean_t −Σ_v softmax(z_t^teacher − γ·onehot(y_t))(v)·log softmax(z_t^student)(v) + λ·CE_retain.

The mean runs over the forget positions whose (shifted) target is not -100; those positions are selected
before the one-hot is built, so -100 never indexes it. λ defaults to 0, as in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..losses import IGNORE, shift
from .base import UnlearnMethod, is_number, register


def adjusted_target(teacher_logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """log p̃ = log softmax(z − γ·onehot(y)) for logits [N, V] and valid targets [N] (no -100)."""
    z = teacher_logits.float() - gamma * F.one_hot(target, teacher_logits.shape[-1]).float()
    return F.log_softmax(z, dim=-1)


def undial_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                gamma: float) -> torch.Tensor:
    """Cross-entropy from the adjusted teacher target to the student, mean over positions with a target."""
    s, tgt = shift(student_logits, labels)
    t, _ = shift(teacher_logits, labels)
    mask = tgt != IGNORE  # [B, T-1]: mask first, then build the one-hot from valid targets only
    log_p = adjusted_target(t[mask], tgt[mask], gamma)  # [N, V]
    return -(log_p.exp() * F.log_softmax(s[mask].float(), dim=-1)).sum(-1).mean()


@register
@dataclass(frozen=True)
class UnDIAL(UnlearnMethod):
    name = "undial"
    needs_frozen = True
    gamma: float = 10.0  # strength γ subtracted from the next token's teacher logit (paper: 3, 10, 30)
    retain_weight: float = 0.0  # λ on CE_retain (0 in the paper)

    def __post_init__(self):
        super().__post_init__()
        self.check("gamma", is_number(self.gamma) and self.gamma > 0, "a number > 0")

    def forget_loss(self, model, forget):
        return undial_loss(model(forget["input_ids"]), self.frozen(forget), forget["labels"], self.gamma)
