"""Failures injected into real stages and a real Snakemake run: NaN/inf losses and weights stop a stage
naming stage, step and loss and write no checkpoint; a pretraining job killed with SIGKILL after its
first resume save is rerun by Snakemake (--rerun-incomplete), resumes, and ends with the same weights
and metrics as an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from pipeline_py.checkpoint import make_record, save_checkpoint
from pipeline_py.config import Attack, Distill, Runtime
from pipeline_py.model import ModelConfig, build_model
from pipeline_py.resume import RESUME_NAME
from pipeline_py.stages import attack as attack_stage
from pipeline_py.stages import distill as distill_stage
from pipeline_py.stages.pretrain import pretrain
from pipeline_py.study import init_name
from pipeline_py.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
MODEL = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 64}
RUNTIME = Runtime(precision="fp32", device="cpu")


# ------------------------------------------------------------------------------- numerical guards


def test_divergent_lr_stops_pretraining_without_a_checkpoint(tiny_data, tmp_path):
    """lr = 1e12 blows the weights up; the loss turns NaN at step 2 and the stage stops naming itself, the
    step and the loss; the output directory holds no model.safetensors (and no resume state of NaNs)."""
    out = tmp_path / "diverged"
    with pytest.raises(FloatingPointError, match=r"^pretrain: loss is nan at step 2"):
        pretrain(str(tiny_data / "train.jsonl"), str(tiny_data / "tokenizer.json"), str(out), ModelConfig(**MODEL),
                 TrainConfig(steps=30, lr=1e12, batch_size=4, seq_len=32, save_every=1), RUNTIME, seed=0)
    torch.set_num_threads(1)
    assert not (out / "model.safetensors").exists()
    state = torch.load(out / RESUME_NAME, weights_only=True)  # the last good state, after step 1
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_forced_nan_in_distillation_stops_at_that_step(tiny_data, tiny_cfg, tmp_path, monkeypatch):
    """The distillation loss forced to NaN at step 6 stops the stage at step 6; no checkpoint is written and
    the resume state stays at the last good save (step 4)."""
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    for path, seed in ((teacher, 0), (student, 1)):
        m = build_model(tiny_cfg, seed)
        save_checkpoint(m, tiny_data, path, make_record("test", m, None, 0))
    real, calls = distill_stage.forward_kl, []

    def nan_at_6(*a, **k):
        calls.append(1)
        value = real(*a, **k)
        return value * float("nan") if len(calls) == 6 else value

    monkeypatch.setattr(distill_stage, "forward_kl", nan_at_6)
    out = tmp_path / "out"
    with pytest.raises(FloatingPointError, match=r"^distill: loss is nan at step 6"):
        distill_stage.distill(str(teacher), str(student), str(tiny_data / "train.jsonl"),
                              str(tiny_data / "eval.jsonl"), str(out),
                              Distill(steps=10, lr=1e-3, batch_size=2, seq_len=16, save_every=4, stop_within=None,
                                      check_every=50), RUNTIME, seed=0)
    torch.set_num_threads(1)
    assert not (out / "model.safetensors").exists()
    assert torch.load(out / RESUME_NAME, weights_only=True)["step"] == 4


def test_inf_weight_with_a_finite_loss_stops_training():
    """A weight that turns inf while the loss of that step is still finite stops training after that step,
    naming the parameter, the step and the loss."""
    lin = nn.Linear(3, 2)
    calls = []

    def loss():
        calls.append(1)
        value = (lin(torch.ones(1, 3)) ** 2).sum()
        if len(calls) == 4:
            lin.weight.data[0, 0] = float("inf")  # corrupted after the forward pass
        return value

    with pytest.raises(FloatingPointError, match=r"^unlearn\[npo\]: weight weight is NaN or inf after step 4 \(loss "):
        train(lin, loss, TrainConfig(steps=10, lr=1e-3), "unlearn[npo]", "fp32")
    assert len(calls) == 4


# ---------------------------------------------------------------------------------- determinism


def test_attack_stage_twice_gives_identical_metrics(tiny_cfg, tiny_data, tmp_path):
    """The relearn stage (one family: every LR x attack seed, training plus evaluation every 3 steps) run twice
    writes the same curves, value for value; another attack seed changes a run (so the comparison can fail);
    every run starts from the model's own weights: a run alone equals the same run among others; the study
    seed changes the draws too (seeds sharing one pretrained model are attacked differently)."""
    model = build_model(tiny_cfg, 0)
    save_checkpoint(model, tiny_data, tmp_path / "m", {})
    cfg = Attack(lrs=[3e-3, 1e-2], families=["forget"], seeds=[0, 1], steps=6, eval_every=3, batch_size=4,
                 seq_len=32)
    curves = []
    only = Attack.from_dict({**cfg.to_dict(), "lrs": [1e-2], "seeds": [1]})
    for run, c, seed in (("a", cfg, 0), ("b", cfg, 0), ("c", only, 0), ("d", only, 1)):
        attack_stage.relearn(str(tmp_path / "m"), str(tiny_data / "attack.jsonl"), str(tiny_data / "train.jsonl"),
                             str(tiny_data / "eval.jsonl"), str(tmp_path / f"{run}.csv"), c, family="forget",
                             runtime=RUNTIME, seed=seed)
        curves.append(pd.read_csv(tmp_path / f"{run}.csv"))
    torch.set_num_threads(1)
    a = curves[0]
    assert list(a.columns) == ["step", "metric", "value", "lr", "seed", "data"] and set(a.data) == {"forget"}
    runs = a.groupby(["lr", "seed"]).step.apply(lambda x: sorted(set(x))).to_dict()
    assert runs == {(lr, seed): [0, 3, 6] for lr in (3e-3, 1e-2) for seed in (0, 1)}
    pd.testing.assert_frame_equal(curves[0], curves[1], check_exact=True)
    run = lambda df, lr, seed: df[(df.lr == lr) & (df.seed == seed)].reset_index(drop=True)
    assert not run(a, 3e-3, 0).value.equals(run(a, 3e-3, 1).value)  # the attack seed matters
    assert not run(a, 3e-3, 0).value.equals(run(a, 1e-2, 0).value)  # so does the LR
    step0 = a[a.step == 0].groupby(["lr", "seed"]).value.apply(tuple)
    assert len(set(step0)) == 1  # every run starts from the same weights
    pd.testing.assert_frame_equal(run(curves[2], 1e-2, 1), run(a, 1e-2, 1), check_exact=True)  # nothing carried over
    assert not run(curves[3], 1e-2, 1).value.equals(run(a, 1e-2, 1).value)  # the study seed matters


def test_quantize_stage_writes_one_step_zero_run_per_bit_width(tiny_cfg, tiny_data, tmp_path):
    """The quantization attack: data 'quant8' / 'quant4', step 0, lr 0, seed 0, the setting's metrics; int8
    barely moves the model's metrics; twice gives the same values."""
    model = build_model(tiny_cfg, 0)
    save_checkpoint(model, tiny_data, tmp_path / "m", {})
    cfg = Attack(lrs=[3e-3], families=["quant"], seeds=[0], steps=6, eval_every=3)
    for run in ("a", "b"):
        attack_stage.quantize(str(tmp_path / "m"), str(tiny_data / "eval.jsonl"), str(tmp_path / f"{run}.csv"), cfg,
                              RUNTIME)
    q = pd.read_csv(tmp_path / "a.csv")
    pd.testing.assert_frame_equal(q, pd.read_csv(tmp_path / "b.csv"), check_exact=True)
    assert list(q.columns) == ["step", "metric", "value", "lr", "seed", "data"]
    assert list(dict.fromkeys(q.data)) == ["quant8", "quant4"]
    assert set(q.step) == {0} and set(q.lr) == {0.0} and set(q.seed) == {0}
    attack_stage.evaluate(str(tmp_path / "m"), str(tiny_data / "eval.jsonl"), str(tmp_path / "eval.csv"), "m",
                          RUNTIME)
    ev = pd.read_csv(tmp_path / "eval.csv").set_index("metric").value
    by = q.pivot_table(index="metric", columns="data", values="value")
    assert set(by.index) == set(ev.index) and {"acc_forget", "acc_retain", "ce_forget", "ce_retain"} <= set(by.index)
    for metric in ("ce_forget", "ce_retain"):
        assert by.loc[metric, "quant8"] == pytest.approx(ev[metric], rel=0.02), metric
        assert by.loc[metric, "quant4"] != ev[metric], metric  # 4 bits move the weights


