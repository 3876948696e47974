"""Gradient routing (ERA): forward values untouched, gradients scaled by the mask, masks aligned with the
targets, ablation back to the standard architecture, and the two stages end to end on the tiny corpus."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline_py.config import Runtime, Study
from pipeline_py.model import ModelConfig
from pipeline_py.stages import era as era_stages
from pipeline_py.batches import PackedStream, read_jsonl, write_jsonl
from pipeline_py.checkpoint import load_checkpoint
from pipeline_py.losses import token_ce
from pipeline_py.model import CausalLM
from pipeline_py.report import describe
from pipeline_py.routing import (EraConfig, RoutedLM, RoutedStream, labeled_mask, load_routed,
                                 route_weights, targets, unigram_weights)
from pipeline_py.tokenizer import BOS_ID, EOS_ID
from pipeline_py.train import TrainConfig

F_ = 64  # d_ff of the tiny config
K = 16  # extra neurons in these tests


def routed(tiny_cfg, layers=(0, 1), seed=0) -> RoutedLM:
    torch.manual_seed(seed)
    return RoutedLM(tiny_cfg, layers, K)


def batch(tiny_cfg, B=3, T=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, tiny_cfg.vocab_size, (B, T), generator=g)
    return x, x.clone()


def retain_file(tiny_data, tmp_path) -> str:
    """A small labeled retain set, as filter_data writes it."""
    path = tmp_path / "retain.jsonl"
    write_jsonl([r for r in read_jsonl(tiny_data / "train.jsonl") if not r["forget"]][:64], path)
    return str(path)


RUNTIME = Runtime(precision="fp32", threads=1)


def pretrain_routed(tiny_data, out, model: dict, train_cfg: dict, era: dict, seed: int = 0) -> None:
    era_stages.pretrain_routed(str(tiny_data / "train.jsonl"), str(tiny_data / "tokenizer.json"), str(out),
                               ModelConfig(**model), TrainConfig(**train_cfg), EraConfig(**era), RUNTIME, seed)


def ablate(routed_dir, retain: str, out, era: dict, seed: int = 0) -> None:
    era_stages.ablate(str(routed_dir), retain, str(out), EraConfig(**era), RUNTIME, seed)


def input_grads(model: RoutedLM, layer: int, x, labels, route=None) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    token_ce(model(x, route=route), labels).backward()
    mlp = model.model.layers[layer].mlp
    return {n: getattr(mlp, n).weight.grad.clone() for n in ("gate_proj", "up_proj", "down_proj")}


def test_routing_leaves_logits_bit_identical(tiny_cfg):
    """Any mask (negative weights, soft strengths) changes gradients only: logits are exactly equal."""
    model = routed(tiny_cfg)
    x, _ = batch(tiny_cfg)
    strength = torch.rand(x.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = model(x)
        for fw in (-0.75, 0.0, 0.5):
            assert torch.equal(model(x, route=route_weights(strength, fw)), plain)


@pytest.mark.parametrize("fw", [-0.75, 0.0, 0.3])
def test_forget_batch_gradient_to_original_inputs_is_mask_times_unmasked(tiny_cfg, fw):
    """One routed layer, every target a forget token: ∂L/∂(gate, up) of the original neurons = fw × the
    unmasked gradient; the extra neurons' and the down-projection's gradients are unchanged (the mask does
    not reach output weights, which is why ablation removes both sides)."""
    model = routed(tiny_cfg, layers=(0,))
    x, y = batch(tiny_cfg)
    free = input_grads(model, 0, x, y)
    masked = input_grads(model, 0, x, y, route=route_weights(torch.ones(x.shape), fw))
    for name in ("gate_proj", "up_proj"):
        assert free[name][:F_].abs().max() > 0
        torch.testing.assert_close(masked[name][:F_], fw * free[name][:F_], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(masked[name][F_:], free[name][F_:], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(masked["down_proj"], free["down_proj"], rtol=1e-5, atol=1e-9)


def test_route_weights_follow_the_next_token():
    """Position t takes the strength of token t+1; the last position (no target) is never routed."""
    s = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 0.5]])
    w_orig, w_extra = route_weights(s, -0.75)
    torch.testing.assert_close(w_orig, torch.tensor([[1.0, -0.75, -0.75, 1.0, 0.125, 1.0]]))
    assert torch.equal(w_extra, torch.ones_like(s))


@pytest.mark.parametrize("flagged, blocked", [(5, True), (4, False), (6, False)])
def test_only_the_position_predicting_a_forget_token_is_routed(tiny_cfg, flagged, blocked):
    """Loss on the single target token 5 (predicted at position 4), routing only in the last block with
    forget weight 0: flagging token 5 blocks every gradient into the original neurons' input weights;
    flagging its neighbour (an off-by-one in either direction) lets it through."""
    model = routed(tiny_cfg, layers=(1,))
    x, _ = batch(tiny_cfg, B=1, T=8)
    labels = torch.full_like(x, -100)
    labels[0, 5] = x[0, 5]
    strength = torch.zeros(x.shape)
    strength[0, flagged] = 1.0
    g = input_grads(model, 1, x, labels, route=route_weights(strength, 0.0))
    orig = g["gate_proj"][:F_].abs().max() + g["up_proj"][:F_].abs().max()
    assert (orig == 0) == blocked, orig
    assert g["gate_proj"][F_:].abs().max() > 0  # the extra neurons always learn


@pytest.mark.parametrize("route_tokens", ["answer", "example"])
def test_routed_stream_matches_pretraining_tokens_and_labels_each_token(tok, tiny_data, route_tokens):
    """Same seed, same tokens as the base's PackedStream. In a forget example the flagged tokens (strength 1)
    are exactly its answer and EOS ('answer') or all of it, BOS to EOS ('example'); a retain example has
    none. Checked on the decoded text of every complete example in the stream."""
    rows = read_jsonl(tiny_data / "train.jsonl")
    answers = {(r["prompt"], r["answer"]) for r in rows}
    plain = PackedStream(tok, rows, 4, 32, seed=3)
    stream = RoutedStream(tok, rows, 4, 32, seed=3, era=EraConfig(route_tokens=route_tokens))
    ids, strength, member = [], [], []
    for _ in range(6):
        a, b = next(plain), next(stream)
        assert torch.equal(a["input_ids"], b["input_ids"])
        ids += b["input_ids"].flatten().tolist()
        strength += b["strength"].flatten().tolist()
        member += b["forget"].flatten().tolist()
    starts = [i for i, t in enumerate(ids) if t == BOS_ID]
    checked = 0
    for s, e in zip(starts, starts[1:]):
        assert ids[e - 1] == EOS_ID
        text = tok.decode(ids[s + 1: e - 1])
        forget = any(op in text for op in ("*", "/", "times", "divided"))
        flagged = [i for i in range(s, e) if strength[i] > 0]
        assert set(strength[s:e]) <= {0.0, 1.0}
        assert set(member[s:e]) == {1.0 if forget else 0.0}, text  # the whole example, in both modes
        if not forget:
            assert not flagged, text
        elif route_tokens == "example":
            assert flagged == list(range(s, e)), text
        else:
            n = len(flagged)
            assert flagged == list(range(e - n, e)) and n >= 2, text  # a suffix: answer digits, then EOS
            prompt, answer = tok.decode(ids[s + 1: e - n]), tok.decode(ids[e - n: e - 1])
            assert (prompt, answer) in answers, (prompt, answer)
            checked += 1
        checked += forget and route_tokens == "example"
    assert checked > 0 and stream.routed_tokens == sum(strength)


def test_l1_penalty_hand_computed_and_not_routed(tiny_cfg):
    """The specialising L1 equals its formula on the stored activations, and its gradient reaches the original
    neurons' input weights at routed positions even with forget weight 0 (routing masks only the CE)."""
    model = routed(tiny_cfg, layers=(0,))
    x, _ = batch(tiny_cfg, B=2, T=10)
    strength = torch.zeros(x.shape)
    strength[0, 4:8] = 1.0  # the answer of a forget example: tokens 4-7
    member = torch.zeros(x.shape)
    member[0, 1:8] = 1.0  # the whole example
    r, f = targets(strength), targets(member)
    model(x, route=route_weights(strength, 0.0))
    h = model.model.layers[0].mlp.h.detach()
    want = (0.3 * (1 - f) * h[..., F_:].abs().sum(-1) + 0.7 * r * h[..., :F_].abs().sum(-1)).mean()
    got = model.l1_penalty(r, f, 0.3, 0.7)
    torch.testing.assert_close(got, want)
    model.zero_grad(set_to_none=True)
    got.backward()
    up = model.model.layers[0].mlp.up_proj.weight.grad
    assert up[:F_].abs().max() > 0 and up[F_:].abs().max() > 0
    model.zero_grad(set_to_none=True)
    model(x, route=route_weights(strength, 0.0))
    model.l1_penalty(r, f, 0.0, 1.0).backward()  # l1_orig only: nothing reaches the extra neurons
    assert model.model.layers[0].mlp.up_proj.weight.grad[F_:].abs().max() == 0


