"""The benchmark's FLOP count by hand, and a smoke run of the benchmark at the tiny size."""
from __future__ import annotations

import json

import pytest

from pipeline_py import bench, clock
from pipeline_py.model import ModelConfig


def test_flops_per_token_by_hand():
    cfg = ModelConfig(vocab_size=10, d_model=4, n_layers=1, n_heads=1, d_ff=8, max_len=8)
    # matmul parameters: 4·4² (q, k, v, o) + 3·4·8 (gate, up, down) + 4·10 (lm_head) = 200; attention L·D·T = 12
    assert bench.flops_per_token(cfg, seq_len=3, train_step=True) == 6 * 200 + 12 * 12
    assert bench.flops_per_token(cfg, seq_len=3, train_step=False) == 2 * 200 + 4 * 12


def test_matmul_peak_is_a_rate():
    import torch

    peak = bench.matmul_peak(torch.float32, torch.device("cpu"), n=64, min_time=0.05)
    assert 1e6 < peak < 1e14  # between a MFLOP/s and 100 TFLOP/s on any CPU


def test_bench_smoke_writes_every_row(tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--sizes", "tiny", "--steps", "2", "--threads", "1", "--no-e2e", "--out", str(out)])
    res = json.loads(out.read_text())
    rows = {(r["size"], r["stage"], r["precision"]) for r in res["rows"]}
    assert {("tiny", k, "fp32") for k in ("pretrain", "distill", "relearn")} <= rows
    for r in res["rows"]:
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"]
        assert r["model_flops_per_s"] == pytest.approx(r["tokens_per_s"] * bench.flops_per_token(
            ModelConfig(**r["model"]), r["seq_len"], True) * (1 + (r["stage"] == "distill") / 3), rel=1e-9)  # a frozen forward is exactly 1/3 of a training step



def test_students_sharing_a_teacher_are_timed_per_student():
    """Three students on one teacher forward: per student, a training step plus a third of a frozen forward."""
    import torch

    size = bench.sizes()["tiny"]
    r = bench.time_step("distill", size, "fp32", torch.device("cpu"), steps=2, students=3)
    per_token = r["model_flops_per_s"] / r["tokens_per_s"]
    assert per_token == pytest.approx(bench.flops_per_token(size.model, size.seq_len, True)
                                      + bench.flops_per_token(size.model, size.seq_len, False) / 3, rel=1e-9)
    assert r["tokens_per_s"] == pytest.approx(2 * size.batch_size * size.seq_len / r["seconds"], rel=1e-9)


# ---- --breakdown: the study's own clock, on a fixture of fake benchmark TSVs and logs ----------------------

TSV_HEAD = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _tsv(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TSV_HEAD + f"{seconds}\t0:00:00\t1\t1\t1\t1\t0\t0\t50\t1\n")


def _log(path, span_ms):
    """A job log whose first and last timestamped lines are span_ms apart (untimestamped lines between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    end = 5000 + span_ms
    path.write_text(f"2026-01-01 00:00:05,000 INFO x starts\nTraceback-like line without a stamp\n"
                    f"2026-01-01 00:00:{end // 1000:02d},{end % 1000:03d} INFO x done\n")


@pytest.fixture
def fake_run(tmp_path):
    s = tmp_path / "arithmetic" / "seed0"
    for name, sec in [("pretrain", 10.0), ("unlearn_maxent", 4.0), ("unlearn_npo", 6.0),
                      ("distill_base_maxent_fresh", 8.0), ("pretrain_routed", 12.0), ("ablate", 3.0)]:
        _tsv(s / "benchmarks" / f"{name}.tsv", sec)
    _tsv(s / "benchmarks" / "relearn" / "base" / "maxent" / "mix.tsv", 7.0)  # nested, as the attack rule writes
    _log(s / "logs" / "pretrain.log", 3000)  # has a TSV: the TSV wins (overhead 10 - 3 s)
    _log(s / "logs" / "make_data.log", 2000)
    _log(s / "logs" / "noise_base_maxent_fresh.log", 500)
    _log(s / "logs" / "relearn" / "base" / "maxent" / "forget.log", 5000)  # a family: every LR x attack seed
    _log(s / "logs" / "evaluate" / "base.log", 1000)
    (s / "logs" / "filter_data.log").write_text("2026-01-01 00:00:05,000 INFO only one stamp\n")  # no span
    _log(tmp_path / "arithmetic" / "logs" / "summarize.log", 1000)
    _log(tmp_path / "arithmetic" / "logs" / "pareto_plot.log", 500)
    return tmp_path


def test_breakdown_by_hand(fake_run):
    """Start-up 1 s per job. Walls: TSV jobs as written (10, 4, 6, 8, 12, 3, and the nested relearn mix 7); log
    jobs span + 1 s: make_data 3, noise 1.5, relearn forget 6, evaluate 2, summarize 2, pareto_plot 1.5; total
    66 s over 13 jobs."""
    b = clock.breakdown(fake_run, startup=1.0, cores=2)
    assert b["jobs"] == 13 and b["from_benchmarks"] == 7
    assert b["observed_overhead_jobs"] == 1 and b["observed_overhead"] == pytest.approx(7.0)  # pretrain
    assert b["total_seconds"] == pytest.approx(66.0)
    expected = {"pretrain": (20.0, 2), "unlearn": (10.0, 3), "distill": (7.5, 2), "data": (2.0, 1),
                "attack": (11.0, 2), "evaluation": (1.0, 1), "report": (1.5, 2), "start-up": (13.0, 13),
                "other": (0.0, 0)}
    for cls, (sec, n) in expected.items():
        assert b["classes"][cls]["seconds"] == pytest.approx(sec), cls
        assert b["classes"][cls]["jobs"] == n, cls
        assert b["classes"][cls]["share"] == pytest.approx(sec / 66.0), cls
    # chain: make_data 3 + max(pretrain 10, pretrain_routed 12 + ablate 3) + max unlearn 6 + noise 1.5 + distill 8
    #        + max(relearn 6 and 7, evaluate 2) + report 2 + 1.5 = 44; total / 2 = 33
    assert b["longest_chain"] == pytest.approx({"data": 3.0, "pretrain": 15.0, "unlearn": 6.0, "noise": 1.5,
                                                "distill": 8.0, "attack": 7.0, "report": 3.5})
    assert b["longest_chain_seconds"] == pytest.approx(44.0)
    assert b["per_core_seconds"] == pytest.approx(33.0) and b["lower_bound_seconds"] == pytest.approx(44.0)
    # observed: the 7 logs with two stamps run from 00:00:04 (their 00:00:05 less 1 s of start-up) to 00:00:10;
    # after 00:00:08 only relearn/forget runs, so one of 2 cores idles for 2 s
    assert b["observed_span_seconds"] == pytest.approx(6.0) and b["idle_core_seconds"] == pytest.approx(2.0)
    text = clock.format_breakdown(b)
    assert "critical path on 2 cores" in text and "44.0" in text and "2.0 core-seconds idle" in text


def test_idle_core_seconds_by_hand():
    # one core busy 0-10 s, the other 2-4 and 6-10: idle 2 + 2 core-seconds on 2 cores, 3 x 10 - 18 on 3
    ran = [(0.0, 10.0), (2.0, 4.0), (6.0, 10.0)]
    assert clock.idle_core_seconds(ran, 2) == pytest.approx(4.0)
    assert clock.idle_core_seconds(ran, 3) == pytest.approx(14.0)


def test_breakdown_cli_writes_json(fake_run, tmp_path, capsys):
    out = tmp_path / "b.json"
    bench.main(["--breakdown", str(fake_run), "--startup", "1.0", "--out", str(out)])
    assert json.loads(out.read_text())["total_seconds"] == pytest.approx(66.0)
    assert "pretrain" in capsys.readouterr().out


def test_stage_classes_of_rule_names():
    assert [clock.stage_class(n) for n in ("pretrain_oracle", "match_oracle_fresh", "oracle_fresh_init",
                                           "distill_routed_era_a0.5_b0.1", "relearn/oracle/mix",
                                           "relearn/base/maxent/quant", "evaluate/base/npo", "filter_data",
                                           "pareto_plot", "ablate")] == \
        ["pretrain", "distill", "distill", "distill", "attack", "attack", "evaluation", "data", "report", "unlearn"]


# ---- bench/undo_reference.py: the UNDO-style loop runs and computes the same losses -------------------------

def test_undo_reference_runs_at_the_tiny_size():
    import math

    import torch

    from pipeline_py.losses import forward_kl
    from pipeline_py.model import build_model, n_params

    ref = bench.load_reference()
    cfg = ModelConfig(vocab_size=30, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=16)
    student, teacher = ref.build_reference(cfg, 0), ref.build_reference(cfg, 1)
    assert n_params(student) == n_params(build_model(cfg, 0))  # the same model size as the pipeline's
    assert student.config._attn_implementation == "eager" and student.dtype == torch.float32
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 30, (4, 16), generator=g) for _ in range(3)]
    for losses in (ref.pretrain_steps(student, batches, 2), ref.distill_steps(student, teacher, batches, 2)):
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    losses, curve = ref.relearn_run(student, batches, batches[:1], 6)
    assert len(losses) == 6 and [s for s, _ in curve] == [0, 5, 6] and all(math.isfinite(v) for _, v in curve)
    s, t = torch.randn(2, 5, 30), torch.randn(2, 5, 30)  # the reference's KL is the pipeline's on the same positions
    assert ref.kl_loss(s[:, :-1], t[:, :-1]).item() == pytest.approx(
        forward_kl(s, t, torch.zeros(2, 5, dtype=torch.long)).item(), rel=1e-5)
