"""Aggregation: worst-case attack curves, the summary tables, the compute ledger and labeled-data accounting.

Generic in the headline metric: every function takes the forget and retain metric names and
`higher_is_better` (arithmetic: acc_forget / acc_retain, higher is better; a cross-entropy setting uses
ce_forget / ce_retain with higher_is_better False, so the worst case is the *lowest* forget CE).
The figures are drawn from the tables written here by `pipeline_py.figures`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from . import study
from .atomic import atomic_path
from .claims import check_claims, claims_markdown
from .config import Report
from .settings import setting_of
from .robustness import curve_area, mean_interval, robustness_ratio, steps_to_recover

log = logging.getLogger("pipeline_py")
KEYS = ["seed", "model"]


def describe(model: str) -> dict:
    """Kind, method and alpha of a model id (pipeline_py.study)."""
    m = study.parse(model)
    return {"kind": m.kind, "method": m.method, "alpha": m.alpha}


def with_description(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(**pd.DataFrame([describe(m) for m in df.model], index=df.index))


def load_curves(paths: list[str]) -> pd.DataFrame:
    """All attack curves in one tidy frame: seed, model, data, lr, aseed, step, metric, value."""
    frames = []
    for p in paths:
        at = study.locate("curve", p)
        df = pd.read_csv(p).rename(columns={"seed": "aseed"}).assign(seed=at["seed"], model=at["model"])
        if "data" not in df:
            df["data"] = at["family"]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def hold_zero_step_attacks(curves: pd.DataFrame) -> pd.DataFrame:
    """A run with only step 0 (the quantization attack: no training) is open to the attacker at every budget:
    its rows are repeated at every step the model's other runs evaluate."""
    run = ["seed", "model", "data", "lr", "aseed"] if "aseed" in curves else ["seed", "model", "data", "lr"]
    last = curves.groupby(run).step.transform("max")
    zero = curves[last == 0]
    if zero.empty:
        return curves
    steps = curves.groupby(["seed", "model"]).step.unique()
    held = [zero.drop(columns="step").merge(pd.DataFrame({"seed": s, "model": m, "step": list(v)}), on=["seed", "model"])
            for (s, m), v in steps.items()]
    return pd.concat([curves[last > 0]] + held, ignore_index=True)


def worst_case(curves: pd.DataFrame, forget_metric: str = "acc_forget", higher_is_better: bool = True) -> pd.DataFrame:
    """Per seed, model and step: the attack (LR × data choice) whose run, averaged over attack seeds, shows
    the most forget capability, with that run's metrics (seed means) and `forget_std`, the spread of the
    forget metric over attack seeds. Columns: seed, model, step, lr, data, <metrics>, forget_std, n_aseeds."""
    if "data" not in curves:
        curves = curves.assign(data="forget")
    curves = hold_zero_step_attacks(curves)
    run = ["seed", "model", "data", "lr", "step"]
    if forget_metric not in set(curves.metric):
        raise ValueError(f"forget metric {forget_metric!r} is not in the attack curves; found {sorted(set(curves.metric))}")
    wide = curves.groupby(run + ["metric"])["value"].mean().unstack("metric").reset_index()
    forget = curves[curves.metric == forget_metric].groupby(run)["value"]
    wide = wide.merge(forget.std(ddof=0).rename("forget_std").reset_index(), on=run)
    wide = wide.merge(forget.size().rename("n_aseeds").reset_index(), on=run)
    pick = wide.groupby(["seed", "model", "step"])[forget_metric]
    best = wide.loc[pick.idxmax() if higher_is_better else pick.idxmin()]
    return best.sort_values(["seed", "model", "step"]).reset_index(drop=True)


