"""Robustness summaries, worst-case aggregation over LR × data choice, the compute ledger and labeled-data
accounting, and the figures, all against hand computations on small hand-made tables."""
from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
from test_heldout import operand_pair

from pipeline_py.figures import pareto_plot
from pipeline_py.report import budget_table, model_table, read_records, seed_means, worst_case
from pipeline_py.robustness import curve_area, mean_interval, robustness_ratio, steps_to_recover

# ----------------------------------------------------------------------------- scalar summaries


def test_curve_area_is_the_trapezoid_mean_level():
    # (10·(0 + 0.5)/2 + 20·(0.5 + 0.5)/2) / 30 = (2.5 + 10) / 30
    assert curve_area([0, 10, 30], [0.0, 0.5, 0.5]) == pytest.approx(12.5 / 30)
    assert curve_area([0], [0.4]) == 0.4
    assert curve_area([0, 20], [0.2, 0.2]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="increasing"):
        curve_area([0, 10, 10], [0, 0, 0])


def test_steps_to_recover_half_the_gap_interpolates_between_evaluations():
    # start 0.1, base 0.9: threshold 0.5, crossed between step 10 (0.3) and 20 (0.7) at 10 + 0.2/0.4·10
    assert steps_to_recover([0, 10, 20], [0.1, 0.3, 0.7], reference=0.9) == pytest.approx(15.0)
    assert steps_to_recover([0, 10, 20], [0.1, 0.3, 0.4], reference=0.9) == math.inf  # never within the attack
    assert steps_to_recover([0, 10], [0.9, 0.95], reference=0.9) == 0.0  # no gap: the base itself
    assert steps_to_recover([0, 10, 20], [0.1, 0.3, 0.7], reference=0.9, fraction=0.25) == pytest.approx(10.0)


def test_steps_to_recover_with_a_lower_is_better_metric():
    # forget CE 5 → 4 → 2, base CE 1: threshold 5 + 0.5·(1 − 5) = 3, crossed at 10 + (3 − 4)/(2 − 4)·10
    assert steps_to_recover([0, 10, 20], [5.0, 4.0, 2.0], reference=1.0, higher_is_better=False) == pytest.approx(15)
    assert steps_to_recover([0, 10], [5.0, 4.0], reference=1.0, higher_is_better=False) == math.inf


def test_robustness_ratio_by_hand_in_both_directions():
    assert robustness_ratio(method=0.3, unlearned=0.8, oracle=0.1) == pytest.approx(0.5 / 0.7)
    assert robustness_ratio(method=0.8, unlearned=0.8, oracle=0.1) == 0.0  # no better than unlearn-only
    assert robustness_ratio(method=0.1, unlearned=0.8, oracle=0.1) == 1.0  # as robust as the oracle
    assert robustness_ratio(method=2.5, unlearned=1.0, oracle=3.0) == pytest.approx(0.75)  # cross-entropies
    assert math.isnan(robustness_ratio(0.5, 0.2, 0.2))


def test_mean_interval_is_the_mean_and_95_percent_t_half_width():
    mean, half = mean_interval([0.2, 0.4, 0.6])  # s = 0.2, t(0.975, df 2) = 4.303
    assert mean == pytest.approx(0.4) and half == pytest.approx(4.303 * 0.2 / math.sqrt(3))
    mean, half = mean_interval([1.0, 3.0])  # s = √2, t(0.975, df 1) = 12.706: 12.706 · √2 / √2
    assert mean == pytest.approx(2.0) and half == pytest.approx(12.706)
    mean, half = mean_interval([0.5])
    assert mean == 0.5 and math.isnan(half)  # one seed: no interval
    assert mean_interval([0.3, 0.3, 0.3, 0.3]) == (pytest.approx(0.3), 0.0)
    mean, half = mean_interval([0.2, float("nan"), 0.6])  # a missing value is left out: df 1
    assert mean == pytest.approx(0.4) and half == pytest.approx(12.706 * math.sqrt(0.08) / math.sqrt(2))
    assert all(math.isnan(v) for v in mean_interval([])) and all(math.isnan(v) for v in mean_interval([float("nan")]))
    vals = [0.1 * i for i in range(40)]  # beyond 30 degrees of freedom the normal quantile 1.96
    sd = math.sqrt(sum((v - 1.95) ** 2 for v in vals) / 39)
    assert mean_interval(vals) == (pytest.approx(1.95), pytest.approx(1.96 * sd / math.sqrt(40)))


