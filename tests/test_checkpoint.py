"""Checkpoints (pipeline_py.checkpoint): Hugging Face compatibility, exact round trips, clear errors, FLOPs."""
from __future__ import annotations

import json

import pytest
import torch

from pipeline_py.config import Distill, Runtime
from pipeline_py.checkpoint import load_checkpoint, make_record, save_checkpoint
from pipeline_py.model import CausalLM, ModelConfig, build_model
from pipeline_py.stages.distill import distill, noise
from pipeline_py.stages.pretrain import pretrain
from pipeline_py.study import init_name
from pipeline_py.train import TrainConfig


def spread_weights(model: CausalLM, seed: int = 0) -> CausalLM:
    """Give every weight O(1) spread (norm gains too), so that logits are large and varied and any
    difference between two implementations shows up well above float rounding."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return model


@pytest.fixture
def model(tiny_cfg):
    return spread_weights(build_model(tiny_cfg, seed=0))


@pytest.fixture
def saved(model, tiny_data, tmp_path):
    out = tmp_path / "ckpt"
    save_checkpoint(model, tiny_data, out, make_record("test", model, None, 100))
    return out


def test_checkpoint_directory_layout(saved):
    names = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "record.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary leftovers


def test_hf_from_pretrained_gives_the_same_logits(model, saved):
    """AutoModelForCausalLM.from_pretrained(dir) is the same function as pipeline_py's CausalLM."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(saved)).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    x = torch.randint(0, model.cfg.vocab_size, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.eval()(x)
        theirs = hf(input_ids=x).logits
    assert ours.shape == theirs.shape == (3, 40, model.cfg.vocab_size)
    assert ours.abs().max() > 1.0  # logits far from zero: the comparison is not vacuous
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_hf_autotokenizer_loads_from_checkpoint(saved):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(saved))
    assert tok.decode(tok.encode("3*4=12", add_special_tokens=False)) == "3*4=12"


def test_load_checkpoint_round_trips_bit_identically(model, saved):
    loaded, record = load_checkpoint(saved)
    assert loaded.cfg == model.cfg
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    assert record["stage"] == "test" and not loaded.training


def test_truncated_weights_raise_value_error_naming_the_file(saved):
    f = saved / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        load_checkpoint(saved)


