"""pipeline_py.study: model ids (parse and the parts they are built from), the models and checkpoints a config
asks for, and the result paths with `locate`, their inverse."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from pipeline_py import study
from pipeline_py.config import Study

REPO = Path(__file__).resolve().parents[1]
NAN = float("nan")


def default_study(**attack) -> Study:
    """config.yaml's study, with `attack` keys changed."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["attack"].update(attack)
    return Study.from_dict(cfg)


# id: (kind, method, alpha, beta, unlearn-only ancestor)
IDS = {
    "base": ("base", "", NAN, NAN, ""),
    "oracle": ("oracle", "", NAN, NAN, ""),
    "base/maxent": ("unlearn", "maxent", 0.0, NAN, "base/maxent"),
    "base/maxent/undo_a0.4_b0.1": ("undo", "maxent", 0.4, 0.1, "base/maxent"),
    "base/maxent/undo_fresh": ("unlearn+distill", "maxent", 1.0, NAN, "base/maxent"),
    "base/maxent/noised_a0.4_b0.1": ("noised", "maxent", 0.4, 0.1, "base/maxent"),
    "routed/era": ("unlearn", "era", 0.0, NAN, "routed/era"),
    "routed/era/undo_a0.5_b0.1": ("undo", "era", 0.5, 0.1, "routed/era"),
    "oracle/match_base": ("oracle_match", "", 0.0, NAN, ""),
    "oracle/match_fresh": ("oracle_match", "", 1.0, NAN, ""),
}


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("model_id", list(IDS))
def test_parse_reads_every_id_form(model_id):
    kind, method, alpha, beta, unlearned = IDS[model_id]
    m = study.parse(model_id)
    assert (m.id, m.kind, m.method, m.unlearned) == (model_id, kind, method, unlearned)
    assert same(m.alpha, alpha) and same(m.beta, beta), m
    assert m.is_student == (kind in ("undo", "unlearn+distill"))


@pytest.mark.parametrize("model_id", list(IDS))
def test_ids_round_trip_through_their_parts_and_paths(model_id):
    """An id rebuilt from its parts (root, method, student init) is the id; its checkpoint, curve and
    evaluation paths locate back to it."""
    parts = model_id.split("/")
    if len(parts) == 3:
        kind, _, init = parts[2].partition("_")
        assert study.init_name(*study.parse_init(init)) == init
        m = study.parse(model_id)
        alpha = None if init == "fresh" else m.alpha
        assert "/".join(parts[:2]) + f"/{kind}_{study.init_name(alpha, m.beta)}" == model_id
    root = "/tmp/results/arithmetic"
    assert study.locate("ckpt", study.ckpt(root, model_id, 3)) == {"seed": 3, "model": model_id}
    assert study.locate("evaluation", study.evaluation(root, model_id, 0)) == {"seed": 0, "model": model_id}
    assert study.curve(root, model_id, "mix", 11) == f"{root}/seed11/attack/{model_id}/mix.csv"
    for family in ("forget", "mix", "retain", "heldout", "quant"):
        assert study.locate("curve", study.curve(root, model_id, family, 11)) == {
            "seed": 11, "model": model_id, "family": family}
    assert study.parse(study.locate("ckpt", study.ckpt(root, model_id, 0))["model"]).id == model_id


def test_init_names():
    assert study.init_name(None) == "fresh" and study.parse_init("fresh") == (None, None)
    assert study.init_name(0.4, 0.1) == "a0.4_b0.1" and study.parse_init("a0.4_b0.1") == (0.4, 0.1)
    assert study.init_name(5e-05, 0.1) == "a5e-05_b0.1" and study.parse_init("a5e-05_b0.1") == (5e-05, 0.1)
    assert re.fullmatch(study.WILDCARDS["init"], "a5e-05_b0.1") and re.fullmatch(study.WILDCARDS["init"], "fresh")
    for bad in ("", "a0.4", "b0.1", "fresh_a0.4_b0.1", "a_b", "alpha0.4_b0.1"):
        with pytest.raises(ValueError, match="expected 'fresh' or 'a<alpha>_b<beta>'"):
            study.parse_init(bad)


BAD_IDS = ["", "foo", "Base", "base/a/b/c", "base/maxent/", "base/maxent/undo_", "base/maxent/undo_a0.4",
           "base/maxent/distill_fresh", "base/maxent/undo_fresh/x", "oracle/maxent", "oracle/match_oracle",
           "oracle/match_base/undo_fresh", "base/", "base//undo_fresh", "base/MaxEnt", "routed"]


@pytest.mark.parametrize("model_id", BAD_IDS)
def test_bad_ids_raise(model_id):
    with pytest.raises(ValueError, match=re.escape(repr(model_id)) + "|student init"):
        study.parse(model_id)