def read_records(paths: list[str]) -> pd.DataFrame:
    """The compute ledger: one row per checkpoint with its stage, counted tokens and FLOPs (from record.json)."""
    rows = []
    for p in paths:
        at = study.locate("ckpt", p)
        rec = json.loads((Path(p).parent / "record.json").read_text())
        rows.append({"seed": at["seed"], "model": at["model"], "stage": rec.get("stage", ""),
                     **{k: rec.get(k, 0) for k in ("n_params", "trained_tokens", "frozen_tokens", "eval_tokens",
                                                   "steps", "flops", "lineage_flops", "data_examples",
                                                   "labeled_examples", "lineage_labeled_examples")},
                     # a student distilled to a stop rule: 1.0 if it reached it, 0.0 if the budget ran out first
                     "recovered": float("nan") if rec.get("recovered") is None else float(rec["recovered"])})
    ledger = pd.DataFrame(rows)
    oracle = ledger[ledger.model == "oracle"].set_index("seed").flops
    base = ledger[ledger.model == "base"].set_index("seed")
    if oracle.empty and not base.empty:  # a pretrained base with no oracle (wmdp): its pretraining is the reference
        oracle = base.flops
    if oracle.empty or base.empty:
        raise ValueError("the compute ledger needs the records of both 'base' and 'oracle'")
    root = ledger.model.str.split("/").str[0]  # the pretrained model a lineage starts from
    pretrained = ledger.seed.map(base.lineage_flops).where(root == "base", ledger.seed.map(oracle))
    start = pretrained.where(ledger.model.str.contains("/"), 0.0)  # FLOPs spent before the method's own stages
    ledger["fraction_of_oracle"] = ledger.flops / ledger.seed.map(oracle)
    ledger["lineage_fraction"] = ledger.lineage_flops / ledger.seed.map(oracle)
    ledger["compute_fraction"] = (ledger.lineage_flops - start) / ledger.seed.map(oracle)
    # labels: the oracle's data filter labels every pretraining example; others only what unlearning read
    ledger["labeled_fraction"] = (ledger.lineage_labeled_examples / ledger.seed.map(base.data_examples)).where(
        root != "oracle", 1.0)
    return ledger


def budget_table(wc: pd.DataFrame, before: pd.DataFrame, ledger: pd.DataFrame, budgets: list[int],
                 forget_metric: str = "acc_forget", retain_metric: str = "acc_retain") -> pd.DataFrame:
    """One row per seed × model × budget: the worst-case attack with at most `budget` steps (the last
    evaluation within it), metrics before the attack, compute, and the robustness ratio at that budget."""
    rows = []
    for (seed, model), g in wc.groupby(KEYS):
        for budget in budgets:
            at = g[g.step <= budget].iloc[-1]
            rows.append({"seed": seed, "model": model, "budget": int(budget), "attack_step": int(at.step),
                         "worst_lr": at.lr, "worst_data": at.data, "forget_attacked": at[forget_metric],
                         "forget_attacked_std": at.forget_std, "retain_attacked": at[retain_metric]})
    table = with_description(pd.DataFrame(rows))
    table = table.join(before[[forget_metric, retain_metric]].set_axis(["forget_before", "retain_before"], axis=1),
                       on=KEYS)
    table = table.join(ledger.set_index(KEYS)[["flops", "lineage_flops", "compute_fraction", "lineage_fraction",
                                               "labeled_fraction", "recovered"]], on=KEYS)
    table["robustness_ratio"] = _ratios(table, "forget_attacked", ["seed", "budget"])
    return table


def _ratios(table: pd.DataFrame, col: str, by: list[str]) -> pd.Series:
    """Robustness ratio of each method's models against its unlearn-only model and the oracle."""
    ref = table.set_index(by + ["model"])[col]
    out = []
    for r in table.itertuples():
        at = tuple(getattr(r, k) for k in by)
        unlearned, oracle = ref.get(at + (study.parse(r.model).unlearned,)), ref.get(at + ("oracle",))
        out.append(robustness_ratio(getattr(r, col), unlearned, oracle) if r.method and oracle is not None
                   and unlearned is not None else float("nan"))
    return pd.Series(out, index=table.index)


