"""The unlearning plug-ins beyond MaxEnt/GradDiff (pipeline_py.methods): closed forms against hand
computations, masking, RMU's parameter restriction, SAM's exact restore, GradAscent's guards, and a
2-step `stages.unlearn` run of every registered method."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from pipeline_py.checkpoint import load_checkpoint, make_record, save_checkpoint
from pipeline_py.config import Filter, Runtime, Unlearn
from pipeline_py.losses import mmd_rbf, sequence_logprob, token_ce
from pipeline_py.methods import available, get_method
from pipeline_py.methods.gradascent import GradAscent
from pipeline_py.methods.npo import npo_loss
from pipeline_py.methods.simnpo import simnpo_loss
from pipeline_py.methods.undial import adjusted_target, undial_loss
from pipeline_py.model import ModelConfig, build_model
from pipeline_py.stages.data import filter_data
from pipeline_py.stages.unlearn import unlearn
from pipeline_py.train import TrainConfig, train

IGN = -100


def log_softmax_list(row: list[float]) -> list[float]:
    m = max(row)
    log_z = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - log_z for v in row]


def batch(ids, labels) -> dict:
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}


# token 0 is the pad id; labels are aligned with the inputs (position t predicts label t + 1)
FORGET = batch([[1, 5, 6, 7, 8, 2], [1, 9, 10, 11, 2, 0]],
               [[IGN, IGN, IGN, 7, 8, 2], [IGN, IGN, IGN, 11, 2, IGN]])
RETAIN = batch([[1, 12, 13, 14, 2], [1, 15, 16, 17, 2]],
               [[IGN, IGN, 13, 14, 2], [IGN, IGN, IGN, 17, 2]])

# B = 2, T = 4, V = 3: targets at (0,0)->2, (0,2)->1, (1,0)->0, (1,1)->1
LOGITS = [[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0], [9.0, -9.0, 0.0]],
          [[-0.5, 0.25, 1.5], [4.0, 0.0, -2.0], [0.3, 0.1, -0.7], [5.0, 5.0, -5.0]]]
REF_LOGITS = [[[0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.5, 2.5, -1.0], [0.0, 0.0, 0.0]],
              [[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]]
LABELS = [[7, 2, IGN, 1], [IGN, 0, 1, IGN]]
TARGETS = {0: [(0, 2), (2, 1)], 1: [(0, 0), (1, 1)]}  # per row: (position, next token)


def hand_seq_logprob(logits) -> list[float]:
    return [sum(log_softmax_list(logits[b][t])[y] for t, y in TARGETS[b]) for b in (0, 1)]


@pytest.fixture(scope="module")
def small_model():
    return build_model(ModelConfig(vocab_size=20, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=16), seed=3)


def test_all_methods_registered():
    assert {"maxent", "graddiff", "gradascent", "npo", "simnpo", "rmu", "undial"} <= set(available())


# ---------------------------------------------------------------- NPO, SimNPO


def test_sequence_logprob_sums_answer_tokens():
    logp, n = sequence_logprob(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert logp.tolist() == pytest.approx(hand_seq_logprob(LOGITS), rel=1e-6)
    assert n.tolist() == [2, 2]


def test_npo_closed_form():
    """(2/β)·mean log(1 + (p_θ/p_ref)^β) from hand sequence log-probs."""
    beta = 0.7
    lp, lr_ = hand_seq_logprob(LOGITS), hand_seq_logprob(REF_LOGITS)
    expected = 2 / beta * sum(math.log(1 + math.exp(a - b) ** beta) for a, b in zip(lp, lr_)) / 2
    y = torch.tensor(LABELS)
    got = npo_loss(sequence_logprob(torch.tensor(LOGITS), y)[0], sequence_logprob(torch.tensor(REF_LOGITS), y)[0], beta)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_npo_at_the_reference_is_2_over_beta_log_2(small_model):
    """The reference is the model at prepare(): loss = (2/β)·log 2; its forward counts as frozen tokens."""
    m = get_method("npo", {"beta": 0.5, "retain_weight": 0.0})
    model = copy.deepcopy(small_model)
    m.prepare(model)
    assert not m.uses_retain
    assert m.loss(model, FORGET, None).item() == pytest.approx(2 / 0.5 * math.log(2), rel=1e-6)
    assert m.run.frozen_tokens == 11  # non-pad tokens of FORGET
    with torch.no_grad():  # move the model away from its reference: the closed form still holds
        model.lm_head.weight.mul_(3.0)
        lp = sequence_logprob(model(FORGET["input_ids"]), FORGET["labels"])[0]
        ref = sequence_logprob(small_model(FORGET["input_ids"]), FORGET["labels"])[0]
    expected = 2 / 0.5 * sum(math.log(1 + math.exp(0.5 * (a - b))) for a, b in zip(lp.tolist(), ref.tolist())) / 2
    assert m.loss(model, FORGET, None).item() == pytest.approx(expected, rel=1e-5)
    assert abs(expected - 4 * math.log(2)) > 1e-3


def test_npo_adds_weighted_retain_ce(small_model):
    m = get_method("npo", {"beta": 0.1, "retain_weight": 2.0})
    m.prepare(small_model)
    with torch.no_grad():
        ce = token_ce(small_model(RETAIN["input_ids"]), RETAIN["labels"]).item()
        assert m.loss(small_model, FORGET, RETAIN).item() == pytest.approx(20 * math.log(2) + 2 * ce, rel=1e-6)


def test_simnpo_closed_form(small_model):
    """−(2/β)·mean log σ(−(β/|y|)·log p − γ), by hand; the method adds λ·CE_retain."""
    beta, gamma = 2.5, 0.3
    lp = hand_seq_logprob(LOGITS)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = -2 / beta * sum(math.log(sig(-beta / 2 * a - gamma)) for a in lp) / 2
    logp, n = sequence_logprob(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert simnpo_loss(logp, n, beta, gamma).item() == pytest.approx(expected, rel=1e-6)
    m = get_method("simnpo", {"beta": beta, "gamma": gamma, "retain_weight": 0.5})
    with torch.no_grad():
        lp_m, n_m = sequence_logprob(small_model(FORGET["input_ids"]), FORGET["labels"])
        ce = token_ce(small_model(RETAIN["input_ids"]), RETAIN["labels"]).item()
        hand = -2 / beta * sum(math.log(sig(-beta / k * a - gamma)) for a, k in zip(lp_m.tolist(), n_m.tolist())) / 2
        assert n_m.tolist() == [3, 2]
        assert m.loss(small_model, FORGET, RETAIN).item() == pytest.approx(hand + 0.5 * ce, rel=1e-5)


# ---------------------------------------------------------------- UnDIAL


def test_undial_target_lowers_only_the_target_log_odds_by_gamma():
    z = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    lp = adjusted_target(z, torch.tensor([1]), gamma=3.0)[0].tolist()
    assert lp[1] - lp[0] == pytest.approx((2.0 - 1.0) - 3.0, abs=1e-6)  # target vs other: −γ
    assert lp[1] - lp[3] == pytest.approx((2.0 + 1.0) - 3.0, abs=1e-6)
    assert lp[0] - lp[2] == pytest.approx(1.0 - 0.5, abs=1e-6)  # other ratios unchanged
    assert lp[2] - lp[3] == pytest.approx(0.5 + 1.0, abs=1e-6)
    assert sum(math.exp(v) for v in lp) == pytest.approx(1.0, abs=1e-6)


def test_undial_loss_matches_hand_computation():
    gamma = 2.0
    vals = []
    for b, pairs in TARGETS.items():
        for t, y in pairs:
            z = [v - gamma * (i == y) for i, v in enumerate(REF_LOGITS[b][t])]
            p = [math.exp(v) for v in log_softmax_list(z)]
            vals.append(-sum(pi * qi for pi, qi in zip(p, log_softmax_list(LOGITS[b][t]))))
    got = undial_loss(torch.tensor(LOGITS), torch.tensor(REF_LOGITS), torch.tensor(LABELS), gamma)
    assert got.item() == pytest.approx(sum(vals) / len(vals), rel=1e-6)


def test_undial_ignores_minus_100_positions():
    """Logits where the next label is -100 (and the last position) change nothing; -100 is never one-hot."""
    s, t, y = torch.tensor(LOGITS), torch.tensor(REF_LOGITS), torch.tensor(LABELS)
    base = undial_loss(s, t, y, 3.0)
    s2, t2 = s.clone(), t.clone()
    for ten in (s2, t2):
        ten[0, 1] = torch.tensor([40.0, -40.0, 7.0])  # row 0, position 1: target -100
        ten[1, 2] = torch.tensor([-30.0, 30.0, 0.0])  # row 1, position 2: target -100
        ten[:, 3] = torch.tensor([25.0, 0.0, -25.0])  # last position predicts nothing
    assert torch.equal(undial_loss(s2, t2, y, 3.0), base)


def test_undial_method_uses_the_frozen_start_as_teacher(small_model):
    m = get_method("undial", {"gamma": 3.0})
    assert not m.uses_retain  # λ = 0 by default
    model = copy.deepcopy(small_model)
    m.prepare(model)
    with torch.no_grad():
        logits = small_model(FORGET["input_ids"])
        model.lm_head.weight.add_(0.1)  # the teacher must not follow the student
        expected = undial_loss(model(FORGET["input_ids"]), logits, FORGET["labels"], 3.0)
        assert m.loss(model, FORGET, None).item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(not p.requires_grad for p in m.run.frozen.parameters()) and not m.run.frozen.training


# ---------------------------------------------------------------- RMU


def test_rmu_loss_is_masked_mse_and_retain_term_is_zero_at_start(small_model):
    m = get_method("rmu", {"layer": 1, "layers": [0, 1], "c": 4.0, "retain_weight": 50.0})
    assert m.layers == (0, 1)
    m.prepare(small_model)
    u = m.run.control
    assert u.norm().item() == pytest.approx(4.0, rel=1e-5)
    with torch.no_grad():
        _, h = small_model(FORGET["input_ids"], hidden_layer=1)
        keep = FORGET["input_ids"] != 0
        expected = ((h[keep] - u) ** 2).mean().item()  # the pad position (row 1, last) is left out
        assert m.loss(small_model, FORGET, RETAIN).item() == pytest.approx(expected, rel=1e-5)


def test_rmu_trains_only_the_chosen_down_projections(tiny_base, tmp_path):
    out = tmp_path / "rmu"
    run(tiny_base, out, "rmu", {"steps": 1, "lr": 1e-2, "layer": 1, "layers": [1], "c": 5.0})
    before, _ = load_checkpoint(tiny_base["base"])
    after, record = load_checkpoint(out)
    a, b = after.state_dict(), before.state_dict()
    changed = sorted(k for k in a if not torch.equal(a[k], b[k]))
    assert changed == ["model.layers.1.mlp.down_proj.weight"]
    assert record["frozen_tokens"] > 0  # the retain anchor's forwards


def test_rmu_layers_are_checked(small_model):
    with pytest.raises(ValueError, match=r"unlearn\.hparams\.rmu\.layers = \(3,\)"):
        get_method("rmu", {"layer": 2, "layers": [3]})
    m = get_method("rmu", {"layer": 5, "layers": [4]})
    with pytest.raises(ValueError, match=r"unlearn\.hparams\.rmu\.layer = 5 .*n_layers = 2"):
        m.prepare(small_model)


# ---------------------------------------------------------------- SAM


def test_sam_restores_weights_exactly_and_uses_the_perturbed_gradient(small_model):
    rho = 0.05
    model = copy.deepcopy(small_model)
    m = get_method("maxent", {"sam_rho": rho, "retain_weight": 1.0})
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    loss = m.loss(model, FORGET, RETAIN)
    plain = [g.clone() for g in torch.autograd.grad(loss, params, retain_graph=True)]
    seen = {}

    def recompute():
        seen["weights"] = [p.detach().clone() for p in params]
        return m.loss(model, FORGET, RETAIN)

    m.backward(loss, recompute, params)
    assert all(torch.equal(p, s) for p, s in zip(params, start))  # bit-exact restore
    step = torch.cat([(w - s).flatten() for w, s in zip(seen["weights"], start)])
    g = torch.cat([x.flatten() for x in plain])
    assert step.norm().item() == pytest.approx(rho, rel=1e-3)  # moved by ρ along g/‖g‖
    assert torch.allclose(step, rho * g / g.norm(), atol=1e-6)
    twin = copy.deepcopy(small_model)  # the gradient at the perturbed point, computed independently
    with torch.no_grad():
        for p, w in zip(twin.parameters(), seen["weights"]):
            p.copy_(w)
    at_perturbed = torch.autograd.grad(m.loss(twin, FORGET, RETAIN), list(twin.parameters()))
    assert all(torch.allclose(p.grad, e, atol=1e-6) for p, e in zip(params, at_perturbed))
    assert not all(torch.allclose(p.grad, q, atol=1e-6) for p, q in zip(params, plain))


def test_sam_in_the_training_loop_steps_from_the_restored_weights(small_model, monkeypatch):
    """Inside train(): the weights the optimizer steps from are exactly those the step's loss saw."""
    model = copy.deepcopy(small_model)
    m = get_method("maxent", {"sam_rho": 0.1})
    at_loss, at_step = [], []
    orig = torch.optim.AdamW.step

    def spy(self, *a, **k):
        at_step.append([p.detach().clone() for p in model.parameters()])
        return orig(self, *a, **k)

    def loss():
        at_loss.append([p.detach().clone() for p in model.parameters()])
        return m.loss(model, FORGET, RETAIN)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    train(model, loss, TrainConfig(steps=3, lr=1e-2), "unlearn[maxent]", "fp32",
          backward=lambda v: m.backward(v, lambda: m.loss(model, FORGET, RETAIN), list(model.parameters())))
    assert len(at_loss) == len(at_step) == 3
    assert all(torch.equal(a, b) for x, y in zip(at_loss, at_step) for a, b in zip(x, y))
    assert not torch.equal(at_loss[0][0], at_loss[1][0])  # and it did train