# ------------------------------------------------------------------------------ worst case


def rows(model, data, lr, aseed, step, forget, retain, seed=0, fname="acc_forget", rname="acc_retain"):
    base = {"seed": seed, "model": model, "data": data, "lr": lr, "aseed": aseed, "step": step}
    return [base | {"metric": fname, "value": forget}, base | {"metric": rname, "value": retain}]


# step 0: every run starts alike; step 10: forget-only lr 0.1 averages 0.5 over seeds (0.8, 0.2), the
# mix at lr 0.1 averages 0.6 (0.7, 0.5) → worst case is the mix; at step 20 forget-only lr 0.2 wins (0.9)
HAND = pd.DataFrame(
    [r for d in ("forget", "mix") for lr in (0.1, 0.2) for a in (0, 1) for r in rows("m", d, lr, a, 0, 0.1, 0.8)]
    + rows("m", "forget", 0.1, 0, 10, 0.8, 0.3) + rows("m", "forget", 0.1, 1, 10, 0.2, 0.3)
    + rows("m", "forget", 0.2, 0, 10, 0.3, 0.2) + rows("m", "forget", 0.2, 1, 10, 0.3, 0.2)
    + rows("m", "mix", 0.1, 0, 10, 0.7, 0.7) + rows("m", "mix", 0.1, 1, 10, 0.5, 0.9)
    + rows("m", "mix", 0.2, 0, 10, 0.4, 0.8) + rows("m", "mix", 0.2, 1, 10, 0.4, 0.8)
    + rows("m", "forget", 0.1, 0, 20, 0.6, 0.1) + rows("m", "forget", 0.1, 1, 20, 0.6, 0.1)
    + rows("m", "forget", 0.2, 0, 20, 0.9, 0.0) + rows("m", "forget", 0.2, 1, 20, 0.9, 0.2)
    + rows("m", "mix", 0.1, 0, 20, 0.5, 0.9) + rows("m", "mix", 0.1, 1, 20, 0.5, 0.9)
    + rows("m", "mix", 0.2, 0, 20, 0.7, 0.8) + rows("m", "mix", 0.2, 1, 20, 0.7, 0.8))


def test_worst_case_is_the_max_over_lr_and_data_of_the_seed_mean():
    wc = worst_case(HAND).set_index("step")
    assert (wc.loc[10, "data"], wc.loc[10, "lr"]) == ("mix", 0.1)
    assert wc.loc[10, "acc_forget"] == pytest.approx(0.6) and wc.loc[10, "acc_retain"] == pytest.approx(0.8)
    assert wc.loc[10, "forget_std"] == pytest.approx(0.1)  # population std of (0.7, 0.5)
    assert (wc.loc[20, "data"], wc.loc[20, "lr"]) == ("forget", 0.2)
    assert wc.loc[20, "acc_forget"] == pytest.approx(0.9) and wc.loc[20, "acc_retain"] == pytest.approx(0.1)
    assert wc.loc[20, "forget_std"] == 0.0 and wc.loc[20, "n_aseeds"] == 2


def test_worst_case_of_a_cross_entropy_is_the_minimum():
    ce = HAND.assign(metric=HAND.metric.str.replace("acc_", "ce_"), value=1 - HAND.value)
    wc = worst_case(ce, "ce_forget", higher_is_better=False).set_index("step")
    assert (wc.loc[10, "data"], wc.loc[10, "lr"]) == ("mix", 0.1) and wc.loc[10, "ce_forget"] == pytest.approx(0.4)
    assert (wc.loc[20, "data"], wc.loc[20, "lr"]) == ("forget", 0.2) and wc.loc[20, "ce_forget"] == pytest.approx(0.1)


def test_worst_case_names_a_missing_metric():
    with pytest.raises(ValueError, match="ce_forget"):
        worst_case(HAND, "ce_forget")


# --------------------------------------------------------------- tables: budgets, models, ledger

