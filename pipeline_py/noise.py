"""Shrink-and-perturb, the 'Noise' of UNDO: θ ← (1 − α)·θ + α·β·ε.

ε is Xavier-uniform, U(±sqrt(6 / (fan_in + fan_out))), for every 2-D weight (embeddings included);
1-D weights (norm gains) get ε = 0 and are only shrunk. α = 0 returns the weights unchanged.
At α = 1 the norm gains would be zero, so Unlearn-and-Distill starts from a fresh init instead.
"""
from __future__ import annotations

import torch


def check_alpha_beta(alpha: float, beta: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"noise.alphas: alpha must lie in [0, 1], got {alpha!r}")
    if beta < 0:
        raise ValueError(f"noise.beta must be >= 0, got {beta!r}")


@torch.no_grad()
def shrink_perturb(model: torch.nn.Module, alpha: float, beta: float, seed: int) -> torch.nn.Module:
    """Apply the transform in place (parameters in name order, one generator) and return the model."""
    check_alpha_beta(alpha, beta)
    gen = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters()):
        p.mul_(1.0 - alpha)
        if p.ndim == 2 and alpha * beta != 0.0:
            fan_out, fan_in = p.shape  # nn.Linear stores [out, in]; nn.Embedding [V, D] alike
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            eps = torch.empty(p.shape).uniform_(-bound, bound, generator=gen)
            p.add_(alpha * beta * eps.to(p))
    return model
