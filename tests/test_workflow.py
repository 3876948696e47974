"""The Snakemake workflow: DAG of the tiny study, lint, config validation at DAG-build time, and (marker
`e2e`) a full tiny run with its outputs and the caching of a grown α grid."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import update_config

from pipeline_py import study
from pipeline_py.config import Study

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def snakemake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_snakemake(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(*args), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def output_of(proc) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def job_stats(text: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count} (without the total)."""
    lines = text[text.index("Job stats:"):].splitlines()[1:]
    counts = {}
    for line in lines:
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if m:
            if m.group(1) == "total":
                break
            counts[m.group(1)] = int(m.group(2))
    return counts


def scheduled_jobs(text: str) -> list[tuple[str, dict[str, str]]]:
    """Every job block of a dry run as (rule, wildcards)."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        wc = re.search(r"^\s*wildcards: (.*)$", block, re.M)
        pairs = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        jobs.append((m.group(1), pairs))
    return jobs


def job_outputs(text: str) -> list[tuple[str, str]]:
    """Every job block of a dry run as (rule, its output line)."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        out = re.search(r"^\s*output: (.*)$", block, re.M)
        if m and out:
            jobs.append((m.group(1), out.group(1)))
    return jobs


def finetuning(attack) -> list[str]:
    """The attack families that are relearn jobs (every family but the quantization attack)."""
    return [f for f in attack.families if f != "quant"]


def merged_config(*files: Path, **overrides) -> dict:
    """config.yaml with `files` merged over it as Snakemake merges --configfile files (a mapping merges key by
    key, a list or a value replaces), then the `--config` overrides."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    for f in files:
        update_config(cfg, yaml.safe_load(Path(f).read_text()) or {})
    update_config(cfg, overrides)
    return cfg


def tiny_config() -> dict:
    """The tiny study's whole config (configs/tiny.yaml over config.yaml)."""
    return merged_config(TINY)


def tiny_study() -> Study:
    return Study.from_dict(tiny_config())


def tiny_models() -> list[str]:
    """Model ids of the tiny study, as pipeline_py.study names them (attacked and evaluated)."""
    return study.models(tiny_study())


# ------------------------------------------------------------------------------------------ dry run


def test_dry_run_schedules_the_whole_tiny_study(tmp_path):
    """`snakemake -n pareto_plot` on the tiny config exits 0 and plans every job once."""
    proc = run_snakemake("-n", "--cores", "2", "pareto_plot", "--configfile", str(TINY),
                         "--config", f"results={tmp_path}")
    assert proc.returncode == 0, output_of(proc)
    s = tiny_study()
    n_methods, n_undo = len(s.unlearn.methods), len(study.undo_methods(s))
    n_inits = len(s.noise.alphas) + int(s.noise.fresh_init)
    assert n_methods == 7 and n_undo == 2 and n_inits == 2  # tiny.yaml runs the default's methods, UNDO on two of them
    models = tiny_models()
    n_models = len(models)
    n_match = len(s.oracle_match.inits)
    n_era = len(s.era.undo_alphas)  # ERA + UNDO students
    assert n_models == 2 + n_methods + n_undo * n_inits + n_match + 1 + n_era
    attack = s.attack
    n = len(s.seeds)  # 2: seed 1 copies seed 0's data and pretrained models (pretrain_seed 0)
    expected = {"make_data": 1, "pretrain": 1, "pretrain_oracle": 1, "pretrain_routed": 1,
                "share_data": n - 1, "share_model": 3 * (n - 1),
                "filter_data": n, "unlearn": n * n_methods, "ablate": n,
                # every student of one unlearned model in one job (distill.together); ERA's students one by one
                "noise": n * (n_undo * n_inits + n_era), "distill_students": n * n_undo, "distill": n * n_era,
                "oracle_fresh_init": n, "match_oracle": n * n_match,
                "relearn": n * n_models * len(finetuning(attack)), "quantize": n * n_models,
                "evaluate": n * n_models, "summarize": 1, "pareto_plot": 1}
    assert attack.families == ["forget", "mix", "retain", "heldout", "quant"]  # tiny.yaml runs every family
    assert job_stats(proc.stdout + proc.stderr) == expected, output_of(proc)
    jobs = scheduled_jobs(proc.stdout + proc.stderr)
    evaluated = {wc["model"] for rule, wc in jobs if rule == "evaluate"}
    assert evaluated == set(models)
    assert all(re.fullmatch(study.WILDCARDS["model"], m) for m in evaluated)
    # one relearn job per model and finetuning family (every LR x attack seed inside), one quantize job per
    # model; their outputs are the curve files pipeline_py.study names
    runs = [(wc["model"], wc["family"]) for rule, wc in jobs if rule == "relearn"]
    assert sorted(runs) == sorted([(m, f) for m in models for f in finetuning(attack)] * n)
    assert not any({"lr", "aseed", "adata"} & set(wc) for _, wc in jobs)
    assert sorted(wc["model"] for rule, wc in jobs if rule == "quantize") == sorted(models * n)
    root = f"{tmp_path}/{s.setting}"
    outputs = {(rule, out) for rule, out in job_outputs(proc.stdout + proc.stderr) if rule in ("relearn", "quantize")}
    assert outputs == {("quantize" if c.endswith("/quant.csv") else "relearn", c)
                       for seed in s.seeds for m in models for c in study.curves(root, s, seed, m)}
    # the ledger's checkpoints: the models and the noised starts, each written by exactly one job
    noised = {f"{wc['root']}/{wc['method']}/noised_{wc['init']}" for rule, wc in jobs if rule == "noise"}
    assert noised | {"oracle/noised_fresh"} == set(study.checkpoints(s)) - set(models)
    assert not any(tmp_path.iterdir()), "a dry run must not write outputs"


