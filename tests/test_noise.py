"""Shrink-and-perturb (pipeline_py.noise): θ ← (1 − α)·θ + α·β·ε with Xavier-uniform ε on matrices."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from pipeline_py.model import ModelConfig, build_model
from pipeline_py.noise import shrink_perturb


@pytest.fixture
def model():
    return build_model(ModelConfig(vocab_size=24, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=16), seed=0)


def snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def test_alpha_zero_leaves_weights_bit_identical(model):
    before = snapshot(model)
    shrink_perturb(model, alpha=0.0, beta=0.5, seed=1)
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k


def test_beta_zero_is_pure_shrink(model):
    """β = 0: every parameter is exactly (1 − α)·θ."""
    before = snapshot(model)
    shrink_perturb(model, alpha=0.3, beta=0.0, seed=1)
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k] * (1 - 0.3)), k


def test_norm_gains_are_only_shrunk(model):
    """1-D parameters (RMSNorm gains) get no noise even with α·β > 0."""
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)  # not all ones, so a wrong scale could not hide
    before = snapshot(model)
    shrink_perturb(model, alpha=0.4, beta=0.2, seed=1)
    one_d = [k for k, v in model.named_parameters() if v.ndim == 1]
    assert len(one_d) == 2 * 2 + 1  # two norms per block and the final norm
    for k in one_d:
        assert torch.equal(dict(model.named_parameters())[k], before[k] * (1 - 0.4)), k


def test_matrices_do_get_noise(model):
    """With α·β > 0 every 2-D weight moves away from (1 − α)·θ."""
    before = snapshot(model)
    shrink_perturb(model, alpha=0.4, beta=0.2, seed=1)
    for k, v in model.named_parameters():
        if v.ndim == 2:
            assert not torch.allclose(v, before[k] * 0.6), k


def test_noise_is_xavier_uniform():
    """ε = (θ_new − (1 − α)θ)/(αβ) lies in ±sqrt(6/(fan_in + fan_out)), with mean ≈ 0 and variance ≈ bound²/3."""
    alpha, beta = 0.5, 0.2
    lin = nn.Linear(300, 200, bias=False)  # weight [fan_out = 200, fan_in = 300]
    theta = lin.weight.detach().clone()
    shrink_perturb(lin, alpha, beta, seed=7)
    eps = (lin.weight.detach().double() - (1 - alpha) * theta.double()) / (alpha * beta)
    bound = math.sqrt(6.0 / (300 + 200))
    assert eps.abs().max().item() <= bound * (1 + 1e-4)
    assert eps.abs().max().item() >= 0.99 * bound  # 60 000 draws reach the edges of the interval
    assert abs(eps.mean().item()) < 0.02 * bound
    assert eps.var().item() == pytest.approx(bound**2 / 3, rel=0.05)


def test_embedding_uses_its_own_fans():
    """An embedding [V, D] gets ε bounded by sqrt(6/(V + D)), a different bound from a square matrix."""
    emb = nn.Embedding(1000, 20)
    theta = emb.weight.detach().clone()
    shrink_perturb(emb, 0.5, 0.2, seed=0)
    eps = (emb.weight.detach().double() - 0.5 * theta.double()) / 0.1
    bound = math.sqrt(6.0 / 1020)
    assert eps.abs().max().item() <= bound * (1 + 1e-4)
    assert eps.var().item() == pytest.approx(bound**2 / 3, rel=0.05)


def test_same_seed_same_result_other_seed_differs(model):
    a, b, c = model, copy.deepcopy(model), copy.deepcopy(model)
    shrink_perturb(a, 0.5, 0.1, seed=3)
    shrink_perturb(b, 0.5, 0.1, seed=3)
    shrink_perturb(c, 0.5, 0.1, seed=4)
    pa, pb, pc = snapshot(a), snapshot(b), snapshot(c)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["lm_head.weight"], pc["lm_head.weight"])


@pytest.mark.parametrize("alpha, beta, word", [(-0.1, 0.1, "alpha"), (1.5, 0.1, "alpha"), (0.5, -0.1, "beta")])
def test_out_of_range_alpha_beta_raise_before_touching_weights(model, alpha, beta, word):
    before = snapshot(model)
    with pytest.raises(ValueError, match=word):
        shrink_perturb(model, alpha, beta, seed=0)
    assert all(torch.equal(v, before[k]) for k, v in model.named_parameters())


def test_alpha_one_is_allowed_and_keeps_only_noise(model):
    """α = 1 is the edge of the allowed range: matrices become β·ε, norm gains 0."""
    shrink_perturb(model, 1.0, 0.1, seed=0)
    for k, v in model.named_parameters():
        if v.ndim == 1:
            assert torch.equal(v, torch.zeros_like(v)), k
        else:
            bound = math.sqrt(6.0 / sum(v.shape))
            assert v.abs().max().item() <= 0.1 * bound * (1 + 1e-6), k
