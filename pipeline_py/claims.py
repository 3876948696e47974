"""The paper's claims, checked against a study's own results: one row per claim with its verdict and the
numbers behind it, written by `summarize` as claims.csv and claims.md.

Every comparison is decided by 95 % t-intervals over seeds (pipeline_py.robustness.mean_interval), never by
one run's digits: `reproduced` when the intervals say so, `not reproduced` when they say the opposite, and
`unresolved` when they cannot tell, when a student in the comparison did not reach its stop rule, or when
the study lacks the models (the evidence says which). With one seed no interval is known, so every
comparison is unresolved.

The claims (Lee et al. 2025, "Distillation Robustifies Unlearning"), with "relearned" the forget metric after
the whole worst-case attack and "more robust" meaning less forget capability after it:
  a. unlearn-only methods relearn to near the base's level (within `near` of it);
  b. Unlearn-and-Distill into a fresh init is about as robust as the oracle (intervals overlap, or better);
  c. robustness rises with α (the strongest α more robust than the weakest), and compute with it;
  d. UNDO at its strongest α matches the oracle's relearned forget within the interval, with less compute;
  e. oracle matching from the base reaches the oracle's outputs but not its robustness.
A relearned value names, in brackets, the attack family whose run decided the worst case. Where models.csv has
`forget_final_kept` (the worst case over only the attack runs that kept retain within 5 points of its start),
the evidence gives it too as "kept"; the verdicts use the unconstrained worst case.
"""
from __future__ import annotations

import math

import pandas as pd

from .robustness import mean_interval

VERDICTS = ("reproduced", "not reproduced", "unresolved")


class Stat:
    """Mean and 95 % interval over seeds of one model's column."""

    def __init__(self, values: list[float], higher_is_better: bool = True, by: str = ""):
        self.mean, self.half = mean_interval(values)
        self.n, self.sign = len(values), 1 if higher_is_better else -1
        self.by = by  # the attack family that decided a relearned value

    @property
    def known(self) -> bool:
        return not math.isnan(self.half)

    def lo(self) -> float:
        return self.mean - self.half

    def hi(self) -> float:
        return self.mean + self.half

    def __str__(self) -> str:
        return (f"{self.mean:.3f}" + (f" ± {self.half:.3f}" if self.known else " (one seed)")
                + (f" [{self.by}]" if self.by else ""))


def less_capable(a: Stat, b: Stat) -> str:
    """'yes' when a's interval lies wholly on the less-capable side of b's, 'no' when wholly on the more-capable
    side, 'overlap' otherwise or when an interval is unknown."""
    if not (a.known and b.known):
        return "overlap"
    a_lo, a_hi = sorted((a.sign * a.lo(), a.sign * a.hi()))
    b_lo, b_hi = sorted((b.sign * b.lo(), b.sign * b.hi()))
    return "yes" if a_hi < b_lo else "no" if a_lo > b_hi else "overlap"


def _stat(models: pd.DataFrame, model: str, col: str, hib: bool = True) -> Stat | None:
    g = models[models.model == model]
    if not len(g):
        return None
    by = "/".join(sorted(set(g.attack_family.dropna().astype(str)))) if col == "forget_final" and \
        "attack_family" in g else ""
    return Stat(g[col].tolist(), hib, by)


def _kept(models: pd.DataFrame, model: str, hib: bool = True) -> str:
    """'; kept <stat>': the utility-constrained relearned value of a model, when the table has it."""
    if "forget_final_kept" not in models:
        return ""
    g = models.loc[models.model == model, "forget_final_kept"].dropna()
    return f"; kept {Stat(g.tolist(), hib)}" if len(g) else ""


def _recovered(models: pd.DataFrame, model: str) -> bool:
    rec = models.loc[models.model == model, "recovered"] if "recovered" in models else pd.Series(dtype=float)
    return not (rec.notna() & (rec < 1)).any()