# ----------------------------------------------------------------------------- atomic outputs


class Killed(BaseException):
    """Stands in for a kill between two file operations (not an Exception: nothing may catch it)."""


def interrupt_nth_replace(monkeypatch, n: int) -> None:
    """Make the renames of `pipeline_py.atomic` (every output file's last step) raise Killed on the n-th
    call (0-based); earlier calls go through."""
    from pipeline_py import atomic

    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == n + 1:
            raise Killed(str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)


def test_atomic_helpers_leave_nothing_at_the_final_path_on_error(tmp_path, monkeypatch):
    """An error inside either helper's block leaves neither the output nor a temporary; on success
    atomic_dir moves its `last` file after all the others (and clears a killed save's leftovers)."""
    from pipeline_py.atomic import atomic_dir, atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a" / "table.csv") as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("failed mid-write")
    assert os.listdir(tmp_path / "a") == []
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d", last="weights") as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("failed mid-write")
    assert os.listdir(tmp_path / "d") == []
    (tmp_path / "d" / ".tmp-stale").mkdir()  # what a SIGKILL (no `finally`) would leave
    moved, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: moved.append(Path(dst).name) or real(src, dst))
    with atomic_dir(tmp_path / "d", last="weights") as tmp:
        for name in ("weights", "b", "a"):
            (tmp / name).write_text(name)
    assert sorted(os.listdir(tmp_path / "d")) == ["a", "b", "weights"] and moved[-1] == "weights"