# worst-case forget curves at steps 0/10/20 (one run each, so the worst case is the curve itself)
CURVES = {"base": [0.9, 0.9, 0.9], "oracle": [0.1, 0.1, 0.1], "base/m": [0.0, 0.6, 0.8],
          "base/m/undo_a0.5_b0.1": [0.0, 0.2, 0.45]}


def hand_curves() -> pd.DataFrame:
    return pd.DataFrame([r for model, ys in CURVES.items() for step, y in zip((0, 10, 20), ys)
                         for r in rows(model, "forget", 0.1, 0, step, y, 0.7)])


def write_records(root, seed=0) -> list[str]:
    """record.json files of a hand-made lineage: base (1000 FLOPs, 10,000 examples), oracle (800 FLOPs),
    unlearning (+20, 200 labeled examples), noise (+0) and distillation (+400)."""
    recs = {"base": {"stage": "pretrain", "flops": 1000, "lineage_flops": 1000, "data_examples": 10_000},
            "oracle": {"stage": "pretrain", "flops": 800, "lineage_flops": 800, "data_examples": 8_000},
            "base/m": {"stage": "unlearn", "flops": 20, "lineage_flops": 1020, "labeled_examples": 200,
                       "lineage_labeled_examples": 200},
            "base/m/noised_a0.5_b0.1": {"stage": "noise", "flops": 0, "lineage_flops": 1020,
                                        "lineage_labeled_examples": 200},
            "base/m/undo_a0.5_b0.1": {"stage": "distill", "flops": 400, "lineage_flops": 1420,
                                      "lineage_labeled_examples": 200},
            "oracle/match_fresh": {"stage": "distill", "flops": 200, "lineage_flops": 1000}}
    paths = []
    for model, rec in recs.items():
        d = root / f"seed{seed}" / "models" / model
        d.mkdir(parents=True)
        (d / "record.json").write_text(json.dumps(rec))
        paths.append(str(d / "model.safetensors"))
    return paths


def test_compute_ledger_fractions_of_the_oracle_and_labels(tmp_path):
    led = read_records(write_records(tmp_path / "arithmetic")).set_index("model")
    assert led.loc["base/m/undo_a0.5_b0.1", "fraction_of_oracle"] == pytest.approx(400 / 800)
    assert led.loc["base/m/undo_a0.5_b0.1", "lineage_fraction"] == pytest.approx(1420 / 800)
    # the method's compute: everything after the pretrained base, over the oracle's pretraining
    assert led.loc["base/m/undo_a0.5_b0.1", "compute_fraction"] == pytest.approx(420 / 800)
    assert led.loc["base/m", "compute_fraction"] == pytest.approx(20 / 800)
    assert led.loc["oracle/match_fresh", "compute_fraction"] == pytest.approx(200 / 800)
    assert led.loc["base", "compute_fraction"] == pytest.approx(1000 / 800)
    assert led.loc["oracle", "compute_fraction"] == 1.0
    # labels: 200 of the base's 10,000 pretraining examples; the filtering oracle's lineage labels all
    assert led.loc["base/m/undo_a0.5_b0.1", "labeled_fraction"] == pytest.approx(0.02)
    assert led.loc["base", "labeled_fraction"] == 0.0
    assert led.loc["oracle", "labeled_fraction"] == led.loc["oracle/match_fresh", "labeled_fraction"] == 1.0


def hand_before() -> pd.DataFrame:
    vals = {"base": (0.9, 0.8), "oracle": (0.1, 0.85), "base/m": (0.0, 0.75), "base/m/undo_a0.5_b0.1": (0.0, 0.7)}
    return pd.DataFrame([{"seed": 0, "model": m, "acc_forget": f, "acc_retain": r} for m, (f, r) in vals.items()]
                        ).set_index(["seed", "model"])