def check_claims(models: pd.DataFrame, higher_is_better: bool = True, near: float = 0.1) -> pd.DataFrame:
    """The claims table from models.csv's rows (one per seed x model: forget_final, forget_before,
    retain_before, compute_fraction, labeled_fraction, recovered)."""
    hib = higher_is_better
    rows = []

    def row(claim: str, verdict: str, evidence: str):
        assert verdict in VERDICTS
        rows.append({"claim": claim, "verdict": verdict, "evidence": evidence})

    base, oracle = _stat(models, "base", "forget_final", hib), _stat(models, "oracle", "forget_final", hib)
    unlearned = sorted(m for m in models.model.unique() if m.startswith("base/") and m.count("/") == 1)
    # (a) each unlearn-only model against the base less `near`
    if base is None or not unlearned:
        row("a", "unresolved", "the study has no base or no unlearn-only model")
    else:
        verdicts, parts = [], []
        for m in unlearned:
            s = _stat(models, m, "forget_final", hib)
            if not (s.known and base.known):
                v = "unresolved"
            else:
                gap = base.sign * (base.mean - s.mean)  # how far short of the base's level it stays
                v = "reproduced" if gap + s.half <= near else "not reproduced" if gap - s.half > near else "unresolved"
            verdicts.append(v)
            parts.append(f"{m}: {s}")
        verdict = ("reproduced" if all(v == "reproduced" for v in verdicts) else
                   "not reproduced" if any(v == "not reproduced" for v in verdicts) else "unresolved")
        row("a", verdict, f"relearned forget of the base {base} (near: within {near}); " + "; ".join(parts))
    # (b) fresh-init students against the oracle
    fresh = sorted(m for m in models.model.unique() if m.endswith("/undo_fresh"))
    if oracle is None or not fresh:
        row("b", "unresolved", "the study has no oracle or no fresh-init student")
    else:
        for m in fresh:
            s = _stat(models, m, "forget_final", hib)
            if not _recovered(models, m):
                row("b", "unresolved", f"{m} did not recover the teacher's retain (relearned {s}; oracle {oracle})")
                continue
            side = less_capable(oracle, s)  # 'yes': the oracle is clearly more robust than the student
            verdict = "not reproduced" if side == "yes" else "reproduced" if (s.known and oracle.known) else "unresolved"
            retain = _stat(models, m, "retain_before", hib)
            row("b", verdict, f"{m}: relearned {s}{_kept(models, m, hib)} (retain {retain}); oracle {oracle}"
                f"{_kept(models, 'oracle', hib)} (retain {_stat(models, 'oracle', 'retain_before', hib)})")
    # (c) and (d): per distilled method, its UNDO students ordered by alpha
    undo = models[models.kind == "undo"]
    if undo.empty:
        row("c", "unresolved", "the study has no UNDO students")
        row("d", "unresolved", "the study has no UNDO students")
    for method, g in undo.groupby("method"):
        alphas = sorted(g.alpha.unique())
        ids = {a: g[g.alpha == a].model.iloc[0] for a in alphas}
        weak, strong = ids[alphas[0]], ids[alphas[-1]]
        s_weak, s_strong = (_stat(models, i, "forget_final", hib) for i in (weak, strong))
        c_weak, c_strong = (_stat(models, i, "compute_fraction") for i in (weak, strong))
        flagged = [i for i in (weak, strong) if not _recovered(models, i)]
        side = less_capable(s_strong, s_weak)
        if flagged:
            verdict = "unresolved"
        elif len(alphas) < 2:
            verdict = "unresolved"
        else:
            verdict = ("reproduced" if side == "yes" and c_strong.mean >= c_weak.mean else
                       "not reproduced" if side == "no" or (s_strong.known and c_strong.mean < c_weak.mean) else
                       "unresolved")
        row("c", verdict, f"{method}: α {alphas[0]:g} relearned {s_weak} at compute {c_weak.mean:.3f}, α "
            f"{alphas[-1]:g} relearned {s_strong} at compute {c_strong.mean:.3f}"
            + (f"; not recovered: {flagged}" if flagged else ""))
        if oracle is None:
            row("d", "unresolved", f"{method}: the study has no oracle")
            continue
        labeled = _stat(models, strong, "labeled_fraction")
        o_side = less_capable(oracle, s_strong)
        if flagged or not (s_strong.known and oracle.known):
            verdict = "unresolved"
        else:
            verdict = "not reproduced" if o_side == "yes" or c_strong.mean >= 1 else "reproduced"
        row("d", verdict, f"{method} α {alphas[-1]:g}: relearned {s_strong}{_kept(models, strong, hib)}, oracle "
            f"{oracle}{_kept(models, 'oracle', hib)}; compute "
            f"{c_strong.mean:.3f} of the oracle's; labeled fraction {labeled.mean:.4f}"
            + (f"; not recovered: {flagged}" if flagged else ""))
    # (e) oracle matching from the base
    if oracle is None or "oracle/match_base" not in set(models.model):
        row("e", "unresolved", "the study has no oracle/match_base")
    else:
        m = "oracle/match_base"
        s, before = _stat(models, m, "forget_final", hib), _stat(models, m, "forget_before", hib)
        o_before = _stat(models, "oracle", "forget_before", hib)
        matched = less_capable(o_before, before) != "yes"  # before the attack it is no clearer at forget than the oracle
        robust = less_capable(oracle, s)  # 'yes': after the attack the oracle is clearly more robust
        retain_matched = _recovered(models, m)  # its retain came within the stop rule's margin of the oracle's
        if not (s.known and oracle.known and before.known and o_before.known) or not retain_matched:
            verdict = "unresolved"
        else:
            verdict = ("reproduced" if matched and robust == "yes" else
                       "not reproduced" if robust == "no" or not matched else "unresolved")
        row("e", verdict, f"{m}: forget before the attack {before} (oracle {o_before}); relearned {s}"
            f"{_kept(models, m, hib)} (oracle {oracle}{_kept(models, 'oracle', hib)})"
            + ("" if retain_matched else f"; retain not matched to the oracle's: ['{m}']"))
    return pd.DataFrame(rows)


CLAIMS = {
    "a": "unlearn-only methods relearn to near the base's level",
    "b": "Unlearn-and-Distill (fresh init) is about as robust as the oracle",
    "c": "robustness rises with α, and compute with it",
    "d": "UNDO at its strongest α matches the oracle's robustness with less compute",
    "e": "oracle matching from the base reaches the oracle's outputs but not its robustness",
}


def claims_markdown(table: pd.DataFrame, n_seeds: int) -> str:
    lines = [f"Claims of the UNDO paper on this study ({n_seeds} seed{'s' * (n_seeds != 1)}; 95 % t-intervals "
             "over seeds decide each verdict)", "", "| claim | verdict | evidence |", "|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| ({r.claim}) {CLAIMS[r.claim]} | **{r.verdict}** | {r.evidence} |")
    return "\n".join(lines) + "\n"