def test_checkpoint_interrupted_at_any_file_is_never_taken_for_complete(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    """A save interrupted before each of its renames leaves no model.safetensors, so neither Snakemake (the
    rule's output) nor load_checkpoint takes it for a checkpoint; the next save removes the leftovers."""
    from pipeline_py.checkpoint import load_checkpoint

    model = build_model(tiny_cfg, 0)
    save_checkpoint(model, tiny_data, tmp_path / "ref", {})
    n_files = len(os.listdir(tmp_path / "ref"))
    for n in range(n_files):
        out = tmp_path / f"cut{n}"
        with monkeypatch.context() as m:
            interrupt_nth_replace(m, n)
            with pytest.raises(Killed):
                save_checkpoint(model, tiny_data, out, {})
        assert not (out / "model.safetensors").exists(), n
        with pytest.raises(FileNotFoundError, match="incomplete checkpoint"):
            load_checkpoint(out)
        (out / ".ckpt-stale").mkdir()  # what a SIGKILL (no `finally`) would leave
        save_checkpoint(model, tiny_data, out, {})
        assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "ref")), n


def test_tokenizer_interrupted_mid_save_leaves_no_tokenizer_json(tmp_path, monkeypatch):
    from pipeline_py import tokenizer

    with monkeypatch.context() as m:
        interrupt_nth_replace(m, 1)
        with pytest.raises(Killed):
            tokenizer.save_tokenizer(tokenizer.build_tokenizer(), tmp_path)
    assert not (tmp_path / "tokenizer.json").exists()
    tokenizer.save_tokenizer(tokenizer.build_tokenizer(), tmp_path)
    assert tokenizer.load_tokenizer(tmp_path).get_vocab_size() > 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_stage_given_a_truncated_checkpoint_names_the_file(tiny_cfg, tiny_data, tmp_path):
    """A downstream stage (noise) reading a checkpoint whose weights were cut short fails naming the file,
    and writes nothing."""
    model = build_model(tiny_cfg, 0)
    save_checkpoint(model, tiny_data, tmp_path / "teacher", {})
    weights = tmp_path / "teacher" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=f"corrupt checkpoint weights {weights}"):
        distill_stage.noise(str(tmp_path / "teacher"), str(tmp_path / "noised"), init_name(0.5, 0.1), seed=0)
    assert not (tmp_path / "noised").exists()