# ---------------------------------------------------------------- RepNoise


def test_mmd_is_zero_for_equal_samples_and_grows_with_a_shift():
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randn(64, 8)
    assert mmd_rbf(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert mmd_rbf(x + 3.0, y).item() > 10 * mmd_rbf(x, y).item() > 0


def test_maxent_repnoise_adds_the_mmd_term(small_model):
    plain = get_method("maxent", {"retain_weight": 0.0})
    rep = get_method("maxent", {"retain_weight": 0.0, "repnoise_weight": 2.0, "repnoise_layer": 0})
    rep.prepare(small_model)
    with torch.no_grad():
        torch.manual_seed(1)
        got = rep.loss(small_model, FORGET, None).item()
        _, h = small_model(FORGET["input_ids"], hidden_layer=0)
        h = h[FORGET["input_ids"] != 0]
        torch.manual_seed(1)
        expected = plain.loss(small_model, FORGET, None).item() + 2.0 * mmd_rbf(h, torch.randn_like(h)).item()
    assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match=r"maxent\.repnoise_layer = 7"):
        get_method("maxent", {"repnoise_weight": 1.0, "repnoise_layer": 7}).prepare(small_model)


# ---------------------------------------------------------------- hyperparameters and variants


@pytest.mark.parametrize("name, params, key", [
    ("gradascent", {"forget_ce_ceiling": 0.0}, "forget_ce_ceiling"),
    ("gradascent", {"retain_weight": 1.0}, "retain_weight"),
    ("npo", {"beta": 0.0}, "beta"), ("npo", {"lr": "1e-4"}, "lr"),
    ("simnpo", {"beta": -1.0}, "beta"), ("simnpo", {"gamma": -0.5}, "gamma"),
    ("rmu", {"layers": []}, "layers"), ("rmu", {"c": 0}, "c"), ("rmu", {"layer": -1}, "layer"),
    ("undial", {"gamma": 0.0}, "gamma"), ("undial", {"steps": True}, "steps"),
    ("maxent", {"repnoise_weight": -1.0}, "repnoise_weight"), ("graddiff", {"sam_rho": -0.01}, "sam_rho"),
])
def test_invalid_values_name_key_value_and_allowed(name, params, key):
    with pytest.raises(ValueError, match=rf"unlearn\.hparams\.{name}\.{key} = .* must be"):
        get_method(name, params)


