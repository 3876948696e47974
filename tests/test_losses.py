"""Token losses (pipeline_py.losses) against hand computations, and the unlearning method plug-ins."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline_py.losses import forward_kl, kl_uniform, token_ce
from pipeline_py.methods import available, get_method
from pipeline_py.model import ModelConfig, build_model

IGN = -100


def log_softmax_list(row: list[float]) -> list[float]:
    """log softmax of a Python list, written out by hand."""
    m = max(row)
    log_z = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - log_z for v in row]


def targets(labels: list[list[int]]):
    """(b, t, target) for every position t whose next label (t + 1) is not -100: the one-position shift."""
    return [(b, t, row[t + 1]) for b, row in enumerate(labels) for t in range(len(row) - 1) if row[t + 1] != IGN]


# B = 2, T = 4, V = 3
LOGITS = [[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0], [9.0, -9.0, 0.0]],
          [[-0.5, 0.25, 1.5], [4.0, 0.0, -2.0], [0.3, 0.1, -0.7], [5.0, 5.0, -5.0]]]
LABELS = [[7, 2, IGN, 1],  # label[0] never a target; position 1 (target IGN) carries no loss
          [IGN, 0, 1, IGN]]


def test_shift_helper_lists_the_hand_picked_targets():
    """The helper's positions are exactly (0,0)->2, (0,2)->1, (1,0)->0, (1,1)->1 for these labels."""
    assert targets(LABELS) == [(0, 0, 2), (0, 2, 1), (1, 0, 0), (1, 1, 1)]


def test_token_ce_ignores_last_logit_and_first_label():
    """The last position's logits and the first label never enter the loss; -100 targets neither."""
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    base = token_ce(logits, labels)
    changed_logits = logits.clone()
    changed_logits[:, -1] = torch.tensor([100.0, -100.0, 3.0])  # last position predicts nothing
    changed_logits[0, 1] = torch.tensor([50.0, 0.0, -50.0])  # position 1 of row 0 has target -100
    changed_labels = labels.clone()
    changed_labels[:, 0] = torch.tensor([0, 2])
    assert torch.equal(token_ce(changed_logits, changed_labels), base)


def test_token_ce_matches_hand_computation():
    """token_ce = mean of -log softmax(logits[b, t])[labels[b, t+1]] over the four non -100 targets."""
    ls = log_softmax_list
    expected = -(ls(LOGITS[0][0])[2] + ls(LOGITS[0][2])[1] + ls(LOGITS[1][0])[0] + ls(LOGITS[1][1])[1]) / 4
    assert token_ce(torch.tensor(LOGITS), torch.tensor(LABELS)).item() == pytest.approx(expected, rel=1e-6)


# forward KL on a 2 x 3 x 4 example (B = 2, T = 3, V = 4)
S_LOGITS = [[[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, -1.0, 2.0], [3.0, 1.0, 0.0, 0.0]],
            [[-1.0, -2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0], [2.0, -2.0, 1.0, 0.0]]]
T_LOGITS = [[[1.0, 0.0, 0.0, -1.0], [0.5, 0.5, 2.0, -3.0], [0.0, 0.0, 0.0, 9.0]],
            [[2.0, 1.0, 0.0, -1.0], [1.5, -0.5, 0.0, 0.25], [7.0, 7.0, 7.0, 7.0]]]
KL_LABELS = [[0, 3, IGN], [1, 2, 0]]  # targets: (0,0) yes, (0,1) no, (1,0) yes, (1,1) yes


def hand_kl(s_logits, t_logits, labels) -> float:
    vals = []
    for b, t, _ in targets(labels):
        log_q, log_p = log_softmax_list(s_logits[b][t]), log_softmax_list(t_logits[b][t])
        vals.append(sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q)))
    return sum(vals) / len(vals)


def test_forward_kl_matches_hand_computation():
    """forward_kl = mean over target positions of sum_v p_teacher (log p_teacher - log q_student)."""
    assert [(b, t) for b, t, _ in targets(KL_LABELS)] == [(0, 0), (1, 0), (1, 1)]
    got = forward_kl(torch.tensor(S_LOGITS), torch.tensor(T_LOGITS), torch.tensor(KL_LABELS))
    assert got.item() == pytest.approx(hand_kl(S_LOGITS, T_LOGITS, KL_LABELS), rel=1e-6)
    assert got.item() > 0.05  # a real disagreement, not a vacuous zero


def test_forward_kl_is_zero_for_equal_logits():
    """KL(p || p) = 0 (up to float rounding)."""
    x = torch.tensor(S_LOGITS)
    assert forward_kl(x, x.clone(), torch.tensor(KL_LABELS)).item() == pytest.approx(0.0, abs=1e-7)


def test_forward_kl_ignores_minus_100_positions():
    """Student and teacher may disagree wildly where the target is -100 without changing the loss."""
    s, t, y = torch.tensor(S_LOGITS), torch.tensor(T_LOGITS), torch.tensor(KL_LABELS)
    base = forward_kl(s, t, y)
    s2 = s.clone()
    s2[0, 1] = torch.tensor([30.0, -30.0, 0.0, 0.0])  # (0,1) predicts a -100 target
    s2[:, 2] = torch.tensor([-30.0, 30.0, 0.0, 0.0])  # the last position predicts nothing
    assert torch.equal(forward_kl(s2, t, y), base)