def test_truncated_data_file_names_file_and_line(tiny_data, tmp_path):
    from pipeline_py.batches import read_jsonl

    text = (tiny_data / "train.jsonl").read_text()
    cut = tmp_path / "train.jsonl"
    cut.write_text(text[: len(text) // 2])  # most likely mid-line; make sure
    if text[len(text) // 2 - 1] == "\n":
        cut.write_text(text[: len(text) // 2 + 3])
    n_lines = cut.read_text().count("\n") + 1
    with pytest.raises(ValueError, match=f"corrupt data file {cut}, line {n_lines}"):
        read_jsonl(cut)


# ------------------------------------------------------------------- SIGKILL, then rerun by Snakemake

KILL_CONFIG = {"pretrain": {"steps": 150, "save_every": 10}}  # layered over configs/tiny.yaml


def snakemake(workdir: Path, target: str, *extra: str, config: Path, results: Path, **popen) -> subprocess.Popen:
    """`snakemake TARGET` of the tiny study in its own working directory (its own .snakemake/ and locks)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", target, *extra, "--configfile", str(REPO / "config.yaml"), str(REPO / "configs" / "tiny.yaml"),
           str(config), "--config", f"results={results}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def finish(p: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-8000:]
    return out


@pytest.mark.e2e
def test_sigkilled_pretraining_reruns_to_the_same_result(tmp_path):
    config = tmp_path / "kill.yaml"
    config.write_text(yaml.safe_dump(KILL_CONFIG))
    runs = {}
    for name in ("ref", "killed"):
        (tmp_path / name).mkdir()
        results = tmp_path / name / "results"
        target = str(results / "arithmetic" / "seed0" / "models" / "base" / "model.safetensors")
        runs[name] = (results, target)
    ref_results, ref_target = runs["ref"]
    results, target = runs["killed"]
    base = Path(target).parent
    ref = snakemake(tmp_path / "ref", ref_target, config=config, results=ref_results)
    victim = snakemake(tmp_path / "killed", target, config=config, results=results, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (base / RESUME_NAME).exists():  # the first resume save (atomic: complete once visible)
            assert victim.poll() is None, f"the run ended before its first resume save:\n{victim.stdout.read()}"
            assert time.time() < deadline, "no resume state within 300 s"
            time.sleep(0.02)
        os.killpg(victim.pid, signal.SIGKILL)  # snakemake and its job, at once
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert not (base / "model.safetensors").exists(), "the job finished before the kill: nothing was tested"
    killed_at = torch.load(base / RESUME_NAME, weights_only=True)["step"]
    assert 10 <= killed_at < 150

    finish(snakemake(tmp_path / "killed", target, "--unlock", config=config, results=results))  # lock of the killed run
    finish(snakemake(tmp_path / "killed", target, "--rerun-incomplete", config=config, results=results))
    finish(ref)
    log = (results / "arithmetic" / "seed0" / "logs" / "pretrain.log").read_text()
    assert "resumed from" in log and f"at step {killed_at}" in log, log
    assert not (base / RESUME_NAME).exists()
    assert not [p.name for p in base.iterdir() if p.name.startswith(".")], "temporary files left behind"

    ref_base = Path(ref_target).parent
    a, b = load_file(base / "model.safetensors"), load_file(ref_base / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rec, ref_rec = (json.loads((d / "record.json").read_text()) for d in (base, ref_base))
    assert rec.pop("data") != ref_rec.pop("data") and rec == ref_rec  # same tokens and FLOPs; own data paths
    metrics = []
    for d in (base, ref_base):  # the evaluate stage's metrics before any attack
        attack_stage.evaluate(str(d), str(d.parents[1] / "data" / "eval.jsonl"), str(d / "eval.csv"), "base", RUNTIME)
        metrics.append(pd.read_csv(d / "eval.csv"))
    torch.set_num_threads(1)
    pd.testing.assert_frame_equal(metrics[0], metrics[1], check_exact=True)
    assert set(metrics[0].metric) >= {"acc_forget", "acc_retain"}
