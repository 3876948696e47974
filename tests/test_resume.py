"""Resumable training (pipeline_py.resume): a stage interrupted after a resume save and started again
continues from the saved step and ends with bit-identical weights and records; stale or unreadable
states are discarded; the data stream's position round-trips."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from pipeline_py.batches import PackedStream, read_jsonl
from pipeline_py.checkpoint import make_record, save_checkpoint
from pipeline_py.config import Distill, Runtime
from pipeline_py.model import ModelConfig, build_model
from pipeline_py.resume import RESUME_NAME, Resume, fingerprint
from pipeline_py.stages import distill as distill_stage
from pipeline_py.stages import pretrain as pretrain_stage
from pipeline_py.train import TrainConfig, train

MODEL = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 64}
PRETRAIN = {"steps": 24, "lr": 3e-3, "batch_size": 4, "seq_len": 32, "warmup": 3, "save_every": 5}
RUNTIME = Runtime(precision="fp32", threads=1, device="cpu")
STAGE_OF = {"lm_loss": pretrain_stage, "forward_kl": distill_stage}  # the stage module that calls each helper


class Crash(RuntimeError):
    """Stands in for a killed process: raised from inside the training loop."""


def crash_at(monkeypatch, name: str, call: int) -> None:
    """Make the stage's `name` (a loss helper: lm_loss of pretrain, forward_kl of distill) raise Crash on its
    `call`-th call (1-based)."""
    module = STAGE_OF[name]
    real, calls = getattr(module, name), []

    def wrapped(*a, **k):
        calls.append(1)
        if len(calls) == call:
            raise Crash(f"killed during step {call}")
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapped)


def weights(ckpt) -> dict[str, torch.Tensor]:
    return load_file(ckpt / "model.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def run_pretrain(tiny_data, out, **over):
    pretrain_stage.pretrain(str(tiny_data / "train.jsonl"), str(tiny_data / "tokenizer.json"), str(out),
                            ModelConfig(**MODEL), TrainConfig(**{**PRETRAIN, **over}), RUNTIME, seed=0)
    torch.set_num_threads(1)


def test_packed_stream_state_round_trips(tok, tiny_data):
    """After 3 batches, the saved position (through torch.save, weights_only load) gives the same next
    batches in a new stream, tokens_seen included, and a half-consumed buffer is kept."""
    rows = read_jsonl(tiny_data / "train.jsonl")
    a = PackedStream(tok, rows, batch_size=3, seq_len=40, seed=5)
    for _ in range(3):
        next(a)
    assert a.buffer, "the buffer should hold pending tokens for this to test anything"
    state = a.state_dict()
    expected = [next(a)["input_ids"] for _ in range(4)]
    b = PackedStream(tok, rows, batch_size=3, seq_len=40, seed=999)
    torch.save(state, tiny_data.parent / "stream_state.pt")
    b.load_state_dict(torch.load(tiny_data.parent / "stream_state.pt", weights_only=True))
    assert b.tokens_seen == 3 * 3 * 40
    for want in expected:
        assert torch.equal(next(b)["input_ids"], want)
    assert b.tokens_seen == a.tokens_seen


def test_train_resume_restores_optimizer_and_torch_rng(tmp_path):
    """A loss that draws from torch's RNG, Adam moments and a cosine LR: 12 steps straight equal
    7 steps, a crash, then a fresh model and optimizer resumed from the step-5 state."""
    cfg = TrainConfig(steps=12, lr=1e-2, warmup=2, save_every=5)

    def make():
        torch.manual_seed(0)
        lin = nn.Linear(4, 3)
        return lin, lambda: ((lin(torch.randn(8, 4)) - 1.0) ** 2).mean()

    ref, loss = make()
    train(ref, loss, cfg, "s", "fp32")

    res = Resume(tmp_path / RESUME_NAME, cfg.save_every, fingerprint(run="x"))
    lin, loss = make()
    calls = []

    def crashing():
        calls.append(1)
        if len(calls) == 8:
            raise Crash
        return loss()

    with pytest.raises(Crash):
        train(lin, crashing, cfg, "s", "fp32", resume=res)
    assert torch.load(res.path, weights_only=True)["step"] == 5
    torch.manual_seed(123)  # the restart's RNG differs until the state is restored
    lin2, loss2 = make()
    torch.manual_seed(123)
    assert train(lin2, loss2, cfg, "s", "fp32", resume=res) == 12
    for k, v in ref.state_dict().items():
        assert torch.equal(v, lin2.state_dict()[k]), k


def test_pretrain_killed_mid_run_resumes_bit_identically(tiny_data, tmp_path, monkeypatch, caplog):
    """Crash in step 13 (states saved after steps 5 and 10); the rerun resumes at step 10 and writes the
    same weights and record as an uninterrupted run; the state file is gone afterwards."""
    run_pretrain(tiny_data, tmp_path / "ref")
    assert not (tmp_path / "ref" / RESUME_NAME).exists()

    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        crash_at(m, "lm_loss", 13)
        with pytest.raises(Crash):
            run_pretrain(tiny_data, out)
    assert not (out / "model.safetensors").exists()
    assert torch.load(out / RESUME_NAME, weights_only=True)["step"] == 10

    with caplog.at_level(logging.INFO, logger="pipeline_py"):
        run_pretrain(tiny_data, out)
    assert "at step 10" in caplog.text
    assert_same_weights(weights(tmp_path / "ref"), weights(out))
    assert json.loads((out / "record.json").read_text()) == json.loads((tmp_path / "ref" / "record.json").read_text())
    assert not (out / RESUME_NAME).exists()


def test_state_of_another_config_is_discarded(tiny_data, tmp_path, monkeypatch, caplog):
    """A state left by a run with another LR is not trusted: the rerun starts at step 0 and equals a fresh
    run with the new LR."""
    out = tmp_path / "changed"
    with monkeypatch.context() as m:
        crash_at(m, "lm_loss", 8)
        with pytest.raises(Crash):
            run_pretrain(tiny_data, out, lr=1e-3)
    assert (out / RESUME_NAME).exists()
    with caplog.at_level(logging.INFO, logger="pipeline_py"):
        run_pretrain(tiny_data, out)
    assert "another configuration" in caplog.text and "resumed" not in caplog.text
    run_pretrain(tiny_data, tmp_path / "fresh")
    assert_same_weights(weights(tmp_path / "fresh"), weights(out))


def test_save_cadence_is_not_part_of_the_fingerprint(tiny_data, tmp_path, monkeypatch, caplog):
    """Changing only save_every keeps the saved state usable (it does not change the numbers)."""
    out = tmp_path / "cadence"
    with monkeypatch.context() as m:
        crash_at(m, "lm_loss", 8)
        with pytest.raises(Crash):
            run_pretrain(tiny_data, out)
    with caplog.at_level(logging.INFO, logger="pipeline_py"):
        run_pretrain(tiny_data, out, save_every=7)
    assert "at step 5" in caplog.text


def test_unreadable_state_starts_over_with_a_warning(tiny_data, tmp_path, caplog):
    out = tmp_path / "garbage"
    out.mkdir()
    (out / RESUME_NAME).write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING, logger="pipeline_py"):
        run_pretrain(tiny_data, out)
    assert "unreadable" in caplog.text and str(out / RESUME_NAME) in caplog.text
    run_pretrain(tiny_data, tmp_path / "fresh")
    assert_same_weights(weights(tmp_path / "fresh"), weights(out))


@pytest.fixture
def teacher_student(tiny_data, tiny_cfg, tmp_path):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    for path, seed in ((teacher, 0), (student, 1)):
        m = build_model(tiny_cfg, seed)
        save_checkpoint(m, tiny_data, path, make_record("test", m, None, 0))
    return teacher, student


def run_distill(tiny_data, teacher, student, out, stop_within=None):
    distill_stage.distill(str(teacher), str(student), str(tiny_data / "train.jsonl"), str(tiny_data / "eval.jsonl"),
                          str(out), Distill(steps=16, lr=3e-3, batch_size=4, seq_len=32, warmup=2, save_every=4,
                                            stop_within=stop_within, check_every=6), RUNTIME, seed=0)
    torch.set_num_threads(1)


def test_distill_killed_mid_run_resumes_bit_identically(tiny_data, teacher_student, tmp_path, monkeypatch, caplog):
    """Distillation (teacher forward, retain checks every 6 steps) crashed in step 11 resumes at step 8 and
    ends with the same weights and record as an uninterrupted run."""
    teacher, student = teacher_student
    run_distill(tiny_data, teacher, student, tmp_path / "ref")
    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        crash_at(m, "forward_kl", 11)
        with pytest.raises(Crash):
            run_distill(tiny_data, teacher, student, out)
    assert torch.load(out / RESUME_NAME, weights_only=True)["step"] == 8
    with caplog.at_level(logging.INFO, logger="pipeline_py"):
        run_distill(tiny_data, teacher, student, out)
    assert "at step 8" in caplog.text
    assert_same_weights(weights(tmp_path / "ref"), weights(out))
    rec, ref = (json.loads((d / "record.json").read_text()) for d in (out, tmp_path / "ref"))
    assert rec == ref and rec["steps"] == 16
    assert not (out / RESUME_NAME).exists()


def test_distill_state_is_tied_to_its_student(tiny_data, teacher_student, tiny_cfg, tmp_path, monkeypatch, caplog):
    """A new student checkpoint at the same input path (e.g. another noise seed) invalidates the state."""
    teacher, student = teacher_student
    out = tmp_path / "tied"
    with monkeypatch.context() as m:
        crash_at(m, "forward_kl", 7)
        with pytest.raises(Crash):
            run_distill(tiny_data, teacher, student, out)
    m2 = build_model(tiny_cfg, seed=7)
    save_checkpoint(m2, tiny_data, student, make_record("test", m2, None, 0))
    with caplog.at_level(logging.INFO, logger="pipeline_py"):
        run_distill(tiny_data, teacher, student, out)
    assert "another configuration" in caplog.text and "resumed" not in caplog.text


@pytest.fixture(scope="module")
def teacher_near_fresh(tiny_data, tiny_cfg, tmp_path_factory):
    """A teacher that knows some retain problems, a barely noised copy of it (recovers at its first check) and
    a fresh init (does not recover in a few steps): two students that stop at different steps."""
    root = tmp_path_factory.mktemp("students")
    teacher = root / "teacher"
    pretrain_stage.pretrain(str(tiny_data / "train.jsonl"), str(tiny_data / "tokenizer.json"), str(teacher), tiny_cfg,
                            TrainConfig(steps=150, lr=1e-2, batch_size=8, seq_len=32, warmup=10), RUNTIME, seed=0)
    distill_stage.noise(str(teacher), str(root / "near"), "a0.02_b0.1", seed=0)
    fresh = build_model(tiny_cfg, seed=1)
    save_checkpoint(fresh, tiny_data, root / "fresh", make_record("noise", fresh, None, 0))
    torch.set_num_threads(1)
    return teacher, root / "near", root / "fresh"


def run_students(tiny_data, teacher, students, outs, save_every=0):
    distill_stage.distill(str(teacher), [str(s) for s in students] if isinstance(students, list) else str(students),
                          str(tiny_data / "train.jsonl"), str(tiny_data / "eval.jsonl"),
                          [str(o) for o in outs] if isinstance(outs, list) else str(outs),
                          Distill(steps=8, lr=1e-3, batch_size=2, seq_len=16, warmup=0, save_every=save_every,
                                  stop_within=0.05, check_every=2), RUNTIME, seed=0)
    torch.set_num_threads(1)


def record(ckpt) -> dict:
    return json.loads((ckpt / "record.json").read_text())


def test_students_of_one_teacher_together_equal_each_alone(tiny_data, teacher_near_fresh, tmp_path):
    """Two students distilled in one run (one teacher forward per batch) end bit for bit where each ends alone,
    records included: the near copy stops and is written at its first check (step 2), the fresh init trains
    on to the cap (step 8) and is flagged not recovered."""
    teacher, near, fresh = teacher_near_fresh
    for s in (near, fresh):
        run_students(tiny_data, teacher, s, tmp_path / f"alone_{s.name}")
    run_students(tiny_data, teacher, [near, fresh], [tmp_path / "near", tmp_path / "fresh"])
    for name in ("near", "fresh"):
        assert_same_weights(weights(tmp_path / f"alone_{name}"), weights(tmp_path / name))
        assert record(tmp_path / name) == record(tmp_path / f"alone_{name}")
    assert (record(tmp_path / "near")["steps"], record(tmp_path / "near")["recovered"]) == (2, True)
    assert (record(tmp_path / "fresh")["steps"], record(tmp_path / "fresh")["recovered"]) == (8, False)
    assert record(tmp_path / "near")["trained_tokens"] * 4 == record(tmp_path / "fresh")["trained_tokens"]


def test_students_killed_after_one_stopped_resume_and_rewrite_it(tiny_data, teacher_near_fresh, tmp_path,
                                                                  monkeypatch, caplog):
    """Killed in step 5 (the near copy written at step 2, states saved at steps 2 and 4), with the finished
    student's checkpoint removed as Snakemake removes an incomplete job's outputs: the rerun resumes at step
    4, rewrites that student from the state, and both end as in an uninterrupted run."""
    teacher, near, fresh = teacher_near_fresh
    ref = [tmp_path / "ref_near", tmp_path / "ref_fresh"]
    run_students(tiny_data, teacher, [near, fresh], ref)
    outs = [tmp_path / "near", tmp_path / "fresh"]
    with monkeypatch.context() as m:
        crash_at(m, "forward_kl", 7)  # two calls per step while both train (steps 1-2), one after: step 5
        with pytest.raises(Crash):
            run_students(tiny_data, teacher, [near, fresh], outs, save_every=2)
    assert (outs[0] / "model.safetensors").is_file() and not (outs[1] / "model.safetensors").exists()
    assert torch.load(outs[0] / RESUME_NAME, weights_only=True)["step"] == 4
    (outs[0] / "model.safetensors").unlink()
    with caplog.at_level(logging.INFO, logger="pipeline_py"):
        run_students(tiny_data, teacher, [near, fresh], outs, save_every=2)
    assert "at step 4" in caplog.text
    for out, r in zip(outs, ref):
        assert_same_weights(weights(r), weights(out))
        assert record(out) == record(r)
    assert not (outs[0] / RESUME_NAME).exists()
