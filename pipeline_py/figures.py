"""The paper's figures, each drawn from the tables `pipeline_py.report.summarize` writes (PNG and PDF).

1. relearning_curves: worst-case forget performance along the attack, one panel per unlearning method.
2. pareto: retain performance vs forget performance after the attack, one panel per step budget.
3. robustness_vs_compute: forget performance after the longest attack vs compute / oracle compute.
4. oracle_matching: the oracle distilled into the pretrained base and into a random init.
Curves and points are means over seeds; bands and error bars their 95 % t-intervals when seeds > 1.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from .atomic import atomic_path
from .report import with_description
from .robustness import mean_interval

log = logging.getLogger("pipeline_py")
MARKERS = {"base": "s", "oracle": "*", "unlearn": "o", "undo": "^", "unlearn+distill": "D", "oracle_match": "P"}
REFERENCES = ("base", "oracle")


def _pyplot():
    """matplotlib, imported only when a figure is drawn (the other stages import the package too)."""
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
    if r.kind == "oracle_match":
        return "oracle → random init" if r.alpha == 1.0 else "oracle → base"
    return {"unlearn": "unlearn only", "unlearn+distill": "unlearn+distill (fresh)"}.get(r.kind, r.kind)


def _limits(metric: str):
    return (-0.02, 1.02) if metric.startswith("acc") else None


def _direction(higher_is_better: bool) -> str:
    return "lower is better" if higher_is_better else "higher is better"


def plot_curves(worst: pd.DataFrame, out_png: str, forget_metric: str = "acc_forget") -> None:
    """Figure 1 from worst_case.csv: one panel per method with its models, the base and the oracle."""
    plt = _pyplot()
    methods = sorted(m for m in worst.method.dropna().unique() if m)
    ncols = min(4, max(1, len(methods)))
    nrows = -(-max(1, len(methods)) // ncols)  # panels in rows of at most four
    alone = ncols == 1  # legends off the curves: beside a lone panel, under each of several
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 2.0 * alone, (3.8 + 0.9 * (not alone)) * nrows),
                             squeeze=False, sharey=True)
    for ax in axes.flat[len(methods or [""]):]:
        ax.set_visible(False)
    for ax, method in zip(axes.flat, methods or [""]):
        sub = worst[(worst.method == method) | worst.model.isin(REFERENCES)]
        for model, g in sub.groupby("model"):
            stats = _band(g, forget_metric)
            r = g.iloc[0]
            color = "k" if model in REFERENCES else plt.cm.viridis(min(r.alpha, 1.0))
            ax.plot(stats.index, stats["mean"], ls={"base": "--", "oracle": ":"}.get(model, "-"), color=color,
                    marker=".", label=_label(r))  # a marker per evaluation: lines only join them
            ax.fill_between(stats.index, stats["mean"] - stats["ci"], stats["mean"] + stats["ci"], color=color,
                            alpha=0.15, lw=0)
        ax.set(title=method, xlabel="attack steps", ylabel=forget_metric, ylim=_limits(forget_metric))
        ax.legend(fontsize=7, **({"loc": "center left", "bbox_to_anchor": (1.02, 0.5)} if alone else
                                 {"loc": "upper center", "bbox_to_anchor": (0.5, -0.2), "ncol": 2}))
    fig.suptitle("relearning attack: worst case over the attacks at each evaluated step\n(dots; bands: 95 % "
                 "intervals over seeds)", fontsize=10)
    fig.tight_layout()
    _save(fig, out_png)


def _interval(values) -> tuple[float, float]:
    """Mean over seeds and the half-width of its 95 % t-interval, 0 for one seed (bars vanish, not mislead)."""
    mean, half = mean_interval(list(values))
    return mean, 0.0 if half != half else half


def _band(curve: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per step: the mean over seeds and its interval half-width (`_interval`)."""
    rows = {step: _interval(g[metric]) for step, g in curve.groupby("step")}
    return pd.DataFrame(list(rows.values()), columns=["mean", "ci"], index=list(rows))


