"""The models of a study: their ids, what each one is, where its files live, and which models a config asks for.

A model id is its lineage as a path under `models/`:

    base, oracle                        pretrained on all data / on retain data only
    base/{method}                       the base unlearned by a method (routed/era: ERA's ablated model)
    base/{method}/noised_{init}         a student's starting point (a checkpoint, not attacked)
    base/{method}/undo_{init}           the student distilled from base/{method}
    oracle/match_{start}                the oracle distilled into the base or a fresh init

where `init` is `a{alpha}_b{beta}` (shrink-and-perturb) or `fresh` (a random init: Unlearn-and-Distill).
This module is the only place that spells or parses these ids and paths: the rules, the report and the
tests ask it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

ROOTS = ("base", "oracle", "routed")


@dataclass(frozen=True)
class Model:
    """One model of a study, with the fields its id encodes."""

    id: str  # e.g. 'base/maxent/undo_a0.4_b0.1'
    kind: str  # 'base' | 'oracle' | 'unlearn' | 'noised' | 'undo' | 'unlearn+distill' | 'oracle_match'
    method: str = ""  # unlearning method ('' for base, oracle and oracle matching; 'era' for ERA)
    alpha: float = float("nan")  # noise strength of a student (0 unlearn-only, 1 fresh init, nan otherwise)
    beta: float = float("nan")  # noise scale of a shrink-and-perturb student

    @property
    def unlearned(self) -> str:
        """The id of the unlearn-only model this model descends from ('' for base, oracle, oracle matching)."""
        return "/".join(self.id.split("/")[:2]) if self.method else ""

    @property
    def is_student(self) -> bool:
        return self.kind in ("undo", "unlearn+distill")


def init_name(alpha: float | None, beta: float | None = None) -> str:
    """The `init` part of a student's id: 'a{alpha}_b{beta}', or 'fresh' when alpha is None."""
    return "fresh" if alpha is None else f"a{alpha}_b{beta}"


def parse_init(init: str) -> tuple[float | None, float | None]:
    """(alpha, beta) of an init name; (None, None) for 'fresh'."""
    if init == "fresh":
        return None, None
    m = re.fullmatch(r"a([0-9.e-]+)_b([0-9.e-]+)", init)
    if not m:
        raise ValueError(f"student init {init!r}: expected 'fresh' or 'a<alpha>_b<beta>'")
    return float(m.group(1)), float(m.group(2))


def parse(model_id: str) -> Model:
    """The model an id names; an id outside the scheme above raises ValueError."""
    parts = model_id.split("/")
    bad = ValueError(f"model id {model_id!r}: expected one of the forms in pipeline_py/study.py")
    if parts[0] not in ROOTS or len(parts) > 3 or (parts[0] == "routed") != (parts[1:2] == ["era"]):
        raise bad
    if len(parts) == 1:
        return Model(model_id, parts[0])
    if parts[0] == "oracle":
        if parts[1] == "noised_fresh" and len(parts) == 2:  # the fresh init the oracle is matched into
            return Model(model_id, "noised", alpha=1.0)
        start = parts[1].removeprefix("match_")
        if start not in ("base", "fresh") or len(parts) != 2:
            raise ValueError(f"model id {model_id!r}: the oracle's students are oracle/match_base, oracle/match_fresh")
        return Model(model_id, "oracle_match", alpha=1.0 if start == "fresh" else 0.0)
    method = parts[1]
    if not re.fullmatch(WILDCARDS["method"], method):
        raise bad
    if len(parts) == 2:
        return Model(model_id, "unlearn", method, alpha=0.0)
    kind, _, init = parts[2].partition("_")
    alpha, beta = parse_init(init)
    if kind not in ("undo", "noised"):
        raise ValueError(f"model id {model_id!r}: a student is undo_<init> or noised_<init>")
    if kind == "noised":
        return Model(model_id, "noised", method, 1.0 if alpha is None else alpha, beta if beta is not None else float("nan"))
    if alpha is None:
        return Model(model_id, "unlearn+distill", method, alpha=1.0)
    return Model(model_id, "undo", method, alpha, beta)


