"""Aggregation of attack curves and evaluations (pipeline_py.report) on small hand-made frames."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline_py import study
from pipeline_py.report import (describe, families_markdown, family_intervals, family_table,
                                hold_zero_step_attacks, load_curves, worst_case)


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
    """A one-row attack curve file of the forget family (lr 0.001, attack seed 0, no data column) where the
    workflow writes it under `root` (`<results>/<setting>`)."""
    path = Path(study.curve(str(root), model, "forget", seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"step": 0, "metric": "acc_forget", "value": forget, "lr": 0.001, "seed": 0}]).to_csv(path,
                                                                                                        index=False)
    return str(path)


def test_load_curves_reads_seed_and_model_from_the_path(tmp_path):
    p = write_curve(tmp_path / "res/arithmetic", "base/maxent/undo_a0.5_b0.1", 3, 0.25)
    assert p == str(tmp_path / "res/arithmetic/seed3/attack/base/maxent/undo_a0.5_b0.1/forget.csv")
    df = load_curves([p])
    assert df.loc[0, "seed"] == 3 and df.loc[0, "model"] == "base/maxent/undo_a0.5_b0.1"
    assert df.loc[0, "aseed"] == 0 and df.loc[0, "value"] == 0.25
    assert df.loc[0, "data"] == "forget"  # from the file name when the curve has no data column


def test_load_curves_keeps_every_run_of_a_family_file(tmp_path):
    """A family's file holds every LR x attack seed (relearn) or bit width (quantize); its data column is kept."""
    root = tmp_path / "res/arithmetic"
    mix = Path(study.curve(str(root), "base", "mix", 0))
    mix.parent.mkdir(parents=True)
    pd.DataFrame([{"step": s, "metric": "acc_forget", "value": v, "lr": lr, "seed": a, "data": "mix"}
                  for lr, a, s, v in ((1e-3, 0, 0, 0.1), (1e-3, 0, 5, 0.2), (1e-3, 1, 0, 0.1), (1e-3, 1, 5, 0.3),
                                      (1e-2, 0, 0, 0.1), (1e-2, 0, 5, 0.4))]).to_csv(mix, index=False)
    quant = Path(study.curve(str(root), "base", "quant", 0))
    pd.DataFrame([{"step": 0, "metric": "acc_forget", "value": v, "lr": 0.0, "seed": 0, "data": f"quant{b}"}
                  for b, v in ((8, 0.1), (4, 0.25))]).to_csv(quant, index=False)
    df = load_curves([str(mix), str(quant)])
    assert len(df) == 8 and set(df.model) == {"base"} and set(df.seed) == {0}
    runs = df.groupby(["data", "lr", "aseed"]).step.apply(list).to_dict()
    assert runs == {("mix", 1e-3, 0): [0, 5], ("mix", 1e-3, 1): [0, 5], ("mix", 1e-2, 0): [0, 5],
                    ("quant4", 0.0, 0): [0], ("quant8", 0.0, 0): [0]}


def test_load_curves_seed_ignores_a_seed_like_results_root(tmp_path):
    p = write_curve(tmp_path / "runs/seed7/arithmetic", "base", 3, 0.5)
    assert load_curves([p]).loc[0, "seed"] == 3


def test_load_curves_model_ignores_an_attack_folder_in_the_results_root(tmp_path):
    p = write_curve(tmp_path / "attack/runs/arithmetic", "base", 0, 0.5)
    assert load_curves([p]).loc[0, "model"] == "base"


# ------------------------------------------------------------------ zero-step attacks and attack families


M, N = "base/maxent", "base"  # two models


def run_rows(model: str, data: str, lr: float, aseed: int, step: int, forget: float, retain: float,
             seed: int = 0) -> list[dict]:
    base = {"seed": seed, "model": model, "data": data, "lr": lr, "aseed": aseed, "step": step}
    return [base | {"metric": "acc_forget", "value": forget}, base | {"metric": "acc_retain", "value": retain}]


# model M: a forget run at steps 0/10/20 (forget 0.1, 0.4, 0.7) and two quantization runs (step 0 only):
# quant4 (0.45) beats the run at steps 0 and 10, the run wins at 20; quant8 (0.15) never wins.
# model N evaluates at steps 0 and 5 only: its quant4 run is held at those steps, not at M's.
QUANT = pd.DataFrame(
    run_rows(M, "forget", 0.1, 0, 0, 0.1, 0.9) + run_rows(M, "forget", 0.1, 0, 10, 0.4, 0.8)
    + run_rows(M, "forget", 0.1, 0, 20, 0.7, 0.6)
    + run_rows(M, "quant8", 0.0, 0, 0, 0.15, 0.88) + run_rows(M, "quant4", 0.0, 0, 0, 0.45, 0.7)
    + run_rows(N, "forget", 0.1, 0, 0, 0.2, 0.9) + run_rows(N, "forget", 0.1, 0, 5, 0.3, 0.9)
    + run_rows(N, "quant4", 0.0, 0, 0, 0.5, 0.5))