def _means(summary: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean over seeds of every numeric column, and `<col>_ci`, its interval half-width (`_interval`)."""
    num = [c for c in summary.select_dtypes("number").columns if c not in by + ["seed"]]
    rows = []
    for key, g in summary.groupby(by):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for c in num:
            row[c], row[f"{c}_ci"] = _interval(g[c])
        rows.append(row)
    return with_description(pd.DataFrame(rows))


def _hollow(r) -> bool:
    """A student that did not reach its stop rule (in any seed) is drawn hollow."""
    rec = getattr(r, "recovered", float("nan"))
    return rec == rec and rec < 1


def _frontier(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """The points no other point beats on both axes: more retain and less forget capability (for a
    cross-entropy metric, direction flips on both), sorted by retain."""
    sign = 1 if higher_is_better else -1
    out = [p for p in points if not any(sign * (q[0] - p[0]) >= 0 and sign * (p[1] - q[1]) >= 0 and q != p
                                        for q in points)]
    return sorted(out)


def plot_pareto(summary: pd.DataFrame, out_png: str, forget_metric: str = "acc_forget",
                retain_metric: str = "acc_retain", higher_is_better: bool = True) -> None:
    """Figure 2 from summary.csv: x retain before the attack, y forget after the worst-case attack, one panel
    per budget; colour = unlearning method, marker = kind of model, α written beside UNDO points; the
    frontier of the models (dashed; a hollow one is left out); error bars are 95 % intervals over seeds; hollow =
    not recovered."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.transforms import offset_copy

    budgets = sorted(summary.budget.unique())
    width = 4.6 * len(budgets) + 1.8
    fig, axes = plt.subplots(1, len(budgets), figsize=(width, 4.4), squeeze=False, sharey=True)
    mean = _means(summary, ["model", "budget"])
    mean = mean[mean.kind != "oracle_match"]
    methods = sorted(m for m in mean.method.unique() if m)
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for ax, budget in zip(axes[0], budgets):
        at = mean[mean.budget == budget]
        for r in at.itertuples():
            color = colors.get(r.method, "k")
            ax.errorbar(r.retain_before, r.forget_attacked, xerr=r.retain_before_ci, yerr=r.forget_attacked_ci,
                        marker=MARKERS[r.kind], ms=7 if r.method else 10, color=color, ls="none", elinewidth=0.8,
                        mfc="none" if _hollow(r) else color)
        retain_direction = "higher is better" if higher_is_better else "lower is better"
        ax.set(title=f"after {budget} attack steps", xlabel=f"{retain_metric} before the attack ({retain_direction})",
               ylim=_limits(forget_metric))
        lo, hi = ax.get_ylim()
        right = offset_copy(ax.transData, fig=fig, x=5, y=-3, units="points")
        gap, placed = 0.045 * (hi - lo), lo + 0.03 * (hi - lo)  # the lowest label clear of the points on the floor
        for r in at[at.kind == "undo"].sort_values("forget_attacked").itertuples():
            y = max(r.forget_attacked, placed + gap)  # α right of its point, pushed up clear of the label below
            ax.text(r.retain_before, y, f"{r.alpha:g}", transform=right, fontsize=7, color=colors.get(r.method, "k"))
            placed = y
        kept = [(r.retain_before, r.forget_attacked) for r in at.itertuples() if not _hollow(r)]
        front = _frontier(kept, higher_is_better)  # through the models that reached their stop rules only
        if len(front) > 1:
            ax.plot(*zip(*front), ls="--", color="0.5", lw=1, zorder=0)
    axes[0][0].set_ylabel(f"{forget_metric} after the attack ({_direction(higher_is_better)})")
    handles = [Line2D([], [], marker="o", ls="none", color=c, label=m) for m, c in colors.items()]
    handles += [Line2D([], [], marker=MARKERS[k], ls="none", color="k", label=t) for k, t in (("base", "base"), ("oracle", "oracle"), ("unlearn", "unlearn only"),
                                             ("undo", "UNDO (α beside)"), ("unlearn+distill", "fresh-init student"))]
    handles += [Line2D([], [], ls="--", color="0.5", label="frontier (hollow left out)"),
                Line2D([], [], marker="^", ls="none", color="k", mfc="none", label="hollow: not recovered")]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / width, 1))
    _save(fig, out_png)