def test_budget_and_model_tables_by_hand(tmp_path):
    wc = worst_case(hand_curves())
    ledger = read_records(write_records(tmp_path / "arithmetic"))
    s = budget_table(wc, hand_before(), ledger, [0, 15, 20]).set_index(["model", "budget"])
    assert len(s) == 4 * 3
    assert s.loc[("base/m", 15), "attack_step"] == 10 and s.loc[("base/m", 15), "forget_attacked"] == 0.6
    # ratio at budget 20: (0.8 − 0.45) / (0.8 − 0.1)
    assert s.loc[("base/m/undo_a0.5_b0.1", 20), "robustness_ratio"] == pytest.approx(0.35 / 0.7)
    assert s.loc[("base/m", 20), "robustness_ratio"] == 0.0 and math.isnan(s.loc[("base", 20), "robustness_ratio"])
    assert s.loc[("base/m/undo_a0.5_b0.1", 0), "retain_before"] == 0.7
    assert s.loc[("base/m/undo_a0.5_b0.1", 0), "compute_fraction"] == pytest.approx(420 / 800)

    m = model_table(wc, hand_before(), ledger).set_index("model")
    undo = m.loc["base/m/undo_a0.5_b0.1"]
    assert undo.area == pytest.approx((10 * 0.1 + 10 * 0.325) / 20)  # trapezoids (0, .2), (.2, .45)
    # start 0, base 0.9 → threshold 0.45, first reached at step 20 exactly
    assert undo.steps_to_half == pytest.approx(20.0)
    assert m.loc["base/m", "steps_to_half"] == pytest.approx(0.45 / 0.6 * 10)  # 0 → 0.6 crosses 0.45 at 7.5
    assert m.loc["oracle", "steps_to_half"] == math.inf and m.loc["base", "steps_to_half"] == 0.0
    assert undo.robustness_ratio == pytest.approx(0.35 / 0.7)
    # area ratio: unlearn-only area (0.3 + 0.7)/2 = 0.5, oracle 0.1, UNDO 0.2125 → (0.5 − 0.2125) / 0.4
    assert undo.area_ratio == pytest.approx((0.5 - 0.2125) / 0.4)
    assert undo.labeled_fraction == pytest.approx(0.02) and undo.kind == "undo" and undo.alpha == 0.5


def test_seed_means_mean_and_spread():
    t = pd.DataFrame({"seed": [0, 1, 0, 1], "model": ["base", "base", "oracle", "oracle"],
                      "area": [0.2, 0.4, 1.0, 1.0]})
    out = seed_means(t, ["model"]).set_index("model")
    assert out.loc["base", "area"] == pytest.approx(0.3) and out.loc["base", "area_sd"] == pytest.approx(0.1)
    assert out.loc["oracle", "area_sd"] == 0.0 and out.loc["base", "n_seeds"] == 2


def test_figures_from_the_tables_as_png_and_pdf(tmp_path):
    wc = worst_case(hand_curves())
    ledger = read_records(write_records(tmp_path / "arithmetic"))
    table = budget_table(wc, hand_before(), ledger, [0, 20])
    (tmp_path / "fig").mkdir()
    table.assign(forget_metric="acc_forget", retain_metric="acc_retain", higher_is_better=True).to_csv(
        tmp_path / "summary.csv", index=False)
    from pipeline_py.report import with_description
    with_description(wc).to_csv(tmp_path / "worst.csv", index=False)
    names = ["relearning_curves", "pareto", "robustness_vs_compute", "oracle_matching"]
    pareto_plot(str(tmp_path / "summary.csv"), str(tmp_path / "worst.csv"),
                *[str(tmp_path / "fig" / f"{n}.png") for n in names])
    for n in names:
        png, pdf = (tmp_path / "fig" / f"{n}.png").read_bytes(), (tmp_path / "fig" / f"{n}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG") and pdf.startswith(b"%PDF"), n


# ------------------------------------------------------------- attack data and counted compute