def test_hold_zero_step_attacks_repeats_a_quantization_run_at_every_step():
    held = hold_zero_step_attacks(QUANT)
    assert len(held) == 2 * (3 + 3 + 3 + 2 + 2)  # m: forget, quant8, quant4 at 0/10/20; n: forget, quant4 at 0/5
    got = held.pivot_table(index=["model", "data", "step"], columns="metric", values="value")
    for step in (0, 10, 20):
        assert tuple(got.loc[(M, "quant4", step)]) == (0.45, 0.7)
        assert tuple(got.loc[(M, "quant8", step)]) == (0.15, 0.88)
    assert sorted(got.loc[(N, "quant4")].index) == [0, 5] and tuple(got.loc[(N, "quant4", 5)]) == (0.5, 0.5)
    forget_run = lambda df: df[df.data == "forget"].sort_values(["model", "step", "metric"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(forget_run(held)[QUANT.columns], forget_run(QUANT))  # trained runs untouched
    assert set(held[held.data.str.startswith("quant")].lr) == {0.0} and set(held.aseed) == {0}
    no_quant = QUANT[~QUANT.data.str.startswith("quant")]
    assert hold_zero_step_attacks(no_quant) is no_quant  # nothing to hold: the frame as it is


def test_a_quantization_run_can_win_the_worst_case_at_every_budget():
    wc = worst_case(QUANT).set_index(["model", "step"])
    assert list(wc.loc[M].index) == [0, 10, 20] and list(wc.loc[N].index) == [0, 5]
    for step in (0, 10):
        assert (wc.loc[(M, step), "data"], wc.loc[(M, step), "lr"]) == ("quant4", 0.0)
        assert wc.loc[(M, step), "acc_forget"] == pytest.approx(0.45)
        assert wc.loc[(M, step), "acc_retain"] == pytest.approx(0.7)
    assert wc.loc[(M, 20), "data"] == "forget" and wc.loc[(M, 20), "acc_forget"] == pytest.approx(0.7)
    assert wc.loc[(M, 20), "acc_retain"] == pytest.approx(0.6)
    assert (wc.loc[(N, 5), "data"], wc.loc[(N, 5), "acc_forget"]) == ("quant4", pytest.approx(0.5))


# model M, seed 0, before the attack: forget 0.1, retain 0.9 (kept: retain >= 0.85 at the last step, 20).
# forget: lr 0.1 ends at forget (0.8 + 0.6)/2 = 0.7, retain 0.5 (dropped); lr 0.01 at 0.3, retain 0.88 (kept);
#   lr 0.01 showed 0.95 at step 10, which the table ignores (last step only)
# mix: lr 0.1 at 0.5, retain 0.86 (kept); lr 0.01 at 0.2, retain 0.9 (kept)
# quant4 (step 0 only, held to step 20): 0.4, retain 0.7 (dropped); quant8: 0.12, retain 0.9 (kept)
# worst = forget's 0.7; worst over kept runs = mix's 0.5 (forget's kept best is only 0.3)
FAMILY_CURVES = pd.DataFrame(
    [r for d in ("forget", "mix") for lr in (0.1, 0.01) for a in (0, 1) for r in run_rows(M, d, lr, a, 0, 0.1, 0.9)]
    + run_rows(M, "forget", 0.1, 0, 20, 0.8, 0.5) + run_rows(M, "forget", 0.1, 1, 20, 0.6, 0.5)
    + run_rows(M, "forget", 0.01, 0, 10, 0.95, 0.9) + run_rows(M, "forget", 0.01, 1, 10, 0.95, 0.9)
    + run_rows(M, "forget", 0.01, 0, 20, 0.3, 0.88) + run_rows(M, "forget", 0.01, 1, 20, 0.3, 0.88)
    + run_rows(M, "mix", 0.1, 0, 20, 0.5, 0.86) + run_rows(M, "mix", 0.1, 1, 20, 0.5, 0.86)
    + run_rows(M, "mix", 0.01, 0, 20, 0.2, 0.9) + run_rows(M, "mix", 0.01, 1, 20, 0.2, 0.9)
    + run_rows(M, "quant4", 0.0, 0, 0, 0.4, 0.7) + run_rows(M, "quant8", 0.0, 0, 0, 0.12, 0.9))
BEFORE = pd.DataFrame({"seed": [0], "model": [M], "acc_forget": [0.1], "acc_retain": [0.9]}).set_index(
    ["seed", "model"])


def test_family_table_takes_the_worst_run_of_each_family_at_the_last_step():
    t = family_table(FAMILY_CURVES, BEFORE, "acc_forget", "acc_retain", higher_is_better=True)
    assert list(t.family) == ["forget", "mix", "quant4", "quant8", "worst", "worst_kept"]
    t = t.set_index("family")
    assert set(t.model) == {M} and set(t.seed) == {0} and set(t.kind) == {"unlearn"} and set(t.method) == {"maxent"}
    assert t.loc["forget", "forget"] == pytest.approx(0.7) and t.loc["forget", "retain"] == pytest.approx(0.5)
    assert t.loc["forget", "forget_kept"] == pytest.approx(0.3)  # the lr 0.1 run lost 0.4 retain: dropped
    assert (t.loc["forget", "runs_kept"], t.loc["forget", "runs"]) == (1, 2)
    assert t.loc["mix", "forget"] == pytest.approx(0.5) and t.loc["mix", "retain"] == pytest.approx(0.86)
    assert t.loc["mix", "forget_kept"] == pytest.approx(0.5) and (t.loc["mix", "runs_kept"], t.loc["mix", "runs"]) == (2, 2)
    assert t.loc["quant4", "forget"] == pytest.approx(0.4) and math.isnan(t.loc["quant4", "forget_kept"])
    assert (t.loc["quant4", "runs_kept"], t.loc["quant4", "runs"]) == (0, 1)
    assert t.loc["quant8", "forget"] == pytest.approx(0.12) and t.loc["quant8", "forget_kept"] == pytest.approx(0.12)
    assert (t.loc["worst", "forget"], t.loc["worst", "decided_by"]) == (pytest.approx(0.7), "forget")
    assert (t.loc["worst_kept", "forget"], t.loc["worst_kept", "decided_by"]) == (pytest.approx(0.5), "mix")
    assert t.decided_by.isna().sum() == 4  # only the two worst rows name a family


def test_family_table_of_a_cross_entropy_takes_the_minimum_and_a_relative_tolerance():
    """Cross-entropies: lower is worse for the defender; a run is kept when its retain CE rose by at most 5 %
    of the model's own (2.0 -> at most 2.1)."""
    ce = pd.DataFrame(run_rows(M, "forget", 0.1, 0, 0, 3.0, 2.0) + run_rows(M, "forget", 0.1, 0, 10, 0.5, 2.2)
                      + run_rows(M, "forget", 0.01, 0, 0, 3.0, 2.0)
                      + run_rows(M, "forget", 0.01, 0, 10, 1.0, 2.08)
                      + run_rows(M, "quant4", 0.0, 0, 0, 0.8, 2.05))
    ce["metric"] = ce.metric.str.replace("acc_", "ce_")
    before = pd.DataFrame({"seed": [0], "model": [M], "ce_forget": [3.0], "ce_retain": [2.0]}).set_index(
        ["seed", "model"])
    t = family_table(ce, before, "ce_forget", "ce_retain", higher_is_better=False).set_index("family")
    assert t.loc["forget", "forget"] == pytest.approx(0.5) and t.loc["forget", "retain"] == pytest.approx(2.2)
    assert t.loc["forget", "forget_kept"] == pytest.approx(1.0) and t.loc["forget", "runs_kept"] == 1
    assert t.loc["quant4", "forget"] == pytest.approx(0.8) and t.loc["quant4", "forget_kept"] == pytest.approx(0.8)
    assert (t.loc["worst", "forget"], t.loc["worst", "decided_by"]) == (pytest.approx(0.5), "forget")
    assert (t.loc["worst_kept", "forget"], t.loc["worst_kept", "decided_by"]) == (pytest.approx(0.8), "quant4")


def test_family_intervals_over_seeds():
    """Three seeds 0.2, 0.4, 0.6: mean 0.4 and half-width t(0.975, 2) · s / √3 = 4.303 · 0.2 / √3."""
    table = pd.DataFrame(
        [{"seed": s, "model": M, "family": "forget", "forget": f, "forget_kept": k}
         for s, f, k in ((0, 0.2, 0.1), (1, 0.4, 0.1), (2, 0.6, 0.1))]
        + [{"seed": s, "model": M, "family": "worst", "forget": f, "decided_by": d}
           for s, f, d in ((0, 0.2, "forget"), (1, 0.5, "mix"), (2, 0.6, "forget"))]
        + [{"seed": 0, "model": N, "family": "forget", "forget": 0.3, "forget_kept": float("nan")}])
    iv = family_intervals(table).set_index(["model", "family"])
    row = iv.loc[(M, "forget")]
    assert row.n_seeds == 3 and row.forget == pytest.approx(0.4)
    assert row.forget_ci95 == pytest.approx(4.303 * 0.2 / math.sqrt(3))
    assert row.forget_kept == pytest.approx(0.1) and row.forget_kept_ci95 == pytest.approx(0.0, abs=1e-12)
    worst = iv.loc[(M, "worst")]
    assert worst.forget == pytest.approx(1.3 / 3) and worst.decided_by == "forget/mix"
    one = iv.loc[(N, "forget")]
    assert one.n_seeds == 1 and one.forget == pytest.approx(0.3) and math.isnan(one.forget_ci95)
    assert math.isnan(one.forget_kept)  # no seed kept a run
    md = families_markdown(family_intervals(table), "acc_forget")
    assert "acc_forget" in md
    m_line = next(line for line in md.splitlines() if line.startswith(f"| {M} "))
    assert "0.400" in m_line and "forget/mix" in m_line