def test_kl_uniform_matches_hand_computation():
    """kl_uniform = mean over target positions of (-log V - mean_v log q(v))."""
    vals = [-math.log(4) - sum(log_softmax_list(S_LOGITS[b][t])) / 4 for b, t, _ in targets(KL_LABELS)]
    got = kl_uniform(torch.tensor(S_LOGITS), torch.tensor(KL_LABELS))
    assert got.item() == pytest.approx(sum(vals) / len(vals), rel=1e-6)
    assert got.item() > 0.01


def test_kl_uniform_is_zero_for_uniform_logits():
    """Constant logits are the uniform distribution: KL(U || U) = 0."""
    logits = torch.full((2, 3, 4), 1.7)
    assert kl_uniform(logits, torch.tensor(KL_LABELS)).item() == pytest.approx(0.0, abs=1e-7)


# ---------------------------------------------------------------- unlearning methods


@pytest.fixture(scope="module")
def small_model():
    return build_model(ModelConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=16), seed=3)


def batch(ids: list[list[int]], labels: list[list[int]]) -> dict:
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}


FORGET = batch([[1, 5, 6, 7, 8, 2], [1, 9, 10, 11, 2, 0]],
               [[IGN, IGN, IGN, 7, 8, 2], [IGN, IGN, IGN, 11, 2, IGN]])
RETAIN = batch([[1, 12, 13, 14, 2], [1, 15, 16, 17, 2]],
               [[IGN, IGN, 13, 14, 2], [IGN, IGN, IGN, 17, 2]])


def test_available_methods():
    """Both plug-ins are discovered."""
    assert {"maxent", "graddiff"} <= set(available())


@torch.no_grad()
def test_maxent_loss_is_kl_uniform_plus_weighted_retain_ce(small_model):
    """MaxEnt: loss = kl_uniform(forget) + λ·CE(retain)."""
    m = get_method("maxent", {"retain_weight": 2.5, "steps": 3, "lr": 1e-3})
    expected = (kl_uniform(small_model(FORGET["input_ids"]), FORGET["labels"])
                + 2.5 * token_ce(small_model(RETAIN["input_ids"]), RETAIN["labels"]))
    assert m.loss(small_model, FORGET, RETAIN).item() == pytest.approx(expected.item(), rel=1e-6)


@torch.no_grad()
def test_graddiff_loss_is_minus_forget_ce_plus_weighted_retain_ce(small_model):
    """GradDiff: loss = -CE(forget) + λ·CE(retain)."""
    m = get_method("graddiff", {"retain_weight": 2.5})
    expected = (-token_ce(small_model(FORGET["input_ids"]), FORGET["labels"])
                + 2.5 * token_ce(small_model(RETAIN["input_ids"]), RETAIN["labels"]))
    assert m.loss(small_model, FORGET, RETAIN).item() == pytest.approx(expected.item(), rel=1e-6)


@torch.no_grad()
def test_zero_retain_weight_drops_the_retain_term(small_model):
    """λ = 0 leaves only the forget term (the retain batch may then be anything)."""
    maxent, graddiff = get_method("maxent", {"retain_weight": 0.0}), get_method("graddiff", {"retain_weight": 0.0})
    kl = kl_uniform(small_model(FORGET["input_ids"]), FORGET["labels"]).item()
    ce = token_ce(small_model(FORGET["input_ids"]), FORGET["labels"]).item()
    assert maxent.loss(small_model, FORGET, None).item() == pytest.approx(kl, rel=1e-6)
    assert graddiff.loss(small_model, FORGET, None).item() == pytest.approx(-ce, rel=1e-6)


def test_method_defaults():
    """GradDiff's default λ is the paper's 15; MaxEnt keeps the base default of 1."""
    assert get_method("graddiff").retain_weight == 15.0
    assert get_method("maxent").retain_weight == 1.0


def test_unknown_method_names_the_available_ones():
    with pytest.raises(ValueError, match="nope") as e:
        get_method("nope", {})
    assert "maxent" in str(e.value) and "graddiff" in str(e.value)


def test_unknown_hyperparameter_key_is_named():
    with pytest.raises(ValueError, match="lerning_rate"):
        get_method("maxent", {"lerning_rate": 1e-3})


@pytest.mark.parametrize("name", ["maxent", "graddiff"])
@pytest.mark.parametrize("params, key", [({"lr": 0.0}, "lr"), ({"lr": -1e-3}, "lr"), ({"steps": 0}, "steps"),
                                         ({"steps": 2.5}, "steps"), ({"retain_weight": -1.0}, "retain_weight")])
def test_invalid_hyperparameter_values_raise(name, params, key):
    """lr <= 0, non-positive or non-integer steps and a negative λ are refused, naming the key."""
    with pytest.raises(ValueError, match=rf"{name}\.{key}"):
        get_method(name, params)