def test_attack_rows_weights_and_checks(tiny_data):
    from pipeline_py.attack_data import attack_rows
    from pipeline_py.batches import read_jsonl

    attack, train = str(tiny_data / "attack.jsonl"), str(tiny_data / "train.jsonl")
    ev = read_jsonl(tiny_data / "eval.jsonl")
    rows, w, scored = attack_rows("forget", attack, train, ev, "arithmetic")
    assert all(r["forget"] for r in rows) and sum(w) == pytest.approx(1.0)
    assert rows == read_jsonl(tiny_data / "attack.jsonl") and scored == ev  # the whole pool, scored on every row
    per_op = pd.Series(w).groupby([r["op"] for r in rows]).sum()
    assert per_op["mul"] == pytest.approx(0.5) and per_op["div"] == pytest.approx(0.5)
    rows, w, scored = attack_rows("mix", attack, train, ev, "arithmetic", mix_forget_fraction=0.25)
    share = sum(wi for r, wi in zip(rows, w) if r["forget"])
    assert share == pytest.approx(0.25) and sum(w) == pytest.approx(1.0) and scored == ev
    per_op = pd.Series(w).groupby([r["op"] for r in rows]).sum()  # each op equal within its pool
    assert per_op["mul"] == pytest.approx(0.125) and per_op["add"] == pytest.approx(0.375)
    assert per_op["div"] == pytest.approx(0.125) and per_op["sub"] == pytest.approx(0.375)
    with pytest.raises(ValueError, match="attack.families entry 'quant' is not a finetuning attack"):
        attack_rows("quant", attack, train, ev, "arithmetic")  # quantization trains on nothing
    with pytest.raises(ValueError, match="attack.families entry 'poison'"):
        attack_rows("poison", attack, train, ev, "arithmetic")
    with pytest.raises(ValueError, match="forget-only"):  # the trap of pointing the attack at retain data
        attack_rows("forget", train, train, ev, "arithmetic")
    with pytest.raises(ValueError, match=re.escape("attack.mix_forget_fraction = 1.0")):
        attack_rows("mix", attack, train, ev, "arithmetic", mix_forget_fraction=1.0)
    for family in ("mix", "retain"):  # a retain file without retain rows
        with pytest.raises(ValueError, match=f"holds no retain examples for the '{family}' attack"):
            attack_rows(family, attack, attack, ev, "arithmetic")


def test_packed_stream_draws_the_mixture_share(tiny_data, tok):
    from pipeline_py.attack_data import attack_rows
    from pipeline_py.batches import PackedStream, read_jsonl

    rows, w, _ = attack_rows("mix", str(tiny_data / "attack.jsonl"), str(tiny_data / "train.jsonl"),
                             read_jsonl(tiny_data / "eval.jsonl"), "arithmetic", mix_forget_fraction=0.25)
    stream = PackedStream(tok, rows, 4, 32, seed=0, weights=w)
    draws = stream.rng.choice(len(rows), size=20_000, p=stream.p)
    assert sum(rows[i]["forget"] for i in draws) / len(draws) == pytest.approx(0.25, abs=0.015)


def test_retain_attack_trains_on_retain_rows_only(tiny_data):
    from pipeline_py.attack_data import attack_rows
    from pipeline_py.batches import read_jsonl

    ev = read_jsonl(tiny_data / "eval.jsonl")
    rows, w, scored = attack_rows("retain", str(tiny_data / "attack.jsonl"), str(tiny_data / "train.jsonl"), ev,
                                  "arithmetic")
    evaluated = {r["fact"] for r in ev}  # the training rows of evaluated facts are left out
    assert rows == [r for r in read_jsonl(tiny_data / "train.jsonl") if not r["forget"] and r["fact"] not in evaluated]
    assert not any(r["forget"] for r in rows) and {r["op"] for r in rows} == {"add", "sub"}
    assert sum(w) == pytest.approx(1.0)
    per_op = pd.Series(w).groupby([r["op"] for r in rows]).sum()
    assert per_op["add"] == pytest.approx(0.5) and per_op["sub"] == pytest.approx(0.5)
    assert scored == ev  # scored on the forget facts like every other family


