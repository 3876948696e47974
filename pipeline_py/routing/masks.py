"""Routing masks: which tokens are routed, how strongly, and the gradient weights that follow.

The route of position t is chosen by its *target*, token t+1: strength s ∈ [0, 1] (1 for a routed token of
a labeled forget example, times its unigram weight under soft routing, 0 otherwise; `route_tokens` says
which tokens: the answer and its EOS, or the whole example); the original neurons get weight
1 − s·(1 − forget_weight), the extra neurons always 1 (retain tokens train everything). Plain arithmetic
on tensors and arrays: no model, no data stream.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch


def targets(per_token: torch.Tensor) -> torch.Tensor:
    """A per-token value [B, T] moved to the position that *predicts* the token: position t takes the value of
    token t+1 (its target); the last position has no target and gets 0."""
    s = torch.zeros_like(per_token, dtype=torch.float32)
    s[:, :-1] = per_token[:, 1:]
    return s


def route_weights(strength: torch.Tensor, forget_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token strengths [B, T] (of each token as a target) → gradient weights (w_orig, w_extra) [B, T] of
    the predicting positions (see `targets`)."""
    s = targets(strength)
    return 1.0 - s * (1.0 - forget_weight), torch.ones_like(s)


def labeled_mask(rows: list[dict], fraction: float, seed: int) -> np.ndarray:
    """Which examples carry a forget label routing may use: a seeded `fraction` of the forget examples. [N] bool"""
    draw = np.random.default_rng(seed + 7919).random(len(rows))
    return np.array([bool(r["forget"]) for r in rows]) & (draw < fraction)


def unigram_weights(ids: list[list[int]], labeled: np.ndarray, vocab_size: int) -> np.ndarray:
    """Soft routing weight per token v: f_F(v) / (f_F(v) + f_R(v)), with f the token's relative frequency
    (add-one smoothed) in labeled forget examples (F) and all other examples (R). [V]"""
    counts = [Counter(), Counter()]
    for seq, lab in zip(ids, labeled):
        counts[int(lab)].update(seq)
    freq = []
    for c in counts:
        n = np.ones(vocab_size)
        for v, k in c.items():
            n[v] += k
        freq.append(n / n.sum())
    return freq[1] / (freq[0] + freq[1])
