"""The shared training loop (pipeline_py.train): NaN guard, LR schedule, early-stopping hook, learning."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline_py.batches import PackedStream, read_jsonl
from pipeline_py.losses import token_ce
from pipeline_py.model import build_model
from pipeline_py.train import TrainConfig, autocast, train


def test_nan_loss_raises_naming_stage_and_step():
    """A loss that turns NaN at the third step stops training with the stage name and 'step 3'."""
    lin = nn.Linear(3, 2)
    calls = []

    def loss():
        calls.append(1)
        out = lin.weight.sum() + lin.bias.sum()
        return out * float("nan") if len(calls) == 3 else out**2

    with pytest.raises(FloatingPointError, match=r"unlearn\[maxent\].*step 3"):
        train(lin, loss, TrainConfig(steps=10, lr=1e-3), "unlearn[maxent]", precision="fp32")
    assert len(calls) == 3


def test_inf_loss_raises_too():
    lin = nn.Linear(2, 2)
    with pytest.raises(FloatingPointError, match=r"distill.*step 1"):
        train(lin, lambda: lin.weight.sum() * float("inf"), TrainConfig(steps=2, lr=1e-3), "distill", "fp32")


def test_cosine_schedule_hand_values():
    """lr 1e-3, 100 steps, warm-up 10, floor 0.1: linear warm-up from lr/10, then cosine to 0.1·lr."""
    c = TrainConfig(steps=100, lr=1e-3, warmup=10)
    assert c.lr_at(0) == pytest.approx(1e-4)  # (0 + 1)/10 of the peak
    assert c.lr_at(4) == pytest.approx(5e-4)
    assert c.lr_at(9) == pytest.approx(1e-3)
    assert c.lr_at(10) == pytest.approx(1e-3)  # cosine starts at the peak
    assert c.lr_at(55) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # halfway: cos = 0
    last = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))  # the last step train() takes: step 99
    assert c.lr_at(99) == pytest.approx(last, rel=1e-6)
    assert c.lr_at(100) == pytest.approx(1e-4)  # the floor, min_lr_ratio·lr


def test_cosine_schedule_without_warmup_and_constant_schedule():
    c = TrainConfig(steps=4, lr=2e-3, min_lr_ratio=0.0)
    assert [c.lr_at(s) for s in range(5)] == pytest.approx(
        [2e-3 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(5)])
    k = TrainConfig(steps=50, lr=3e-4, warmup=3, schedule="constant")
    assert [k.lr_at(s) for s in (0, 1, 2, 3, 49)] == pytest.approx([1e-4, 2e-4, 3e-4, 3e-4, 3e-4])


def test_train_applies_the_schedule_each_step(monkeypatch):
    """The optimizer's LR at step k (1-based) is lr_at(k - 1)."""
    lin = nn.Linear(2, 1)
    cfg = TrainConfig(steps=6, lr=1e-2, warmup=2)
    opt_lrs = []
    orig_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        opt_lrs.append(self.param_groups[0]["lr"])
        return orig_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    train(lin, lambda: (lin.weight**2).sum(), cfg, "s", "fp32")
    assert opt_lrs == pytest.approx([cfg.lr_at(s) for s in range(6)])
    assert opt_lrs[0] == pytest.approx(5e-3) and opt_lrs[1] == pytest.approx(1e-2)


@pytest.mark.parametrize("kw, key", [({"steps": 0}, "steps"), ({"lr": 0.0}, "lr"), ({"batch_size": -1}, "batch_size"),
                                     ({"schedule": "linear"}, "schedule")])
def test_invalid_train_config(kw, key):
    with pytest.raises(ValueError, match=key):
        TrainConfig(**{"steps": 10, "lr": 1e-3, **kw})


def test_check_hook_runs_at_zero_every_k_and_stops_early():
    """check(0) first, then every check_every steps; returning True stops and train returns the step."""
    lin = nn.Linear(2, 1)
    steps_checked = []

    def check(step):
        steps_checked.append(step)
        return step >= 6

    n = train(lin, lambda: (lin.weight**2).sum(), TrainConfig(steps=20, lr=1e-3), "s", "fp32",
              check=check, check_every=3)
    assert steps_checked == [0, 3, 6] and n == 6


def test_check_hook_runs_after_the_last_step():
    lin = nn.Linear(2, 1)
    seen = []
    n = train(lin, lambda: (lin.weight**2).sum(), TrainConfig(steps=5, lr=1e-3), "s", "fp32",
              check=lambda s: seen.append(s) or False, check_every=2)
    assert seen == [0, 2, 4, 5] and n == 5


def test_autocast_rejects_unknown_precision():
    with pytest.raises(ValueError, match="precision"):
        autocast("fp8", torch.device("cpu"))