def test_heldout_attack_trains_on_facts_it_is_not_scored_on(tiny_data):
    """The heldout attacker's training rows (half the pool's facts) share no operand pair, across mul and
    div, with the forget rows it is scored on; the scored rows are every retain row plus every forget row of
    the other facts, in their order."""
    from pipeline_py.attack_data import attack_rows, fact_group, split_forget_facts
    from pipeline_py.batches import read_jsonl

    pool, ev = read_jsonl(tiny_data / "attack.jsonl"), read_jsonl(tiny_data / "eval.jsonl")
    args = (str(tiny_data / "attack.jsonl"), str(tiny_data / "train.jsonl"), ev, "arithmetic")
    rows, w, scored = attack_rows("heldout", *args, seed=0)
    assert rows == split_forget_facts(pool, "arithmetic", 0, 0.5)[0]
    assert rows and all(r["forget"] for r in rows) and sum(w) == pytest.approx(1.0)
    pool_pairs, train_pairs = {operand_pair(r) for r in pool}, {operand_pair(r) for r in rows}
    assert (len(pool_pairs), len(train_pairs)) == (19, 9)  # round(0.5 · 19) = 10 facts held out
    scored_forget = [r for r in scored if r["forget"]]
    assert {r["op"] for r in scored_forget} == {"mul", "div"}
    assert not {operand_pair(r) for r in scored_forget} & train_pairs  # nothing it recovers was shown to it
    assert scored == [r for r in ev if not r["forget"] or operand_pair(r) not in train_pairs]
    assert [r for r in scored if not r["forget"]] == [r for r in ev if not r["forget"]]
    assert 0 < len(scored_forget) < sum(r["forget"] for r in ev)  # some eval facts were in the attacker's half
    assert {fact_group(r, "arithmetic") for r in rows} == {f"{x}:{y}" for x, y in train_pairs}
    # another attack seed draws another half; a larger heldout_fraction leaves the attacker fewer facts
    other = attack_rows("heldout", *args, seed=1)[0]
    assert {operand_pair(r) for r in other} != train_pairs
    fewer = attack_rows("heldout", *args, seed=0, heldout_fraction=0.75)[0]
    assert len({operand_pair(r) for r in fewer}) == 19 - 14  # round(0.75 · 19) = 14 held out
    with pytest.raises(ValueError, match="nothing is left to score"):
        attack_rows("heldout", *args[:2], [r for r in ev if not r["forget"] or operand_pair(r) in train_pairs],
                    "arithmetic", seed=0)


def test_evaluator_counts_padded_positions(tiny_data, tok):
    from pipeline_py.batches import read_jsonl, tokenize_examples
    from pipeline_py.evaluation import Evaluator

    rows = [r for r in read_jsonl(tiny_data / "eval.jsonl") if r["op"] == "add"][:3]
    ids, _ = tokenize_examples(tok, rows)
    assert Evaluator(tok, rows).tokens == 3 * max(map(len, ids))  # one batch of 3 rows padded to the longest


def test_oracle_matched_into_the_base_carries_both_lineages(tiny_data, tok, tiny_cfg, tmp_path):
    """Distilling the oracle into the base: the lineage holds the base's, the oracle's and its own FLOPs,
    and the oracle's labels; the student's checks count as forward tokens."""
    from pipeline_py.checkpoint import make_record, save_checkpoint
    from pipeline_py.config import Distill, Runtime
    from pipeline_py.stages.distill import distill
    from pipeline_py.model import build_model

    for name, seed, rec in (("base", 0, {"lineage_flops": 1000}), ("oracle", 1, {"lineage_flops": 800,
                                                                                  "lineage_labeled_examples": 50})):
        m = build_model(tiny_cfg, seed)
        save_checkpoint(m, tiny_data, tmp_path / name, make_record("pretrain", m, rec, 10))
    distill(str(tmp_path / "oracle"), str(tmp_path / "base"), str(tiny_data / "train.jsonl"),
            str(tiny_data / "eval.jsonl"), str(tmp_path / "match"),
            Distill(steps=2, lr=1e-3, batch_size=2, seq_len=16, stop_within=None, check_every=1),
            Runtime(precision="fp32", device="cpu"), seed=0, teacher_in_lineage=False)
    rec = json.loads((tmp_path / "match" / "record.json").read_text())
    base, oracle = (json.loads((tmp_path / n / "record.json").read_text()) for n in ("base", "oracle"))
    assert rec["lineage_flops"] == rec["flops"] + base["lineage_flops"] + oracle["lineage_flops"]
    assert rec["lineage_labeled_examples"] == 50
    from pipeline_py.batches import read_jsonl
    from pipeline_py.evaluation import Evaluator
    retain = Evaluator(tok, [r for r in read_jsonl(tiny_data / "eval.jsonl") if not r["forget"]]).tokens
    assert rec["eval_tokens"] == 4 * retain  # the teacher once, the student at steps 0, 1 and 2
    assert rec["frozen_tokens"] == 2 * 2 * 16 + rec["eval_tokens"]
