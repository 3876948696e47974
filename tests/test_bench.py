"""The benchmark's FLOP count by hand, and a smoke run of the benchmark at the tiny size."""
from __future__ import annotations

import json

import pytest

from pipeline_py import bench
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