def test_labeled_fraction_labels_only_forget_examples():
    rows = [{"forget": i % 2 == 0} for i in range(4000)]
    forget = np.array([r["forget"] for r in rows])
    assert (labeled_mask(rows, 1.0, 0) == forget).all()
    assert not labeled_mask(rows, 0.0, 0).any()
    half = labeled_mask(rows, 0.5, 0)
    assert not half[~forget].any()
    assert 0.45 < half[forget].mean() < 0.55
    assert (half == labeled_mask(rows, 0.5, 0)).all()


def test_soft_routing_weights_hand_computed():
    """Counts F {1: 1, 2: 1}, R {2: 1, 3: 1}, add-one smoothing over V = 4: f_F = [1,2,2,1]/6,
    f_R = [1,1,2,2]/6, weight f_F / (f_F + f_R)."""
    w = unigram_weights([[1, 2], [2, 3]], np.array([True, False]), 4)
    np.testing.assert_allclose(w, [0.5, 2 / 3, 0.5, 1 / 3])


def test_ablation_gives_original_shapes_and_the_zeroed_routed_outputs(tiny_cfg):
    model = routed(tiny_cfg, layers=(0, 1))
    plain = model.ablate()
    assert type(plain) is CausalLM
    assert {k: v.shape for k, v in plain.state_dict().items()} == \
        {k: v.shape for k, v in CausalLM(tiny_cfg).state_dict().items()}
    x, _ = batch(tiny_cfg)
    with torch.no_grad():
        before = model(x)
        for mlp in model.routed():
            mlp.down_proj.weight[:, F_:] = 0.0  # the extra neurons contribute nothing
        zeroed = model(x)
        torch.testing.assert_close(plain(x), zeroed, rtol=1e-5, atol=1e-6)
        assert (before - zeroed).abs().max() > 1e-4  # the extra neurons did matter


