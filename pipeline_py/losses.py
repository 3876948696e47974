"""Token-level losses shared by every stage. Logits are [B, T, V]; labels [B, T] are aligned with the
inputs (position t predicts token t+1), -100 marks positions without a loss."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = -100


def shift(logits: torch.Tensor, labels: torch.Tensor):
    """Predictions [B, T-1, V] and their targets [B, T-1]."""
    return logits[:, :-1], labels[:, 1:]


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose target is not -100."""
    pred, tgt = shift(logits, labels)
    return F.cross_entropy(pred.float().reshape(-1, pred.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher ‖ p_student) over the full vocabulary at temperature 1, averaged over the positions
    with a target (labels != -100); the distillation loss of UNDO."""
    s, tgt = shift(student_logits, labels)
    t, _ = shift(teacher_logits, labels)
    mask = tgt != IGNORE  # [B, T-1]
    log_q = F.log_softmax(s[mask].float(), dim=-1)  # student  [N, V]
    log_p = F.log_softmax(t[mask].float(), dim=-1)  # teacher  [N, V]
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def kl_uniform(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(U ‖ p_θ) = −log V − mean_v log p_θ(v), averaged over positions with a target (MaxEnt)."""
    pred, tgt = shift(logits, labels)
    log_q = F.log_softmax(pred[tgt != IGNORE].float(), dim=-1)  # [N, V]
    return (-math.log(log_q.shape[-1]) - log_q.mean(-1)).mean()