def test_short_pretrain_lowers_the_lm_loss(tiny_data, tok, tiny_cfg):
    """50 AdamW steps of packed LM training on the tiny corpus lower the loss on a fixed batch by > 30 %."""
    rows = read_jsonl(tiny_data / "train.jsonl")
    probe = next(PackedStream(tok, rows, batch_size=8, seq_len=32, seed=123))
    model = build_model(tiny_cfg, seed=0)
    with torch.no_grad():
        before = token_ce(model(probe["input_ids"]), probe["labels"]).item()
    assert before == pytest.approx(math.log(tiny_cfg.vocab_size), rel=0.05)  # near-uniform at init
    stream = PackedStream(tok, rows, batch_size=8, seq_len=32, seed=0)
    steps = train(model, lambda: (lambda b: token_ce(model(b["input_ids"]), b["labels"]))(next(stream)),
                  TrainConfig(steps=50, lr=3e-3, warmup=5, batch_size=8, seq_len=32), "pretrain", "fp32")
    with torch.no_grad():
        after = token_ce(model(probe["input_ids"]), probe["labels"]).item()
    assert steps == 50 and stream.tokens_seen == 50 * 8 * 32
    assert after < 0.7 * before, (before, after)
    assert not model.training


def test_pretrain_is_deterministic_for_a_seed(tiny_data, tmp_path):
    """Two pretraining runs with the same config and seed write bit-identical weights; another seed differs."""
    from safetensors.torch import load_file

    from pipeline_py.config import Runtime
    from pipeline_py.model import ModelConfig
    from pipeline_py.stages.pretrain import pretrain

    model = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 64}
    train_cfg = {"steps": 15, "lr": 3e-3, "batch_size": 4, "seq_len": 32, "warmup": 3}
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        pretrain(str(tiny_data / "train.jsonl"), str(tiny_data / "tokenizer.json"), str(tmp_path / run),
                 ModelConfig(**model), TrainConfig(**train_cfg), Runtime(precision="fp32", threads=1, device="cpu"),
                 seed=seed)
    a, b, c = (load_file(tmp_path / run / "model.safetensors") for run in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bf16_and_fp32_pretraining_reach_the_same_accuracy(tiny_data, tok, tmp_path):
    """300 steps under bf16 autocast and in fp32 from one seed: fp32 master weights in both, the bf16 run
    really ran in bf16 (its weights differ), and both reach the same held-out CE and accuracy within a
    tolerance, far below the untrained model's CE (on CPUs without native bf16 the bf16 run is emulated
    and slower, but its numerics are the same)."""
    from safetensors.torch import load_file

    from pipeline_py.checkpoint import load_checkpoint
    from pipeline_py.config import Runtime
    from pipeline_py.evaluation import Evaluator
    from pipeline_py.model import ModelConfig
    from pipeline_py.stages.pretrain import pretrain

    model = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 64}
    train_cfg = {"steps": 300, "lr": 3e-3, "batch_size": 16, "seq_len": 32, "warmup": 10, "weight_decay": 0.1}
    evaluator = Evaluator(tok, read_jsonl(tiny_data / "eval.jsonl"))
    results, weights = {}, {}
    for precision in ("fp32", "bf16"):
        pretrain(str(tiny_data / "train.jsonl"), str(tiny_data / "tokenizer.json"), str(tmp_path / precision),
                 ModelConfig(**model), TrainConfig(**train_cfg), Runtime(precision=precision, threads=1, device="cpu"),
                 seed=0)
        weights[precision] = load_file(tmp_path / precision / "model.safetensors")
        results[precision] = evaluator(load_checkpoint(tmp_path / precision)[0])
    assert all(w.dtype == torch.float32 for ws in weights.values() for w in ws.values())
    assert not all(torch.equal(weights["fp32"][k], weights["bf16"][k]) for k in weights["fp32"])
    fp32, bf16 = results["fp32"], results["bf16"]
    for split in ("retain", "forget"):
        assert fp32[f"ce_{split}"] < 0.5 * math.log(tok.get_vocab_size())  # both learned
        assert bf16[f"ce_{split}"] == pytest.approx(fp32[f"ce_{split}"], abs=0.05), (fp32, bf16)
        assert abs(bf16[f"acc_{split}"] - fp32[f"acc_{split}"]) <= 0.1, (fp32, bf16)


# ---- precision "auto": measured once, cached per machine and model shape ------------------------------------

import contextlib  # noqa: E402
import json  # noqa: E402

from pipeline_py import train as train_mod  # noqa: E402
from pipeline_py.model import ModelConfig as _MC  # noqa: E402


@pytest.fixture
def precision_env(tmp_path, monkeypatch):
    """An empty cache in tmp_path, no decision of earlier tests, native bf16, and a recording fake measurement."""
    monkeypatch.setenv("UNDO_PIPELINE_CACHE", str(tmp_path))
    monkeypatch.setattr(train_mod, "_DECIDED", {})
    monkeypatch.setattr(train_mod, "_DEFAULTED", set())
    monkeypatch.setattr(train_mod, "bf16_native", lambda device: True)
    calls, timings = [], {"fp32": 0.050, "bf16": 0.030}

    def fake_measure(model, device, batch_size, seq_len, precisions, rounds=5):
        calls.append((batch_size, seq_len, precisions))
        return {p: timings[p] for p in precisions}

    monkeypatch.setattr(train_mod, "measure_step_seconds", fake_measure)
    return calls, timings, tmp_path / "precision.json"


