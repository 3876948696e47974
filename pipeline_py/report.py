"""Aggregation and figures: worst-case attack curves, the summary table, the paper's three figures."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from .checkpoint import atomic_path

log = logging.getLogger("pipeline_py")
# results/<setting>/seed<N>/attack/<model>/lr<lr>_s<k>.csv and .../seed<N>/eval/<model>.csv; the leading
# greedy .* makes the last seed<N>/ of the path count, whatever the results root is called
_CURVE = re.compile(r".*/seed(\d+)/attack/(.+)/lr[^/]+\.csv")
_EVAL = re.compile(r".*/seed(\d+)/eval/(.+)\.csv")


def _parse(pattern: re.Pattern, path: str) -> tuple[int, str]:
    m = pattern.fullmatch(str(path))
    if not m:
        raise ValueError(f"unexpected result path {path}: expected {pattern.pattern}")
    return int(m.group(1)), m.group(2)


def describe(model: str) -> dict:
    """Kind, method and alpha of a model id such as 'base/maxent/undo_a0.4_b0.1'."""
    parts = model.split("/")
    if len(parts) == 1:
        return {"kind": parts[0], "method": "", "alpha": float("nan")}
    if len(parts) == 2:
        return {"kind": "unlearn", "method": parts[1], "alpha": 0.0}
    init = parts[2].removeprefix("undo_")
    if init == "fresh":
        return {"kind": "unlearn+distill", "method": parts[1], "alpha": 1.0}
    return {"kind": "undo", "method": parts[1], "alpha": float(init[1:].split("_b")[0])}


def load_curves(paths: list[str]) -> pd.DataFrame:
    """All attack curves in one tidy frame with columns seed, model, lr, aseed, step, metric, value."""
    frames = []
    for p in paths:
        seed, model = _parse(_CURVE, p)
        frames.append(pd.read_csv(p).rename(columns={"seed": "aseed"}).assign(seed=seed, model=model))
    return pd.concat(frames, ignore_index=True)


def worst_case(curves: pd.DataFrame) -> pd.DataFrame:
    """Per seed, model and step: the LR whose run (averaged over attack seeds) has the highest forget
    accuracy, with that run's metrics. Columns: seed, model, step, lr, acc_forget, acc_retain, ..."""
    wide = (curves.groupby(["seed", "model", "lr", "step", "metric"])["value"].mean()
            .unstack("metric").reset_index())
    best = wide.loc[wide.groupby(["seed", "model", "step"])["acc_forget"].idxmax()]
    return best.reset_index(drop=True)


def summarize(curves: pd.DataFrame, evals: pd.DataFrame, budgets: list[int]) -> pd.DataFrame:
    """One row per seed × model × budget: forget accuracy after the worst-case attack, retain and forget
    accuracy before it, and compute as a fraction of the oracle's pretraining."""
    wc = worst_case(curves)
    before = evals[evals.phase == "before"].pivot_table(index=["seed", "model"], columns="metric", values="value")
    compute = evals[evals.phase == "compute"].pivot_table(index=["seed", "model"], columns="metric", values="value")
    rows = []
    for (seed, model), g in wc.groupby(["seed", "model"]):
        oracle = compute.loc[(seed, "oracle"), "flops"]
        base = compute.loc[(seed, "base"), "lineage_flops"]
        own = compute.loc[(seed, model), "lineage_flops"] - (0 if model in ("base", "oracle") else base)
        for budget in budgets:
            at = g[g.step <= budget].sort_values("step").iloc[-1]
            rows.append({"seed": seed, "model": model, **describe(model), "budget": int(budget),
                         "attack_step": int(at.step), "worst_lr": at.lr, "forget_acc_attacked": at.acc_forget,
                         "retain_acc_attacked": at.acc_retain, "forget_acc": before.loc[(seed, model), "acc_forget"],
                         "retain_acc": before.loc[(seed, model), "acc_retain"], "flops": own,
                         "compute_fraction": own / oracle})
    return pd.DataFrame(rows)


