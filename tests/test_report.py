"""Aggregation of attack curves and evaluations (pipeline_py.report) on small hand-made frames."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline_py import study
from pipeline_py.report import describe, load_curves, worst_case


def test_describe_model_ids():
    b = describe("base")
    assert (b["kind"], b["method"]) == ("base", "") and math.isnan(b["alpha"])
    assert describe("base/maxent") == {"kind": "unlearn", "method": "maxent", "alpha": 0.0}
    assert describe("base/maxent/undo_a0.4_b0.1") == {"kind": "undo", "method": "maxent", "alpha": 0.4}
    assert describe("base/graddiff/undo_fresh") == {"kind": "unlearn+distill", "method": "graddiff", "alpha": 1.0}


def curve_rows(model: str, lr: float, aseed: int, step: int, forget: float, retain: float) -> list[dict]:
    return [{"seed": 0, "model": model, "lr": lr, "aseed": aseed, "step": step, "metric": "acc_forget",
             "value": forget},
            {"seed": 0, "model": model, "lr": lr, "aseed": aseed, "step": step, "metric": "acc_retain",
             "value": retain}]


# model m: at step 10, lr 0.1 has one lucky seed (0.8) but averages 0.5; lr 0.2 averages 0.6 -> worst case 0.2
CURVES = pd.DataFrame(
    curve_rows("m", 0.1, 0, 0, 0.1, 0.9) + curve_rows("m", 0.1, 1, 0, 0.1, 0.7)
    + curve_rows("m", 0.2, 0, 0, 0.0, 0.5) + curve_rows("m", 0.2, 1, 0, 0.0, 0.5)
    + curve_rows("m", 0.1, 0, 10, 0.8, 0.4) + curve_rows("m", 0.1, 1, 10, 0.2, 0.4)
    + curve_rows("m", 0.2, 0, 10, 0.6, 0.3) + curve_rows("m", 0.2, 1, 10, 0.6, 0.1))


def test_worst_case_takes_the_lr_with_the_highest_seed_averaged_forget_accuracy():
    wc = worst_case(CURVES).set_index("step")
    assert wc.loc[0, "lr"] == 0.1 and wc.loc[0, "acc_forget"] == pytest.approx(0.1)
    assert wc.loc[0, "acc_retain"] == pytest.approx(0.8)  # that run's retain accuracy, averaged over seeds
    assert wc.loc[10, "lr"] == 0.2 and wc.loc[10, "acc_forget"] == pytest.approx(0.6)
    assert wc.loc[10, "acc_retain"] == pytest.approx(0.2)


def write_curve(root, model: str, seed: int, forget: float) -> str:
    """A one-row attack curve (forget data, lr 0.001, attack seed 0) where the workflow writes it under `root`
    (`<results>/<setting>`)."""
    path = Path(study.curve(str(root), model, "forget", 0.001, 0, seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"step": 0, "metric": "acc_forget", "value": forget, "lr": 0.001, "seed": 0}]).to_csv(path,
                                                                                                        index=False)
    return str(path)


def test_load_curves_reads_seed_and_model_from_the_path(tmp_path):
    p = write_curve(tmp_path / "res/arithmetic", "base/maxent/undo_a0.5_b0.1", 3, 0.25)
    assert p == str(tmp_path / "res/arithmetic/seed3/attack/base/maxent/undo_a0.5_b0.1/forget_lr0.001_s0.csv")
    df = load_curves([p])
    assert df.loc[0, "seed"] == 3 and df.loc[0, "model"] == "base/maxent/undo_a0.5_b0.1"
    assert df.loc[0, "aseed"] == 0 and df.loc[0, "value"] == 0.25
    assert df.loc[0, "data"] == "forget"  # from the file name when the curve has no data column


def test_load_curves_seed_ignores_a_seed_like_results_root(tmp_path):
    p = write_curve(tmp_path / "runs/seed7/arithmetic", "base", 3, 0.5)
    assert load_curves([p]).loc[0, "seed"] == 3


def test_load_curves_model_ignores_an_attack_folder_in_the_results_root(tmp_path):
    p = write_curve(tmp_path / "attack/runs/arithmetic", "base", 0, 0.5)
    assert load_curves([p]).loc[0, "model"] == "base"