def _tiny_lm():
    return build_model(_MC(vocab_size=20, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=16), 0)


def test_auto_measures_once_then_reads_the_cache(precision_env, caplog):
    calls, _, cache = precision_env
    net = _tiny_lm()
    with caplog.at_level("INFO", logger="pipeline_py"):
        assert train_mod.resolve_precision("auto", torch.device("cpu"), net, 8, 16) == "bf16"
    assert calls == [(8, 16, ("fp32", "bf16"))]
    assert "precision auto -> bf16" in caplog.text and "fp32 50.0 ms, bf16 30.0 ms" in caplog.text
    entry = next(iter(json.loads(cache.read_text()).values()))
    assert entry["precision"] == "bf16" and entry["fp32_s"] == 0.050 and entry["bf16_s"] == 0.030
    train_mod._DECIDED.clear()  # a new process: only the file remembers
    assert train_mod.resolve_precision("auto", torch.device("cpu"), net, 8, 16) == "bf16"
    assert len(calls) == 1  # no second measurement
    train_mod.resolve_precision("auto", torch.device("cpu"), net, 4, 16)  # another batch shape: its own entry
    assert len(calls) == 2 and len(json.loads(cache.read_text())) == 2


@pytest.mark.parametrize("fp32_s, bf16_s, expected", [(0.050, 0.030, "bf16"), (0.050, 0.046, "fp32"),
                                                      (0.050, 0.060, "fp32"), (0.100, 0.089, "bf16")])
def test_auto_decides_by_the_timings_with_a_margin(precision_env, fp32_s, bf16_s, expected):
    """bf16 only when its step is more than 10 % faster: 46 ms vs 50 ms (8 % faster) stays fp32."""
    _, timings, _ = precision_env
    timings.update(fp32=fp32_s, bf16=bf16_s)
    assert train_mod.resolve_precision("auto", torch.device("cpu"), _tiny_lm(), 8, 16) == expected


def test_explicit_precisions_bypass_measurement_and_cache(precision_env):
    calls, _, cache = precision_env
    for p in ("fp32", "bf16"):
        assert train_mod.resolve_precision(p, torch.device("cpu"), _tiny_lm()) == p
    assert isinstance(autocast("fp32", torch.device("cpu")), type(contextlib.nullcontext()))
    assert calls == [] and not cache.exists()


def test_no_native_bf16_resolves_to_fp32_without_measuring(precision_env, monkeypatch, caplog):
    calls, _, cache = precision_env
    monkeypatch.setattr(train_mod, "bf16_native", lambda device: False)
    with caplog.at_level("INFO", logger="pipeline_py"):
        assert train_mod.resolve_precision("auto", torch.device("cpu"), _tiny_lm()) == "fp32"
        for _ in range(3):  # every training step and evaluation batch asks again: the choice is logged once
            assert isinstance(autocast("auto", torch.device("cpu")), type(contextlib.nullcontext()))
    assert calls == [] and not cache.exists() and caplog.text.count("bf16 not supported") == 1


def test_train_resolves_auto_once_and_autocast_follows_it(precision_env):
    """train(..., 'auto') measures at its batch shape; autocast('auto') without a model then uses that decision."""
    calls, _, _ = precision_env
    net = _tiny_lm()
    seen = []
    x = torch.randint(0, 20, (4, 16))

    def loss():
        seen.append(torch.is_autocast_enabled("cpu"))
        return token_ce(net(x), x)

    train(net, loss, TrainConfig(steps=3, lr=1e-3, batch_size=4, seq_len=16), "pretrain", "auto")
    assert calls == [(4, 16, ("fp32", "bf16"))] and seen == [True, True, True]
    assert train_mod._DECIDED == {"cpu": "bf16"}
    assert not isinstance(autocast("auto", torch.device("cpu")), type(contextlib.nullcontext()))


def test_auto_without_a_model_before_any_decision_is_fp32_on_cpu(precision_env):
    calls, _, _ = precision_env
    assert train_mod.resolve_precision("auto", torch.device("cpu")) == "fp32" and calls == []


def test_real_measurement_returns_positive_step_times():
    """The real timer on a tiny model (fp32 only, so it runs anywhere): a positive time, model untouched."""
    net = _tiny_lm()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    t = train_mod.measure_step_seconds(net, torch.device("cpu"), 2, 8, ("fp32",), rounds=1)
    assert set(t) == {"fp32"} and t["fp32"] > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters()) and torch.equal(rng, torch.get_rng_state())