def plot_compute(summary: pd.DataFrame, out_png: str, forget_metric: str = "acc_forget",
                 higher_is_better: bool = True) -> None:
    """Figure 3 from summary.csv: forget after the longest attack vs the method's compute / oracle compute,
    one line per method through unlearn-only, its UNDO α points and Unlearn-and-Distill (α annotated;
    95 % intervals over seeds; hollow = not recovered)."""
    from matplotlib.transforms import offset_copy

    plt = _pyplot()
    last = summary[summary.budget == summary.budget.max()]
    mean = _means(last, ["model"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    groups = list(mean[mean.method != ""].groupby("method"))
    for i, (method, g) in enumerate(groups):
        g = g.sort_values("compute_fraction")
        color = plt.cm.tab10(i % 10)
        # methods dodged sideways by a few points: unlearn-only points share one compute value
        dodge = offset_copy(ax.transData, fig=fig, x=3.0 * (i - (len(groups) - 1) / 2), units="points")
        ax.plot(g.compute_fraction, g.forget_attacked, "-", color=color, label=method, transform=dodge)
        undo = 0
        for r in g.itertuples():
            ax.errorbar(r.compute_fraction, r.forget_attacked, yerr=r.forget_attacked_ci, marker=MARKERS[r.kind],
                        color=color, mfc="none" if _hollow(r) else color, ls="none", transform=dodge)
            if r.kind == "undo":  # α right of its point, above and below in turn: close points keep apart
                ax.annotate(f"α {r.alpha:g}", (r.compute_fraction, r.forget_attacked),
                            xytext=(7, 4 if undo % 2 == 0 else -11), textcoords="offset points", fontsize=7,
                            color=color)
                undo += 1
            elif r.kind == "unlearn+distill":  # left of its point, clear of the α labels
                ax.annotate("fresh", (r.compute_fraction, r.forget_attacked), xytext=(-7, 4), ha="right",
                            textcoords="offset points", fontsize=7, color=color)
    for model, ls in (("oracle", ":"), ("base", "--")):
        if model in set(mean.model):
            ax.axhline(mean.set_index("model").loc[model, "forget_attacked"], ls=ls, color="k",
                       label=f"{model} (after the attack)")
    xs = mean[mean.method != ""].compute_fraction.dropna()  # dodged artists set no data limits: set them here
    span = (xs.max() - xs.min()) or 1.0
    ax.set_xlim(xs.min() - 0.05 * span, xs.max() + 0.1 * span)
    ax.set(xlabel="compute of the method / oracle pretraining compute",
           ylabel=f"{forget_metric} after {int(last.budget.max())} attack steps ({_direction(higher_is_better)})",
           ylim=_limits(forget_metric), title="robustness vs compute (hollow: student not recovered)")
    ax.legend(fontsize=7)
    _save(fig, out_png)


def plot_oracle_match(summary: pd.DataFrame, worst: pd.DataFrame, out_png: str, forget_metric: str = "acc_forget",
                      retain_metric: str = "acc_retain") -> None:
    """Figure 4: before the attack the two oracle-matching students match the oracle (left); under the
    attack only the random-init student stays at the oracle's level (right)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    keep = list(REFERENCES) + sorted(worst[worst.kind == "oracle_match"].model.unique())
    if len(keep) == len(REFERENCES):
        for ax in (left, right):
            ax.text(0.5, 0.5, "oracle matching is not part of this configuration\n(oracle_match.inits is empty)",
                    ha="center", va="center", transform=ax.transAxes)
        _save(fig, out_png)
        return
    first = _means(summary[summary.budget == summary.budget.min()], ["model"]).set_index("model").loc[keep]
    # students whose retain fell short of the oracle's in some seed (distill's matched_within) say so
    unmatched = {r.model for r in first.reset_index().itertuples() if _hollow(r)}

    def label(r) -> str:
        return _label(r) + ("\n(retain not matched)" if r.model in unmatched else "")

    x = range(len(keep))
    for shift, metric, color in ((-0.2, "forget_before", "tab:red"), (0.2, "retain_before", "tab:blue")):
        left.bar([i + shift for i in x], first[metric], width=0.4, yerr=first[f"{metric}_ci"], color=color,
                 label=(forget_metric if metric.startswith("forget") else retain_metric) + " before the attack")
    left.set_xticks(list(x), [label(r) for r in first.reset_index().itertuples()], fontsize=7, rotation=15)
    left.set(title="outputs before the attack", ylim=_limits(forget_metric))
    left.legend(fontsize=7)
    for model in keep:
        g = worst[worst.model == model]
        stats = _band(g, forget_metric)
        line, = right.plot(stats.index, stats["mean"], marker=MARKERS[g.kind.iloc[0]], ms=4, label=label(g.iloc[0]),
                           ls={"base": "--", "oracle": ":"}.get(model, "-"), mfc="none" if model in unmatched else None)
        right.fill_between(stats.index, stats["mean"] - stats["ci"], stats["mean"] + stats["ci"],
                           color=line.get_color(), alpha=0.15, lw=0)
    right.set(title="relearning attack (worst case; bands: 95 % intervals)", xlabel="attack steps",
              ylabel=forget_metric, ylim=_limits(forget_metric))
    right.legend(fontsize=7)
    _save(fig, out_png)


def pareto_plot(summary: str, worst: str, curves_png: str, pareto_png: str, compute_png: str, match_png: str) -> None:
    """Stage: draw the four figures from summary.csv and worst_case.csv (which name the metrics)."""
    table, wc = pd.read_csv(summary, keep_default_na=False, na_values=[""]), pd.read_csv(worst, keep_default_na=False,
                                                                                          na_values=[""])
    table["method"], wc["method"] = table.method.fillna(""), wc.method.fillna("")
    forget_metric, retain_metric = table.forget_metric.iloc[0], table.retain_metric.iloc[0]
    higher_is_better = bool(table.higher_is_better.iloc[0])
    plot_curves(wc, curves_png, forget_metric)
    plot_pareto(table, pareto_png, forget_metric, retain_metric, higher_is_better)
    plot_compute(table, compute_png, forget_metric, higher_is_better)
    plot_oracle_match(table, wc, match_png, forget_metric, retain_metric)
    log.info("pareto_plot: figures written next to %s", curves_png)