ROOT = Path(__file__).resolve().parents[1]


def study_with(era: dict | None, setting: str = "arithmetic", **model) -> dict:
    """config.yaml with its era block and model keys replaced; for the wmdp setting, with configs/wmdp.yaml's
    wmdp block."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config = {**config, "model": {**config["model"], **model}, "era": era}
    if setting == "wmdp":
        config.update(setting="wmdp", wmdp=yaml.safe_load((ROOT / "configs" / "wmdp.yaml").read_text())["wmdp"])
    return config


def test_era_config_errors_name_the_key(tiny_cfg):
    for bad, match in [({"forget_weight": 2}, r"forget_weight = 2 .*<= 1"),
                       ({"labeled_fraction": 1.5}, r"labeled_fraction = 1.5 .*<= 1"),
                       ({"route_tokens": "prompt"}, r"route_tokens = 'prompt'.*\['answer', 'example'\]"),
                       ({"steps_factor": 0}, r"steps_factor = 0 .*> 0")]:
        with pytest.raises(ValueError, match="^" + match):  # built directly: the key
            EraConfig(**bad)
        with pytest.raises(ValueError, match=r"^era\." + match):  # from the config: the key path
            EraConfig.from_dict(bad, "era")
    with pytest.raises(ValueError, match=r"^era\.bogus: unknown key; allowed keys of era: \[.*'layers'"):
        EraConfig.from_dict({"bogus": 1}, "era")
    # the depth check is the study's: it knows the model
    Study.from_dict(study_with({"layers": [0, 3]}, n_layers=4))  # blocks 0..3 exist
    with pytest.raises(ValueError, match=r"era\.layers = \[0, 4\] .*blocks \[4\] do not exist.*model\.n_layers = 4"):
        Study.from_dict(study_with({"layers": [0, 4]}, n_layers=4))
    Study.from_dict(study_with(None, "wmdp"))
    with pytest.raises(ValueError, match=r"era: the wmdp setting .*no pretraining.*era: null"):
        Study.from_dict(study_with({"layers": [0]}, "wmdp"))


def test_describe_labels_era_models():
    assert describe("routed/era") == {"kind": "unlearn", "method": "era", "alpha": 0.0}
    assert describe("routed/era/undo_a0.4_b0.1") == {"kind": "undo", "method": "era", "alpha": 0.4}


def test_stages_pretrain_routed_then_ablate(tiny_data, tiny_cfg, tmp_path):
    """pretrain_routed writes a routed checkpoint with the base's token budget times era.steps_factor; ablate
    (no finetune) writes a standard checkpoint equal to the routed model's ablation, which plain transformers
    loads."""
    model = {k: getattr(tiny_cfg, k) for k in ("d_model", "n_layers", "n_heads", "d_ff", "max_len")}
    train_cfg = {"steps": 4, "lr": 3e-3, "batch_size": 4, "seq_len": 32, "warmup": 1}
    era = {"layers": [1], "extra": 8, "finetune_steps": 0, "steps_factor": 1.5}
    pretrain_routed(tiny_data, tmp_path / "routed", model, train_cfg, era)
    net, rec = load_routed(tmp_path / "routed")
    assert rec["trained_tokens"] == 6 * 4 * 32 and rec["routed_tokens"] > 0
    forget = sum(r["forget"] for r in read_jsonl(tiny_data / "train.jsonl"))
    assert rec["labeled_examples"] == forget  # labeled_fraction 1: every forget example, no retain one
    assert not (tmp_path / "routed" / "config.json").exists()  # not mistaken for a standard checkpoint
    ablate(tmp_path / "routed", retain_file(tiny_data, tmp_path), tmp_path / "era", era)
    ablated, rec2 = load_checkpoint(tmp_path / "era")
    assert rec2["stage"] == "ablate" and rec2["lineage_flops"] == rec["flops"]
    x, _ = batch(tiny_cfg)
    with torch.no_grad():
        torch.testing.assert_close(ablated(x), net.ablate()(x))
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "era")).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ablated(x), rtol=1e-4, atol=1e-4)
    assert json.loads((tmp_path / "era" / "config.json").read_text())["intermediate_size"] == tiny_cfg.d_ff


def test_ablate_finetune_trains_on_retain_data(tiny_data, tiny_cfg, tmp_path):
    """With finetune steps the ablated model changes and its record counts the finetune tokens."""
    model = {k: getattr(tiny_cfg, k) for k in ("d_model", "n_layers", "n_heads", "d_ff", "max_len")}
    era = {"layers": [0], "extra": 8, "finetune_steps": 3}
    pretrain_routed(tiny_data, tmp_path / "routed", model, {"steps": 2, "lr": 3e-3, "batch_size": 4, "seq_len": 32},
                    era)
    ablate(tmp_path / "routed", retain_file(tiny_data, tmp_path), tmp_path / "era", era)
    ablated, rec = load_checkpoint(tmp_path / "era")
    start = load_routed(tmp_path / "routed")[0].ablate()
    assert rec["steps"] == 3 and rec["trained_tokens"] == 3 * 32 * 64
    assert not torch.equal(ablated.lm_head.weight, start.lm_head.weight)


def test_pretrain_routed_killed_mid_run_resumes_bit_identically(tiny_data, tiny_cfg, tmp_path, monkeypatch):
    """A crash in step 8 (state saved after step 5, strengths of the pending tokens included); the rerun
    resumes there and writes the same weights and record as an uninterrupted run."""
    model = {k: getattr(tiny_cfg, k) for k in ("d_model", "n_layers", "n_heads", "d_ff", "max_len")}
    train_cfg = {"steps": 10, "lr": 3e-3, "batch_size": 4, "seq_len": 32, "save_every": 5}
    era = {"layers": [0], "extra": 8}

    def run(out):
        pretrain_routed(tiny_data, out, model, train_cfg, era)

    run(tmp_path / "ref")
    calls = []

    def crashing(*args):
        calls.append(1)
        if len(calls) == 8:
            raise RuntimeError("killed")
        return route_weights(*args)

    with monkeypatch.context() as m:
        m.setattr(era_stages, "route_weights", crashing)
        with pytest.raises(RuntimeError, match="killed"):
            run(tmp_path / "killed")
    assert torch.load(tmp_path / "killed" / "resume.pt", weights_only=True)["step"] == 5
    run(tmp_path / "killed")
    ref, got = load_routed(tmp_path / "ref"), load_routed(tmp_path / "killed")
    for k, v in ref[0].state_dict().items():
        assert torch.equal(v, got[0].state_dict()[k]), k
    assert ref[1] == got[1] and not (tmp_path / "killed" / "resume.pt").exists()