def model_table(wc: pd.DataFrame, before: pd.DataFrame, ledger: pd.DataFrame, forget_metric: str = "acc_forget",
                retain_metric: str = "acc_retain", higher_is_better: bool = True) -> pd.DataFrame:
    """One row per seed × model: area under the worst-case curve, steps to recover half of the gap to the
    base, forget performance after the whole attack and its robustness ratio, compute and labels."""
    rows = []
    for (seed, model), g in wc.groupby(KEYS):
        steps, values = g.step.tolist(), g[forget_metric].tolist()
        base = before.loc[(seed, "base"), forget_metric]
        rows.append({"seed": seed, "model": model, "attack_steps": int(steps[-1]), "forget_final": values[-1],
                     "forget_final_std": g.forget_std.iloc[-1], "attack_family": g.data.iloc[-1],
                     "area": curve_area(steps, values),
                     "steps_to_half": steps_to_recover(steps, values, base, 0.5, higher_is_better)})
    table = with_description(pd.DataFrame(rows))
    table = table.join(before[[forget_metric, retain_metric]].set_axis(["forget_before", "retain_before"], axis=1),
                       on=KEYS)
    table["robustness_ratio"] = _ratios(table, "forget_final", ["seed"])
    table["area_ratio"] = _ratios(table, "area", ["seed"])
    return table.join(ledger.set_index(KEYS)[["flops", "lineage_flops", "compute_fraction", "lineage_fraction",
                                              "labeled_fraction", "recovered"]], on=KEYS)


def seed_means(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, standard deviation (ddof 0) and count over seeds of every numeric column, grouped by `by`."""
    num = [c for c in table.select_dtypes("number").columns if c not in by + ["seed"]]
    g = table.groupby(by)[num]
    out = g.mean().join(g.std(ddof=0).add_suffix("_sd")).join(table.groupby(by).seed.nunique().rename("n_seeds"))
    return with_description(out.reset_index())


def family_table(curves: pd.DataFrame, before: pd.DataFrame, forget_metric: str, retain_metric: str,
                 higher_is_better: bool, tolerance: float = 0.05) -> pd.DataFrame:
    """Per seed, model and attack family: the worst case over the family's runs (forget metric averaged over
    attack seeds) at the end of the attack, and the same over only the runs that kept the retain metric within
    `tolerance` of the model's own before the attack (points for an accuracy, a relative share for a
    cross-entropy): the utility-constrained worst case. Rows `family` = 'worst' and 'worst_kept' take the
    worst over families (`decided_by` names the family)."""
    curves = hold_zero_step_attacks(curves)
    run = ["seed", "model", "data", "lr"]
    wide = curves.groupby(run + ["step", "metric"])["value"].mean().unstack("metric").reset_index()
    wide = wide[wide.step == wide.groupby(["seed", "model"]).step.transform("max")]
    start = wide.join(before[retain_metric].rename("retain_start"), on=KEYS).retain_start
    kept = (wide[retain_metric] >= start - tolerance) if higher_is_better else \
        (wide[retain_metric] <= start * (1 + tolerance))
    pick = (lambda g: g.idxmax()) if higher_is_better else (lambda g: g.idxmin())
    rows = []
    for (seed, model), g in wide.assign(kept=kept).groupby(KEYS):
        fam = {}
        for family, f in g.groupby("data"):
            best = f.loc[pick(f[forget_metric])]
            k = f[f.kept]
            best_k = k.loc[pick(k[forget_metric])] if len(k) else None
            fam[family] = (best[forget_metric], best_k[forget_metric] if best_k is not None else float("nan"))
            rows.append({"seed": seed, "model": model, "family": family, "forget": fam[family][0],
                         "retain": best[retain_metric], "forget_kept": fam[family][1], "runs_kept": int(f.kept.sum()),
                         "runs": len(f)})
        for col, name in ((0, "worst"), (1, "worst_kept")):
            vals = {k: v[col] for k, v in fam.items() if v[col] == v[col]}
            if vals:
                decided = (max if higher_is_better else min)(vals, key=vals.get)
                rows.append({"seed": seed, "model": model, "family": name, "forget": vals[decided],
                             "decided_by": decided})
    return with_description(pd.DataFrame(rows))


def family_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % t-interval half-width over seeds of every model x family row of `family_table`."""
    rows = []
    for (model, family), g in table.groupby(["model", "family"], sort=False):
        out = {"model": model, "family": family, "n_seeds": g.seed.nunique()}
        for col in ("forget", "forget_kept"):
            if col in g and g[col].notna().any():
                out[col], out[f"{col}_ci95"] = mean_interval(g[col].tolist())
        if "decided_by" in g and g.decided_by.notna().any():
            out["decided_by"] = "/".join(sorted(set(g.decided_by.dropna())))
        rows.append(out)
    return with_description(pd.DataFrame(rows))