def test_garbage_header_raises_value_error(saved):
    (saved / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_checkpoint(saved)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_missing_file_raises_file_not_found_naming_it(saved, name):
    (saved / name).unlink()
    with pytest.raises(FileNotFoundError, match=name):
        load_checkpoint(saved)


def test_config_that_mismatches_the_weights_raises(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["hidden_size"], cfg["intermediate_size"] = 64, 128
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match"):
        load_checkpoint(saved)


def test_config_with_a_missing_key_raises_value_error(saved):
    cfg = json.loads((saved / "config.json").read_text())
    del cfg["num_hidden_layers"]
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json"):
        load_checkpoint(saved)


def test_nan_parameter_refuses_to_save(model, tiny_data, tmp_path):
    """A NaN weight raises FloatingPointError naming the parameter and writes no model.safetensors."""
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    out = tmp_path / "nan_ckpt"
    with pytest.raises(FloatingPointError, match="up_proj"):
        save_checkpoint(model, tiny_data, out, {})
    assert not (out / "model.safetensors").exists()


def test_nan_save_keeps_an_existing_checkpoint_intact(model, saved, tiny_data):
    before = (saved / "model.safetensors").read_bytes()
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError):
        save_checkpoint(model, tiny_data, saved, {})
    assert (saved / "model.safetensors").read_bytes() == before


def hand_n_params(cfg) -> int:
    """Embedding + per block (q, k, v, o; gate, up, down; two norms) + final norm + lm_head."""
    V, D, F, L = cfg.vocab_size, cfg.d_model, cfg.d_ff, cfg.n_layers
    return V * D + L * (4 * D * D + 3 * D * F + 2 * D) + D + D * V


def test_make_record_flops(model):
    n = hand_n_params(model.cfg)
    rec = make_record("distill", model, {"lineage_flops": 1234}, trained_tokens=100, frozen_tokens=40, extra=1)
    assert rec["n_params"] == n
    assert rec["flops"] == 6 * n * 100 + 2 * n * 40
    assert rec["lineage_flops"] == 6 * n * 100 + 2 * n * 40 + 1234
    assert rec["extra"] == 1
    assert make_record("pretrain", model, None, 10)["lineage_flops"] == 6 * n * 10


def test_pretrain_record_json_flops(tiny_data, tiny_cfg, tmp_path):
    """A 3-step pretrain of 2 x 16 tokens: record.json says 96 trained tokens and 6·N·96 FLOPs; the
    checkpoint loads back."""
    out = tmp_path / "base"
    model_kw = {k: getattr(tiny_cfg, k) for k in ("d_model", "n_layers", "n_heads", "d_ff", "max_len")}
    pretrain(str(tiny_data / "train.jsonl"), str(tiny_data / "tokenizer.json"), str(out), ModelConfig(**model_kw),
             TrainConfig(steps=3, lr=1e-3, batch_size=2, seq_len=16), Runtime(precision="fp32", device="cpu"), seed=0)
    torch.set_num_threads(1)  # setup_runtime may have changed it
    rec = json.loads((out / "record.json").read_text())
    n = hand_n_params(tiny_cfg)
    assert rec["trained_tokens"] == 3 * 2 * 16
    assert rec["flops"] == rec["lineage_flops"] == 6 * n * 96
    net, _ = load_checkpoint(out)
    assert net.cfg == tiny_cfg


def test_noise_and_distill_records_chain_flops(tiny_data, tiny_cfg, tmp_path):
    """noise adds no FLOPs to the lineage; distill adds 6·N·t (student) + 2·N·t (frozen teacher)."""
    teacher = tmp_path / "teacher"
    m = build_model(tiny_cfg, seed=0)
    save_checkpoint(m, tiny_data, teacher, make_record("unlearn", m, {"lineage_flops": 1000}, 50))
    n = hand_n_params(tiny_cfg)
    noise(str(teacher), str(tmp_path / "noised"), init_name(0.5, 0.1), seed=0)
    rec_noise = json.loads((tmp_path / "noised" / "record.json").read_text())
    assert rec_noise["flops"] == 0 and rec_noise["lineage_flops"] == 6 * n * 50 + 1000
    distill(str(teacher), str(tmp_path / "noised"), str(tiny_data / "train.jsonl"), str(tiny_data / "eval.jsonl"),
            str(tmp_path / "student"), Distill(steps=2, lr=1e-3, batch_size=2, seq_len=16, stop_within=None,
                                               check_every=10), Runtime(precision="fp32", device="cpu"), seed=0)
    torch.set_num_threads(1)
    rec = json.loads((tmp_path / "student" / "record.json").read_text())
    assert rec["trained_tokens"] == 2 * 2 * 16
    assert rec["frozen_tokens"] == 2 * 2 * 16 + rec["eval_tokens"]  # teacher forwards + retain checks
    assert rec["flops"] == 6 * n * 64 + 2 * n * rec["frozen_tokens"]
    assert rec["lineage_flops"] == rec["flops"] + rec_noise["lineage_flops"]
    assert rec["steps"] == 2


def test_fixed_budget_distillation_records_whether_the_student_matched(tiny_data, tiny_cfg, tmp_path):
    """Oracle matching has no stop rule; with `matched_within` its record says whether the final retain metric
    came within that of the teacher's (a random student falls far short of a teacher trained on the data);
    without it, `recovered` stays None (not flagged, not claimed)."""
    teacher = tmp_path / "teacher"
    pretrain(str(tiny_data / "train.jsonl"), str(tiny_data / "tokenizer.json"), str(teacher), tiny_cfg,
             TrainConfig(steps=150, lr=1e-2, batch_size=8, seq_len=32, warmup=10), Runtime(precision="fp32"), seed=0)
    save_checkpoint(build_model(tiny_cfg, seed=1), tiny_data, tmp_path / "student", {})
    cfg = Distill(steps=2, lr=1e-3, batch_size=2, seq_len=16, stop_within=None, check_every=10)
    recs = {}
    for name, within in (("none", None), ("tight", 0.05), ("loose", 1.0)):
        distill(str(teacher), str(tmp_path / "student"), str(tiny_data / "train.jsonl"), str(tiny_data / "eval.jsonl"),
                str(tmp_path / name), cfg, Runtime(precision="fp32", device="cpu"), seed=0, matched_within=within)
        recs[name] = json.loads((tmp_path / name / "record.json").read_text())
    torch.set_num_threads(1)
    gap = recs["tight"]["teacher_retain"] - recs["tight"]["student_retain"]
    assert gap > 0.05  # the premise: two steps leave the student far below its teacher
    assert recs["none"]["recovered"] is None and recs["tight"]["recovered"] is False
    assert recs["loose"]["recovered"] is True and recs["loose"]["steps"] == 2  # flagged or not, no early stop