# ------------------------------------------------------------------- bad configs fail at DAG build

BAD_CONFIGS = {  # id: (YAML merged over configs/tiny.yaml, texts that must appear in the error output:
    # the key path, the bad value, what is allowed). The JSON schema (generated from pipeline_py/config.py)
    # answers first, in Snakemake's words; the checks across keys come from pipeline_py.config.Study.
    "alpha_above_one": ("noise: {alphas: [1.5]}", ["alphas", "1.5", "maximum of 1"]),
    "unknown_top_level_key": ("bogus_key: 1", ["bogus_key", "Additional properties are not allowed"]),
    "undo_of_a_missing_method": ("noise: {methods: [maxent, ascent]}", ["noise.methods", "ascent", "allowed"]),
    "unknown_nested_key": ("distill: {stepz: 5}", ["distill", "stepz", "Additional properties are not allowed"]),
    "wrong_type": ("pretrain: {steps: many}", ["['pretrain']['steps']", "many", "is not of type 'integer'"]),
    "unknown_setting": ("setting: chess", ["['setting']", "chess", "['arithmetic', 'language', 'wmdp']"]),
    "setting_without_its_data": ("setting: language", ["language", "is a required property"]),
    "unknown_method": ("unlearn: {methods: [nope], hparams: {nope: {}}}",
                       ["unlearn.hparams.nope", "nope", "available"]),
    "method_without_hparams": ("unlearn: {methods: [maxent, sneaky]}",
                               ["unlearn.methods", "sneaky", "no entry in unlearn.hparams"]),
    "zero_pretrain_steps": ("pretrain: {steps: 0, lr: 3.0e-3}", ["pretrain", "steps", "minimum of 0"]),
    "negative_save_every": ("pretrain: {save_every: -1}", ["['pretrain']['save_every']", "-1", "minimum of 0"]),
    "empty_attack_lrs": ("attack: {lrs: []}", ["attack", "lrs", "[]", "non-empty"]),
    "unknown_attack_family": ("attack: {families: [forget, poison]}",
                              ["['attack']['families']", "poison", "['forget', 'mix', 'retain', 'heldout', 'quant']"]),
    "old_attack_data_key": ("attack: {data: [forget, mix]}",  # attack.families replaced it
                            ["['attack']", "'data' was unexpected", "Additional properties are not allowed"]),
    "unknown_quant_bits": ("attack: {quant_bits: [8, 16]}", ["['attack']['quant_bits']", "16", "[2, 3, 4, 8]"]),
    "heldout_fraction_one": ("attack: {heldout_fraction: 1.0}", ["heldout_fraction", "1.0", "maximum of 1"]),
    "mix_fraction_one": ("attack: {mix_forget_fraction: 1.0}", ["mix_forget_fraction", "1.0", "maximum of 1"]),
    "unknown_oracle_match_init": ("oracle_match: {inits: [oracle]}", ["['oracle_match']['inits']", "oracle",
                                                                      "['base', 'fresh']"]),
    "unknown_method_hyperparameter": ("unlearn: {hparams: {maxent: {temperature: 2.0}}}",
                                      ["unlearn.hparams.maxent", "temperature"]),
    "negative_beta": ("noise: {beta: -0.2}", ["beta", "-0.2", "minimum of 0"]),
    # combinations each valid alone, impossible together (checked by Study.check and the sections' check())
    "heads_do_not_divide_width": ("model: {d_model: 30, n_heads: 4}", ["model.d_model", "30",
                                                                       "divisible by n_heads = 4"]),
    "sequence_longer_than_context": ("attack: {seq_len: 128}", ["attack.seq_len", "128", "model.max_len = 64",
                                                                "at most"]),
    "budget_beyond_attack": ("report: {budgets: [0, 50]}", ["report.budgets", "[50]", "attack.steps = 10",
                                                            "exceed"]),
    "era_layer_beyond_model": ("era: {layers: [0, 2]}", ["era.layers", "[2]", "model.n_layers = 2"]),
    "era_unknown_key": ("era: {layers: [0], bogus_routing: 1}", ["era", "bogus_routing"]),
}