def test_default_config_models_and_checkpoints():
    s = default_study()
    models = study.models(s)
    assert len(models) == 10 and len(set(models)) == 10
    assert models[:2] == ["base", "oracle"]
    assert [m for m in models if study.parse(m).kind == "unlearn" and m.startswith("base/")] == [
        f"base/{m}" for m in s.unlearn.methods]
    assert {"base/maxent_sam", "base/maxent_repnoise"} <= set(models)  # the paper's robust-unlearning baselines
    assert study.undo_methods(s) == ["maxent"] and study.inits(s) == ["a0.2_b0.1", "a0.8_b0.1", "fresh"]
    assert "oracle/match_base" in models and "oracle/match_fresh" not in models
    assert not any(m.startswith("routed") for m in models)  # ERA is in configs/full.yaml, not the default
    for m in models:
        assert re.fullmatch(study.WILDCARDS["model"], m), m
        assert study.parse(m).kind != "noised", m
    ckpts = study.checkpoints(s)
    assert ckpts[:len(models)] == models
    noised = ckpts[len(models):]
    assert noised == [f"base/maxent/noised_{i}" for i in study.inits(s)]
    assert len(set(ckpts)) == len(ckpts)


def test_every_checkpoint_id_parses():
    """The compute ledger holds every checkpoint: each id must be one of the forms study.parse reads
    (oracle/noised_fresh, the oracle-matching fresh start, included)."""
    for m in study.checkpoints(default_study()):
        assert study.parse(m).id == m


def test_models_follow_the_config():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["noise"].update(methods=None, alphas=[0.5], fresh_init=False)
    cfg["unlearn"]["methods"] = ["maxent", "npo"]
    cfg["era"] = {"undo_alphas": [0.3]}  # config.yaml has none; the other keys keep their defaults
    cfg["oracle_match"]["inits"] = ["fresh"]
    s = Study.from_dict(cfg)
    assert study.undo_methods(s) == ["maxent", "npo"]  # null: every method
    assert study.models(s) == ["base", "oracle", "base/maxent", "base/npo", "base/maxent/undo_a0.5_b0.1",
                               "base/npo/undo_a0.5_b0.1", "routed/era", "routed/era/undo_a0.3_b0.1",
                               "oracle/match_fresh"]
    assert study.checkpoints(s)[9:] == ["base/maxent/noised_a0.5_b0.1", "base/npo/noised_a0.5_b0.1",
                                        "routed/era/noised_a0.3_b0.1", "oracle/noised_fresh"]
    cfg["era"], cfg["oracle_match"]["inits"] = None, []
    s = Study.from_dict(cfg)
    assert not any(m.startswith(("routed", "oracle/")) for m in study.checkpoints(s))


def test_paths_and_curves():
    s = default_study(families=["forget", "mix", "quant"])  # config.yaml's and the zero-step attack
    root = "res/arithmetic"
    assert study.seed_dir(root, 2) == "res/arithmetic/seed2"
    assert study.ckpt(root, "base/maxent", 0) == "res/arithmetic/seed0/models/base/maxent/model.safetensors"
    assert study.ckpt(root) == "res/arithmetic/seed{seed}/models/{model}/model.safetensors"  # rule templates
    assert study.curve(root) == "res/arithmetic/seed{seed}/attack/{model}/{family}.csv"  # the rule template
    assert study.curve(root, family="quant") == "res/arithmetic/seed{seed}/attack/{model}/quant.csv"
    curves = study.curves(root, s, 0, "base/maxent")
    assert s.attack.families == ["forget", "mix", "quant"]
    assert curves == [f"res/arithmetic/seed0/attack/base/maxent/{f}.csv" for f in s.attack.families]
    located = [study.locate("curve", c) for c in curves]
    assert located == [{"seed": 0, "model": "base/maxent", "family": f} for f in s.attack.families]
    # every finetuning family is a `relearn` job (the wildcard); quant is the `quantize` rule's own output
    for at in located:
        assert bool(re.fullmatch(study.WILDCARDS["family"], at["family"])) == (at["family"] != "quant"), at
    for family in ("forget", "mix", "retain", "heldout"):
        assert re.fullmatch(study.WILDCARDS["family"], family)
    assert not set(study.WILDCARDS) & {"lr", "aseed", "adata"}
    for old in ("res/arithmetic/seed0/attack/base/forget_lr0.001_s0.csv", "res/arithmetic/seed0/attack/base/.csv",
                "res/arithmetic/attack/base/forget.csv"):
        with pytest.raises(ValueError, match="unexpected curve path"):
            study.locate("curve", old)
    with pytest.raises(ValueError, match="unexpected ckpt path"):
        study.locate("ckpt", "res/arithmetic/seed0/models/base/other.safetensors")
    with pytest.raises(ValueError, match="unexpected evaluation path"):
        study.locate("evaluation", "res/arithmetic/eval/base.csv")