def test_a_config_entry_may_name_a_variant_of_a_method():
    m = get_method("maxent_sam", {"method": "maxent", "sam_rho": 0.01})
    assert m.name == "maxent" and m.sam_rho == 0.01
    with pytest.raises(ValueError, match=r"unlearn\.hparams\.maxent_sam\.sam_rho"):
        get_method("maxent_sam", {"method": "maxent", "sam_rho": -1.0})
    with pytest.raises(ValueError, match=r"unlearn\.hparams\.x\.method: unknown method 'nope'"):
        get_method("x", {"method": "nope"})


# ---------------------------------------------------------------- through stages.unlearn


@pytest.fixture(scope="module")
def tiny_base(tiny_data, tiny_cfg, tmp_path_factory):
    """A randomly initialised tiny checkpoint and the labeled forget/retain sets."""
    d = tmp_path_factory.mktemp("methods")
    net = build_model(tiny_cfg, seed=0)
    save_checkpoint(net, tiny_data, d / "base", make_record("pretrain", net, None, 0))
    filter_data(str(tiny_data / "train.jsonl"), str(d / "oracle.jsonl"), str(d / "forget.jsonl"),
                str(d / "retain.jsonl"), Filter(n_labeled=16), seed=0)
    return {"base": str(d / "base"), "forget": str(d / "forget.jsonl"), "retain": str(d / "retain.jsonl")}