# ------------------------------------------------------------------ the models a config asks for

def inits(study) -> list[str]:
    """Student inits of each distilled method: every alpha, then a fresh init."""
    return [init_name(a, study.noise.beta) for a in study.noise.alphas] + (["fresh"] if study.noise.fresh_init else [])


def undo_methods(study) -> list[str]:
    """Unlearned models distilled into students (every method unless noise.methods names some)."""
    return list(study.noise.methods or study.unlearn.methods)


def match_starts(study) -> list[str]:
    return list(study.oracle_match.inits) if study.oracle else []


def models(study) -> list[str]:
    """Every model that is attacked and evaluated."""
    out = ["base", "oracle"] if study.oracle else ["base"]
    out += [f"base/{m}" for m in study.unlearn.methods]
    out += [f"base/{m}/undo_{i}" for m in undo_methods(study) for i in inits(study)]
    if study.era is not None:  # ERA's ablated model and its UNDO students
        out += ["routed/era"] + [f"routed/era/undo_{init_name(a, study.noise.beta)}" for a in study.era.undo_alphas]
    return out + [f"oracle/match_{s}" for s in match_starts(study)]


def checkpoints(study) -> list[str]:
    """Every checkpoint the study writes (the compute ledger lists them all): the models and the noised starts."""
    noised = [f"base/{m}/noised_{i}" for m in undo_methods(study) for i in inits(study)]
    if study.era is not None:
        noised += [f"routed/era/noised_{init_name(a, study.noise.beta)}" for a in study.era.undo_alphas]
    return models(study) + noised + (["oracle/noised_fresh"] if "fresh" in match_starts(study) else [])


# ------------------------------------------------------------------ where their files live

def seed_dir(root: str, seed="{seed}") -> str:
    """One seed's data, models, attacks and metrics under the setting's root (`<results>/<setting>`)."""
    return f"{root}/seed{seed}"


def ckpt(root: str, model="{model}", seed="{seed}") -> str:
    return f"{seed_dir(root, seed)}/models/{model}/model.safetensors"


def curve(root: str, model="{model}", family="{family}", seed="{seed}") -> str:
    """The curves of one attack family on a model: every learning rate and attack seed (or bit width)."""
    return f"{seed_dir(root, seed)}/attack/{model}/{family}.csv"


def evaluation(root: str, model="{model}", seed="{seed}") -> str:
    return f"{seed_dir(root, seed)}/eval/{model}.csv"


def curves(root: str, study, seed, model: str) -> list[str]:
    """The attack curves of a model: one file per attack family."""
    return [curve(root, model, f, seed) for f in study.attack.families]


_PATHS = {  # what a result path says: its seed, model id and, for a curve, the run
    "ckpt": re.compile(r".*/seed(?P<seed>\d+)/models/(?P<model>.+)/model\.safetensors"),
    "curve": re.compile(r".*/seed(?P<seed>\d+)/attack/(?P<model>.+)/(?P<family>[a-z]+)\.csv"),
    "evaluation": re.compile(r".*/seed(?P<seed>\d+)/eval/(?P<model>.+)\.csv"),
}


def locate(kind: str, path: str) -> dict:
    """The seed and model id (and a curve's attack family) of a result path written by this scheme."""
    m = _PATHS[kind].fullmatch(str(path))
    if not m:
        raise ValueError(f"unexpected {kind} path {path}: expected {_PATHS[kind].pattern}")
    out = m.groupdict()
    out["seed"] = int(out["seed"])
    return out


WILDCARDS = {  # Snakemake wildcard constraints of the paths above
    "seed": r"\d+",
    "root": r"base|routed",
    "method": r"[a-z][a-z0-9_]*",
    "init": r"a[0-9.e-]+_b[0-9.e-]+|fresh",
    "family": r"forget|mix|retain|heldout",
    "start": r"base|fresh",
    "model": r"(base|oracle|routed)(/[a-z][a-z0-9_]*(/undo_(a[0-9.e-]+_b[0-9.e-]+|fresh))?)?",
}
