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
    with a target (labels != -100); the distillation loss of UNDO.

    Computed as Σ p log p − Σ p log q: the teacher's terms carry no gradient, and the cross term is one
    soft-target cross-entropy, whose backward is softmax(s) − p, so only [N, V] tensors the kernels need
    are made (no masked copies; the teacher logits may come from `torch.inference_mode`)."""
    s, tgt = shift(student_logits, labels)
    t, _ = shift(teacher_logits, labels)
    vocab = s.shape[-1]
    weight = (tgt != IGNORE).reshape(-1).float()  # [N], N = B·(T-1)
    with torch.no_grad():
        log_p = F.log_softmax(t.float().reshape(-1, vocab), dim=-1)  # teacher  [N, V]
        p = log_p.exp()
        neg_entropy = (p * log_p).sum(-1)  # [N]
    cross = F.cross_entropy(s.float().reshape(-1, vocab), p, reduction="none")  # −Σ_v p log q  [N]
    return ((neg_entropy + cross) * weight).sum() / weight.sum()


def kl_from_uniform(log_q: torch.Tensor) -> torch.Tensor:
    """Per position: KL(U ‖ q) = −log V − mean_v log q(v), from log-probabilities log_q [N, V] -> [N]."""
    return -math.log(log_q.shape[-1]) - log_q.mean(-1)


def kl_uniform(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(U ‖ p_θ), averaged over positions with a target (MaxEnt)."""
    pred, tgt = shift(logits, labels)
    return kl_from_uniform(F.log_softmax(pred[tgt != IGNORE].float(), dim=-1)).mean()  # [N] -> scalar


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: log p_θ(y|x) = Σ log p_θ(y_t | y_<t, x) over the targets that are not -100 [B], and
    their number |y| [B] (NPO, SimNPO)."""
    pred, tgt = shift(logits, labels)
    mask = tgt != IGNORE
    logp = F.log_softmax(pred.float(), dim=-1).gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, logp, 0.0).sum(-1), mask.sum(-1)


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, n_kernels: int = 5, mul: float = 2.0) -> torch.Tensor:
    """Squared maximum mean discrepancy between samples x [N, D] and y [M, D] with a sum of Gaussian
    kernels exp(-‖a-b‖² / b_k), bandwidths b_k = b·mul^(k - n_kernels//2) around the mean pairwise
    squared distance b of the pooled samples (held constant): the MMD of RepNoise's code."""
    z = torch.cat([x, y]).float()
    sq = z.pow(2).sum(-1)
    d2 = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp(min=0)  # [N+M, N+M] squared distances
    n = z.shape[0]
    bw = d2.detach().sum() / (n * n - n)
    k = sum(torch.exp(-d2 / (bw * mul ** (i - n_kernels // 2))) for i in range(n_kernels))
    nx = x.shape[0]
    return k[:nx, :nx].mean() + k[nx:, nx:].mean() - 2 * k[:nx, nx:].mean()