def run(tiny_base, out, method, params):
    unlearn(tiny_base["base"], tiny_base["forget"], tiny_base["retain"], str(out), method,
            Unlearn(batch_size=8, methods=[method], hparams={method: params}),
            Runtime(precision="fp32", threads=1, device="cpu"), seed=0)


TWO_STEPS = {"rmu": {"layer": 1, "layers": [0, 1]}}
VARIANTS = {"maxent_sam": {"method": "maxent", "sam_rho": 0.01},
            "maxent_repnoise": {"method": "maxent", "repnoise_weight": 1.0, "repnoise_layer": 1}}


@pytest.mark.parametrize("name", available() + sorted(VARIANTS))
def test_every_method_runs_two_steps_and_writes_a_loadable_checkpoint(name, tiny_base, tmp_path):
    params = {"steps": 2, "lr": 1e-3, **TWO_STEPS.get(name, {}), **VARIANTS.get(name, {})}
    run(tiny_base, tmp_path / name, name, params)
    net, record = load_checkpoint(tmp_path / name)
    m = get_method(name, params)
    assert record["stage"] == "unlearn" and record["method"] == name and record["steps"] == 2
    assert (record["frozen_tokens"] > 0) == m.needs_frozen
    assert record["flops"] == 6 * record["n_params"] * record["trained_tokens"] + 2 * record["n_params"] * record["frozen_tokens"]
    base, _ = load_checkpoint(tiny_base["base"])
    assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), base.state_dict().values()))