# Configs the schema accepts and the workflow must plan (id: YAML layered over configs/tiny.yaml).
EDGE_CONFIGS = {
    "tiny_alpha": "noise: {alphas: [0.00005], beta: 0.1, fresh_init: false}",  # str(5e-05) is '5e-05'
    # a list replaces config.yaml's; the hparams of the methods left out stay (merged) and are not run
    "one_method": "unlearn: {methods: [graddiff]}\nnoise: {methods: [graddiff]}",
}


@pytest.fixture(scope="module")
def config_dry_runs(tmp_path_factory):
    """Dry-run every bad and edge config at once (they are independent; this halves the wall time on 2 cores).
    Returns {case: (results dir, CompletedProcess)}."""
    root = tmp_path_factory.mktemp("configs")
    cases = {**{k: text for k, (text, _) in BAD_CONFIGS.items()}, **EDGE_CONFIGS}
    procs = {}
    for case, text in cases.items():
        (root / f"{case}.yaml").write_text(text + "\n")
        results = root / f"results_{case}"
        procs[case] = (results, subprocess.Popen(
            snakemake_cmd("-n", "--cores", "2", "pareto_plot", "--configfile", str(TINY), str(root / f"{case}.yaml"),
                          "--config", f"results={results}"),
            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = {}
    for case, (results, p) in procs.items():
        out, err = p.communicate(timeout=300)
        done[case] = (results, subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_fails_at_dag_build_naming_the_key(config_dry_runs, case):
    """Non-zero exit, the offending key/value in the message, no job planned and nothing written."""
    results, proc = config_dry_runs[case]
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, output_of(proc)
    for needle in BAD_CONFIGS[case][1]:
        assert needle in text, f"{needle!r} not in the error output\n{output_of(proc)}"
    assert "Job stats" not in text, output_of(proc)
    assert not results.exists()


def test_small_alpha_accepted_by_the_schema_builds_the_dag(config_dry_runs):
    _, proc = config_dry_runs["tiny_alpha"]
    assert proc.returncode == 0, output_of(proc)
    text = proc.stdout + proc.stderr
    inits = {wc["init"] for rule, wc in scheduled_jobs(text) if rule == "noise" and wc["root"] == "base"}
    assert inits == {"a5e-05_b0.1"}, output_of(proc)


def test_a_method_list_replaces_the_default_one(config_dry_runs):
    """`unlearn.methods` in a --configfile replaces config.yaml's list (lists are not merged)."""
    _, proc = config_dry_runs["one_method"]
    assert proc.returncode == 0, output_of(proc)
    text = proc.stdout + proc.stderr
    assert {wc["method"] for rule, wc in scheduled_jobs(text) if rule == "unlearn"} == {"graddiff"}
    assert {wc["method"] for rule, wc in scheduled_jobs(text) if rule == "distill_students"} == {"graddiff"}


def test_lint_is_clean():
    """`snakemake --lint` exits 0."""
    proc = run_snakemake("--lint")
    assert proc.returncode == 0, output_of(proc)


# ------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory):
    """The whole tiny study, run once for this module."""
    results = tmp_path_factory.mktemp("e2e_results")
    proc = run_snakemake("--cores", "2", "pareto_plot", "--configfile", str(TINY), "--config", f"results={results}",
                         timeout=1800)
    assert proc.returncode == 0, output_of(proc)[-20000:]
    return results


@pytest.mark.e2e
def test_e2e_summary_table(e2e_run):
    """summary.csv: one row per model x budget, finite accuracies in [0, 1], positive compute, oracle = 1;
    models.csv one row per model; the ledger lists every checkpoint with positive FLOPs for trained ones."""
    cfg = tiny_study()
    summary = pd.read_csv(e2e_run / "arithmetic" / "summary.csv")  # results/<setting>/summary.csv
    expected = {(m, b) for m in tiny_models() for b in cfg.report.budgets}
    assert len(summary) == len(expected) * len(cfg.seeds)
    assert set(zip(summary.model, summary.budget)) == expected
    for col in ("forget_attacked", "retain_before", "compute_fraction"):
        assert summary[col].map(math.isfinite).all(), col
    for col in ("forget_attacked", "retain_before", "forget_before", "retain_attacked", "labeled_fraction"):
        assert summary[col].between(0, 1).all(), col
    assert (summary.compute_fraction > 0).all()
    assert (summary[summary.model == "oracle"].compute_fraction == 1.0).all()
    assert (summary.attack_step <= summary.budget).all()
    quant = {f"quant{b}" for b in cfg.attack.quant_bits}  # the quantization attack's runs: lr 0, any budget
    assert set(summary.worst_lr) <= set(cfg.attack.lrs) | {0.0}
    assert set(summary.worst_data) <= set(finetuning(cfg.attack)) | quant
    assert (summary[summary.worst_data.isin(quant)].worst_lr == 0.0).all()
    assert (summary[summary.model.str.startswith("oracle")].labeled_fraction == 1.0).all()
    models = pd.read_csv(e2e_run / "arithmetic" / "models.csv")
    assert sorted(models.model) == sorted(tiny_models() * len(cfg.seeds))
    ledger = pd.read_csv(e2e_run / "arithmetic" / "compute.csv")
    ledger = ledger[ledger.seed == cfg.seeds[0]].set_index("model")
    assert sorted(ledger.index) == sorted(study.checkpoints(cfg))  # every checkpoint, noised starts included
    trained = ledger[ledger.stage != "noise"]
    assert (trained.flops > 0).all() and (ledger.lineage_flops >= ledger.flops).all()
    assert ledger.loc["oracle/match_base", "lineage_flops"] == (
        ledger.loc["oracle/match_base", "flops"] + ledger.loc["base", "flops"] + ledger.loc["oracle", "flops"])


@pytest.mark.e2e
def test_e2e_attack_curves_and_family_table(e2e_run):
    """One curve file per model and family: a finetuning family's holds every LR x attack seed, evaluated at
    every eval_every steps from 0; quant.csv holds one step-0 run per bit width. families.csv holds every
    model's families, the worst over them (the max of the family rows: accuracies) and the family that
    decided it; families.md has a row per model."""
    cfg = tiny_study()
    a, root, models = cfg.attack, e2e_run / "arithmetic", tiny_models()
    steps = list(range(0, a.steps + 1, a.eval_every))
    assert steps == [0, 5, 10]
    for m in models:
        paths = study.curves(str(root), cfg, 0, m)
        assert [study.locate("curve", p)["family"] for p in paths] == a.families
        for path in paths:
            family = study.locate("curve", path)["family"]
            df = pd.read_csv(path)
            assert list(df.columns) == ["step", "metric", "value", "lr", "seed", "data"], path
            assert df.value.map(math.isfinite).all(), path
            metrics = df.groupby(["data", "lr", "seed", "step"]).metric.apply(frozenset)
            assert len(set(metrics)) == 1 and {"acc_forget", "acc_retain"} <= next(iter(set(metrics))), path
            if family == "quant":
                assert sorted(set(df.data)) == sorted(f"quant{b}" for b in a.quant_bits), path
                assert set(df.step) == {0} and set(df.lr) == {0.0} and set(df.seed) == {0}, path
                assert len(metrics) == len(a.quant_bits)
            else:
                assert set(df.data) == {family}, path
                runs = df.groupby(["lr", "seed"]).step.apply(lambda x: sorted(set(x))).to_dict()
                assert runs == {(lr, seed): steps for lr in a.lrs for seed in a.seeds}, path
    families = pd.read_csv(root / "families.csv")
    assert set(families.n_seeds) == {len(cfg.seeds)} and set(families.forget_metric) == {"acc_forget"}
    per_run = [f for f in a.families if f != "quant"] + [f"quant{b}" for b in a.quant_bits]
    rows = set(zip(families.model, families.family))
    assert {(m, f) for m in models for f in per_run + ["worst"]} <= rows
    assert rows <= {(m, f) for m in models for f in per_run + ["worst", "worst_kept"]}
    assert len(rows) == len(families)
    for m, g in families.groupby("model"):
        by = g.set_index("family")
        # per seed: each family's worst run at the last step (acc_forget averaged over attack seeds), the max
        # over families; then the mean over seeds
        finals = []
        for s in cfg.seeds:
            df = pd.concat(pd.read_csv(p) for p in study.curves(str(root), cfg, s, m))
            df = df[(df.metric == "acc_forget") & ((df.step == a.steps) | df.data.str.startswith("quant"))]
            per_family = df.groupby(["data", "lr"]).value.mean().groupby("data").max()
            finals.append(per_family)
        assert set(by.loc["worst", "decided_by"].split("/")) <= set(per_run), m
        assert by.loc["worst", "forget"] == pytest.approx(sum(f.max() for f in finals) / len(finals)), m
        for family in per_run:
            assert by.loc[family, "forget"] == pytest.approx(sum(f[family] for f in finals) / len(finals)), (m, family)
        assert by.forget.between(0, 1).all(), m
    md = (root / "families.md").read_text()
    assert all(any(line.startswith(f"| {m} ") for line in md.splitlines()) for m in models)


@pytest.mark.e2e
def test_e2e_seeds_share_one_pretraining(e2e_run):
    """With pretrain_seed, seed 1 holds seed 0's data and pretrained models byte for byte (copies: pretraining
    ran once), while its unlearning and attacks are its own."""
    cfg = tiny_study()
    assert cfg.pretrain_seed == 0 and cfg.seeds == [0, 1]
    a, b = (e2e_run / "arithmetic" / f"seed{s}" for s in cfg.seeds)
    for f in ("data/train.jsonl", "data/eval.jsonl", "data/attack.jsonl", "models/base/model.safetensors",
              "models/oracle/model.safetensors", "models/routed/routed.safetensors"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert not (b / "logs" / "pretrain.log").exists() and (b / "logs" / "share_data.log").exists()
    assert (a / "models/base/maxent/model.safetensors").read_bytes() != (b / "models/base/maxent/model.safetensors").read_bytes()
    forget = [pd.read_csv(d / "attack" / "base" / "forget.csv") for d in (a, b)]
    assert not forget[0].value.equals(forget[1].value)  # the same base, attacked with other draws


@pytest.mark.e2e
def test_e2e_figures_exist_as_png_and_pdf(e2e_run):
    figures = e2e_run / "arithmetic" / "figures"
    for name in ("relearning_curves", "pareto", "robustness_vs_compute", "oracle_matching"):
        png, pdf = (figures / f"{name}.png").read_bytes(), (figures / f"{name}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 1000, name
        assert pdf.startswith(b"%PDF") and len(pdf) > 1000, name


@pytest.mark.e2e
def test_e2e_adding_an_alpha_reruns_its_teachers_students(e2e_run, tmp_path):
    """With one more α, a dry run over the same results plans no make_data, filter_data, pretrain or unlearn.
    With distill.together (the default) a teacher's students are one job: each method of noise.methods gets
    the new α's noise job and one distill_students job, and every student of it is attacked again."""
    cfg = tiny_study()
    old, new = list(cfg.noise.alphas), 0.7
    assert new not in old
    grouped = tmp_path / "more_alphas.yaml"
    grouped.write_text(yaml.safe_dump({"noise": {"alphas": [*old, new]}}))
    methods = study.undo_methods(cfg)
    families = len(study.curves("r", cfg, 0, "base"))  # one curve file per family; quant is its own rule
    assert families == len(cfg.attack.families) == len(finetuning(cfg.attack)) + 1
    n = len(methods) * len(cfg.seeds)
    grown = Study.from_dict(merged_config(TINY, grouped))
    students = len(study.inits(grown))

    proc = run_snakemake("-n", "--cores", "2", "pareto_plot", "--configfile", str(TINY), str(grouped),
                         "--config", f"results={e2e_run}")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, output_of(proc)
    assert job_stats(text) == {
        "noise": n, "distill_students": n, "relearn": n * students * (families - 1), "quantize": n * students,
        "evaluate": n * students, "summarize": 1, "pareto_plot": 1}, output_of(proc)

    init = study.init_name(new, cfg.noise.beta)
    new_models = set(study.models(grown)) - set(tiny_models())
    assert new_models == {f"base/{m}/undo_{init}" for m in methods}
    students_of = {f"base/{m}/undo_{i}" for m in methods for i in study.inits(grown)}  # the rerun groups
    jobs = scheduled_jobs(text)
    for rule, wc in jobs:
        if rule == "noise":
            assert wc["init"] == init, (rule, wc)
        elif rule in ("relearn", "quantize", "evaluate"):
            assert wc["model"] in students_of, (rule, wc)
        else:
            assert rule in ("distill_students", "summarize", "pareto_plot"), (rule, wc)
    assert {wc["model"] for rule, wc in jobs if rule == "evaluate"} == students_of


@pytest.mark.e2e
def test_e2e_dropping_an_attack_family_reruns_only_the_tables(e2e_run, tmp_path):
    """Each attack job is given only its own family, so a study with fewer families plans no attack, training
    or evaluation job over the tiny run's results: only the tables and figures are redone."""
    fewer = tmp_path / "fewer_families.yaml"
    fewer.write_text(yaml.safe_dump({"attack": {"families": ["forget", "quant"]}}))
    proc = run_snakemake("-n", "--cores", "2", "pareto_plot", "--configfile", str(TINY), str(fewer),
                         "--config", f"results={e2e_run}")
    assert proc.returncode == 0, output_of(proc)
    assert job_stats(proc.stdout + proc.stderr) == {"summarize": 1, "pareto_plot": 1}, output_of(proc)


@pytest.mark.e2e
def test_e2e_html_report_holds_every_figure_with_its_caption(e2e_run, tmp_path):
    """`snakemake --report report.html` after the tiny run: one self-contained HTML file that embeds the
    four figures and the caption of each."""
    out = tmp_path / "report.html"
    proc = run_snakemake("--cores", "2", "--report", str(out), "pareto_plot", "--configfile", str(TINY),
                         "--config", f"results={e2e_run}")
    assert proc.returncode == 0, output_of(proc)
    html = out.read_text()
    for name in ("relearning_curves.png", "pareto.png", "robustness_vs_compute.png", "oracle_matching.png"):
        assert name in html, name
    for caption in sorted((REPO / "workflow" / "report").glob("*.rst")):
        words = " ".join(caption.read_text().split()[:4])
        assert words in html or words.replace("``", "") in html, caption.name


@pytest.mark.e2e
def test_e2e_adding_an_era_alpha_reruns_only_its_student(e2e_run, tmp_path):
    """One more ERA + UNDO α plans only that student's noise, distill, attacks, evaluation and pareto_plot:
    the routed pretraining and the ablation are not redone."""
    cfg = tiny_study()
    extra = tmp_path / "more_era_alphas.yaml"
    extra.write_text(yaml.safe_dump({"era": {"undo_alphas": [*cfg.era.undo_alphas, 0.3]}}))
    proc = run_snakemake("-n", "--cores", "2", "pareto_plot", "--configfile", str(TINY), str(extra),
                         "--config", f"results={e2e_run}")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, output_of(proc)
    n = len(cfg.seeds)
    assert job_stats(text) == {"noise": n, "distill": n, "relearn": n * len(finetuning(cfg.attack)), "quantize": n,
                               "evaluate": n, "summarize": 1, "pareto_plot": 1}, output_of(proc)
    new = f"routed/era/undo_{study.init_name(0.3, cfg.noise.beta)}"
    assert set(study.models(Study.from_dict(merged_config(TINY, extra)))) - set(tiny_models()) == {new}
    assert {wc["model"] for rule, wc in scheduled_jobs(text) if rule == "evaluate"} == {new}
    assert sorted(wc["family"] for rule, wc in scheduled_jobs(text) if rule == "relearn") == sorted(
        finetuning(cfg.attack) * n)