def _pyplot():
    """matplotlib, imported only by the plotting rule (the other stages import this module too)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png: str) -> None:
    plt = _pyplot()
    for path in (out_png, str(Path(out_png).with_suffix(".pdf"))):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:], bbox_inches="tight", dpi=130)
    plt.close(fig)


def _label(r) -> str:
    if r.kind == "undo":
        return f"UNDO α={r.alpha:g}"
    return {"unlearn": "unlearn only", "unlearn+distill": "unlearn+distill (fresh)"}.get(r.kind, r.kind)


def plot_curves(wc: pd.DataFrame, out_png: str) -> None:
    """Figure 1: worst-case forget accuracy along the attack, one panel per unlearning method."""
    plt = _pyplot()
    wc = wc.assign(**pd.DataFrame([describe(m) for m in wc.model], index=wc.index))
    methods = sorted(m for m in wc.method.unique() if m)
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        sub = wc[(wc.method == method) | (wc.method == "")]
        for model, g in sub.groupby("model"):
            mean = g.groupby("step")["acc_forget"].mean()
            r = describe(model)
            ls = {"base": "--", "oracle": ":"}.get(model, "-")
            color = "k" if model in ("base", "oracle") else plt.cm.viridis(min(r["alpha"], 1.0))
            ax.plot(mean.index, mean.values, ls=ls, color=color, label=_label(pd.Series(r)))
        ax.set(title=f"{method}: relearning attack (worst case over LRs)", xlabel="attack steps",
               ylabel="forget accuracy (mul/div)", ylim=(-0.02, 1.02))
        ax.legend(fontsize=7)
    _save(fig, out_png)


def plot_pareto(summary: pd.DataFrame, out_png: str) -> None:
    """Figure 2: retain accuracy vs forget accuracy after the attack, one panel per step budget."""
    plt = _pyplot()
    budgets = sorted(summary.budget.unique())
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.5 * len(budgets), 4), squeeze=False, sharey=True)
    mean = summary.groupby(["model", "budget"], as_index=False).mean(numeric_only=True)
    mean = mean.assign(**pd.DataFrame([describe(m) for m in mean.model], index=mean.index))
    markers = {"base": "s", "oracle": "*", "unlearn": "o", "undo": "^", "unlearn+distill": "D"}
    methods = sorted(m for m in mean.method.unique() if m)
    for ax, budget in zip(axes[0], budgets):
        for r in mean[mean.budget == budget].itertuples():
            ax.scatter(r.retain_acc, r.forget_acc_attacked, marker=markers[r.kind], s=50,
                       color=plt.cm.tab10(methods.index(r.method)) if r.method else "k")
            ax.annotate(f"{r.method} {_label(r)}".strip(), (r.retain_acc, r.forget_acc_attacked), fontsize=6)
        ax.set(title=f"after {budget} attack steps", xlabel="retain accuracy (add/sub), before attack",
               ylabel="forget accuracy after attack (lower is better)", ylim=(-0.02, 1.02))
    _save(fig, out_png)


def plot_compute(summary: pd.DataFrame, out_png: str) -> None:
    """Figure 3: forget accuracy after the longest attack vs compute (fraction of oracle pretraining)."""
    plt = _pyplot()
    last = summary[summary.budget == summary.budget.max()]
    mean = last.groupby("model", as_index=False).mean(numeric_only=True)
    mean = mean.assign(**pd.DataFrame([describe(m) for m in mean.model], index=mean.index))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, (method, g) in enumerate(mean[mean.method != ""].groupby("method")):
        g = g.sort_values("compute_fraction")
        ax.plot(g.compute_fraction, g.forget_acc_attacked, "o-", color=plt.cm.tab10(i), label=method)
        for r in g.itertuples():
            ax.annotate(_label(r), (r.compute_fraction, r.forget_acc_attacked), fontsize=6)
    for model, style in (("oracle", "k:"), ("base", "k--")):
        if model in set(mean.model):
            ax.axhline(mean.set_index("model").loc[model, "forget_acc_attacked"], ls=style[1:], color="k",
                       label=f"{model} (after attack)")
    ax.set(xlabel="compute of the method / oracle pretraining compute",
           ylabel=f"forget accuracy after {int(last.budget.max())} attack steps", ylim=(-0.02, 1.02),
           title="robustness vs compute")
    ax.legend(fontsize=7)
    _save(fig, out_png)


def pareto_plot(evals: list[str], curves: list[str], summary: str, curves_png: str, pareto_png: str,
                compute_png: str, budgets: list[int]) -> None:
    """Aggregate every model's evaluation and attack curves into `summary` and the three figures."""
    ev = pd.concat([pd.read_csv(p).assign(seed=_parse(_EVAL, p)[0]) for p in evals], ignore_index=True)
    cv = load_curves(list(curves))
    table = summarize(cv, ev, budgets)
    with atomic_path(summary) as tmp:
        table.to_csv(tmp, index=False)
    plot_curves(worst_case(cv), curves_png)
    plot_pareto(table, pareto_png)
    plot_compute(table, compute_png)
    log.info("pareto_plot: %d rows in %s", len(table), summary)