def test_sam_counts_both_evaluations_as_trained_tokens(tiny_base, tmp_path):
    run(tiny_base, tmp_path / "plain", "maxent", {"steps": 2})
    run(tiny_base, tmp_path / "sam", "maxent", {"steps": 2, "sam_rho": 0.01})
    plain, sam = (json.loads((tmp_path / d / "record.json").read_text()) for d in ("plain", "sam"))
    assert sam["trained_tokens"] == 2 * plain["trained_tokens"] > 0


def test_gradascent_stops_cleanly_at_the_ceiling(tiny_base, tmp_path, monkeypatch):
    seen = []
    orig = GradAscent.should_stop
    monkeypatch.setattr(GradAscent, "should_stop", lambda self, loss: seen.append(-loss) or orig(self, loss))
    ceiling = 5.0  # the random tiny model starts near log V ≈ 4.4 nats
    run(tiny_base, tmp_path / "ga", "gradascent", {"steps": 200, "lr": 1e-2, "forget_ce_ceiling": ceiling})
    record = json.loads((tmp_path / "ga" / "record.json").read_text())
    assert 1 < record["steps"] < 200 and len(seen) == record["steps"]
    assert seen[-1] >= ceiling and max(seen[:-1]) < ceiling
    load_checkpoint(tmp_path / "ga")


def test_gradascent_nan_loss_writes_no_checkpoint(tiny_base, tmp_path, monkeypatch):
    orig = GradAscent.loss
    calls = []

    def nan_at_step_3(self, model, forget, retain):
        calls.append(1)
        value = orig(self, model, forget, retain)
        return value * float("nan") if len(calls) == 3 else value

    monkeypatch.setattr(GradAscent, "loss", nan_at_step_3)
    with pytest.raises(FloatingPointError, match=r"unlearn\[gradascent\].*step 3"):
        run(tiny_base, tmp_path / "nan", "gradascent", {"steps": 10})
    assert not (tmp_path / "nan" / "model.safetensors").exists()


def test_nan_weights_write_no_checkpoint(tiny_base, tmp_path, monkeypatch):
    """A finite loss whose step leaves NaN weights (here a NaN gradient) is refused at save time."""
    monkeypatch.setattr(GradAscent, "backward", lambda self, loss, recompute, params: [
        p.__setattr__("grad", torch.full_like(p, float("nan"))) for p in params])
    with pytest.raises(FloatingPointError, match="NaN"):
        run(tiny_base, tmp_path / "nanw", "gradascent", {"steps": 1})
    assert not (tmp_path / "nanw" / "model.safetensors").exists()