def families_markdown(intervals: pd.DataFrame, forget_metric: str) -> str:
    """One row per model: relearned forget per family, the worst over families and the utility-constrained
    worst, each as mean ± 95 % half-width over seeds (the family that decided it in brackets)."""
    def cell(r, col="forget"):
        m, h = r.get(col), r.get(f"{col}_ci95")
        if m is None or m != m:
            return "–"
        by = r.get("decided_by")
        return f"{m:.3f}" + (f" ± {h:.3f}" if h == h else "") + (f" ({by})" if isinstance(by, str) else "")

    order = ["forget", "mix", "retain", "heldout"]  # then the quantization widths, widest first
    families = sorted((f for f in set(intervals.family) if not f.startswith("worst")),
                      key=lambda f: (order.index(f), 0) if f in order else (len(order), -int(f.removeprefix("quant") or 0)))
    head = ["model"] + families + ["worst", "worst, retain kept"]
    lines = [f"Relearned {forget_metric} after each attack family (mean ± 95 % interval over seeds)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, g in intervals.groupby("model", sort=False):
        by = {r["family"]: r for r in g.to_dict("records")}
        cells = [cell(by[f]) if f in by else "–" for f in families]
        cells += [cell(by["worst"]) if "worst" in by else "–",
                  cell(by["worst_kept"]) if "worst_kept" in by else "–"]
        lines.append("| " + " | ".join([model] + cells) + " |")
    return "\n".join(lines) + "\n"


def summarize(evals: list[str], curves: list[str], records: list[str], eval_data: str, summary: str, models: str,
              models_mean: str, worst: str, compute: str, families: str, families_md: str, claims: str, claims_md: str,
              cfg: Report) -> None:
    """Stage: every model's evaluation, attack curves and compute records -> the tables the figures read.
    Metric names and direction the report section leaves null are the setting's (read from `eval_data`'s
    manifest)."""
    m = setting_of(eval_data).METRICS
    forget_metric, retain_metric = cfg.forget_metric or m.forget, cfg.retain_metric or m.retain
    higher_is_better = m.higher_is_better if cfg.higher_is_better is None else cfg.higher_is_better
    budgets = cfg.budgets
    ev = pd.concat([pd.read_csv(p).assign(seed=study.locate("evaluation", p)["seed"]) for p in evals], ignore_index=True)
    before = ev[ev.phase == "before"].pivot_table(index=KEYS, columns="metric", values="value")
    for metric in (forget_metric, retain_metric):
        if metric not in before:
            raise ValueError(f"report metric {metric!r} is not among the evaluated metrics {sorted(before.columns)}")
    all_curves = load_curves(list(curves))
    wc = worst_case(all_curves, forget_metric, higher_is_better)
    ledger = read_records(list(records))
    fam = family_table(all_curves, before, forget_metric, retain_metric, higher_is_better)
    per_family = family_intervals(fam)
    per_model = model_table(wc, before, ledger, forget_metric, retain_metric, higher_is_better)
    kept = fam[fam.family == "worst_kept"].set_index(KEYS).forget.rename("forget_final_kept")
    per_model = per_model.join(kept, on=KEYS)  # the utility-constrained worst case after the whole attack
    tables = {summary: budget_table(wc, before, ledger, budgets, forget_metric, retain_metric),
              models: per_model, models_mean: seed_means(per_model, ["model"]), worst: with_description(wc),
              compute: ledger, families: per_family, claims: check_claims(per_model, higher_is_better)}
    for path, table in tables.items():
        with atomic_path(path) as tmp:
            table.assign(forget_metric=forget_metric, retain_metric=retain_metric,
                         higher_is_better=higher_is_better).to_csv(tmp, index=False)
    with atomic_path(families_md) as tmp:
        Path(tmp).write_text(families_markdown(per_family, forget_metric))
    with atomic_path(claims_md) as tmp:
        Path(tmp).write_text(claims_markdown(tables[claims], per_model.seed.nunique()))
    log.info("summarize: %d models, %d budget rows", len(per_model), len(tables[summary]))
