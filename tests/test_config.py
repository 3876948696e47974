"""The config layer: the committed JSON schema is the one generated from pipeline_py/config.py, every shipped
config plans its study (dry run) with the expected number of jobs, `Study.from_dict` names the key path, the
value and what is allowed for bad values, and the `Section` machinery the sections are built on."""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline_py import study
from pipeline_py.config import Study
from pipeline_py.section import Section, json_schema, key

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
REGENERATE = "python -m pipeline_py.config > workflow/schemas/config.schema.yaml"


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


# ------------------------------------------------------------------------------------------ the schema


def test_committed_schema_is_the_generated_one():
    """workflow/schemas/config.schema.yaml is exactly what `python -m pipeline_py.config` writes."""
    proc = subprocess.run([sys.executable, "-m", "pipeline_py.config"], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == SCHEMA.read_text(), (
        f"{SCHEMA.relative_to(REPO)} is stale (pipeline_py/config.py or a section changed): regenerate it with "
        f"`{REGENERATE}` and commit it")


def test_schema_and_study_agree_on_the_shipped_default():
    """The generated schema accepts config.yaml and rejects what the typed sections reject."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    cfg = default_config()
    jsonschema.validate(cfg, schema)
    Study.from_dict(cfg)
    for path, value in ((("noise", "alphas"), [1.5]), (("attack", "steps"), 0), (("setting",), "chess"),
                        (("distill", "stepz"), 5), (("attack", "families"), ["forget", "poison"]),
                        (("attack", "data"), ["forget"]), (("attack", "quant_bits"), [16]),
                        (("attack", "heldout_fraction"), 1.0)):
        bad = copy.deepcopy(cfg)
        node = bad
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        with pytest.raises(ValueError, match=re.escape(".".join(path))):
            Study.from_dict(bad)


# ------------------------------------------------------------------------------------------ shipped configs


SHIPPED = {  # id: (--configfile files over config.yaml, jobs of `snakemake -n pareto_plot`)
    # per seed and model: one relearn job per finetuning family of attack.families (every LR x attack seed in
    # one process), one quantize job if 'quant' is listed, one evaluate job; plus the models' own jobs (one
    # distill job per seed for all students of an unlearned model, distill.together). With
    # pretrain_seed (config.yaml: 0) the other seeds copy its data and pretrained models (share_* jobs)
    "default": ([], 131),  # 3 seeds x 10 models x (forget, mix) = 60 relearn
    "full": (["configs/full.yaml"], 239),  # 3 x 15 models x (forget, mix + quant): 90 + 45
    "attacks": (["configs/attacks.yaml"], 221),  # 3 x 10 models x (4 finetuning families + quant): 120 + 30
    "tiny": (["configs/tiny.yaml"], 254),  # 2 x 17 models x (4 finetuning families + quant): 136 + 34
    "quick": (["configs/quick.yaml"], 45),  # 1 x 10 models x (forget, mix): 20
    "fig_compute": (["configs/fig_compute.yaml"], 143),  # 3 x 11 models x (forget, mix): 66
    "fig_oracle_match": (["configs/fig_oracle_match.yaml"], 71),  # 3 x 5 models x (forget, mix): 30
    "fig_pareto": (["configs/fig_pareto.yaml"], 155),  # 3 x 12 models x (forget, mix): 72
    "fig_relearning": (["configs/fig_relearning.yaml"], 83),  # 3 x 6 models x (forget, mix): 36
    "language": (["configs/language.yaml"], 36),  # 1 x 10 models x forget: 10
    "language_small": (["configs/language.yaml", "configs/language_small.yaml"], 30),  # 1 x 8 models x forget: 8
    # no model weights, corpora or network: planning (a dry run) does not load the sources
    "wmdp": (["configs/wmdp.yaml"], 21),  # 1 x 5 models x forget: 5
}
ATTACK_JOBS = {  # id: (evaluate, relearn, quantize jobs) of the comments above: seeds x models x families
    "default": (30, 60, 0), "full": (45, 90, 45), "attacks": (30, 120, 30), "quick": (10, 20, 0),
    "tiny": (34, 136, 34), "fig_compute": (33, 66, 0),
    "fig_oracle_match": (15, 30, 0), "fig_pareto": (36, 72, 0), "fig_relearning": (18, 36, 0),
    "language": (10, 10, 0), "language_small": (8, 8, 0), "wmdp": (5, 5, 0),
}
FAMILIES = {  # id: attack.families of the shipped config (merged over config.yaml)
    "default": ["forget", "mix"], "full": ["forget", "mix", "quant"],
    "attacks": ["forget", "mix", "retain", "heldout", "quant"],
    "tiny": ["forget", "mix", "retain", "heldout", "quant"], "fig_compute": ["forget", "mix"],
    "quick": ["forget", "mix"],
    "fig_oracle_match": ["forget", "mix"], "fig_pareto": ["forget", "mix"],
    "fig_relearning": ["forget", "mix"], "language": ["forget"], "language_small": ["forget"], "wmdp": ["forget"],
}


def merged_study(case: str) -> Study:
    """The shipped config `case` merged over config.yaml as Snakemake merges --configfile files."""
    from snakemake.utils import update_config

    cfg = default_config()
    for f in SHIPPED[case][0]:
        update_config(cfg, yaml.safe_load((REPO / f).read_text()))
    return Study.from_dict(cfg)


def job_counts(text: str) -> dict[str, int]:
    """rule -> jobs of a dry run's job stats (the 'total' row left out)."""
    m = re.search(r"^Job stats:\n.*\n-+ +-+\n((?:.*\n)*?)total\s+\d+\s*$", text, re.M)
    assert m, f"no job stats in the output:\n{text[-5000:]}"
    return {rule: int(n) for rule, n in (line.split() for line in m.group(1).splitlines() if line.strip())}


def total_jobs(text: str) -> int:
    """The 'total' row of a dry run's job stats."""
    m = re.search(r"^Job stats:\n(?:.*\n)*?total\s+(\d+)\s*$", text, re.M)
    assert m, f"no job stats in the output:\n{text[-5000:]}"
    return int(m.group(1))


def test_every_shipped_config_is_covered():
    covered = {f for files, _ in SHIPPED.values() for f in files}
    assert covered == {f"configs/{p.name}" for p in (REPO / "configs").glob("*.yaml")}


@pytest.mark.parametrize("case", list(SHIPPED))
def test_shipped_config_plans_its_study(case, tmp_path):
    """`snakemake -n pareto_plot` exits 0 and plans the expected number of jobs, writing nothing."""
    files, expected = SHIPPED[case]
    results = tmp_path / "results"
    args = ["--configfile", *files] if files else []
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "pareto_plot", *args,
                           "--config", f"results={results}"], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-5000:]
    assert total_jobs(text) == expected, text[-5000:]
    counts = job_counts(text)
    assert sum(counts.values()) == expected
    assert (counts["evaluate"], counts["relearn"], counts.get("quantize", 0)) == ATTACK_JOBS[case]
    s = merged_study(case)
    if s.pretrain_seed is not None:  # every other seed copies the data and the pretrained models
        others = len(set(s.seeds) - {s.pretrain_seed})
        assert (counts.get("share_data", 0), counts.get("share_model", 0)) == (
            others, others * (2 + (s.era is not None))), counts
        assert counts["make_data"] == counts.get("pretrain", 0) + counts.get("load_base", 0) == 1
    assert not results.exists(), "a dry run must not write outputs"


@pytest.mark.parametrize("case", list(SHIPPED))
def test_attack_jobs_follow_the_families(case):
    """The attack job counts above, reasoned from the config: per model one relearn job per finetuning family
    and one quantize job if 'quant' is listed."""
    s = merged_study(case)
    assert s.attack.families == FAMILIES[case]
    n_models = len(study.models(s))
    runs = n_models * len(s.seeds)
    finetuning = [f for f in s.attack.families if f != "quant"]
    assert ATTACK_JOBS[case] == (runs, runs * len(finetuning), runs * ("quant" in s.attack.families))
    assert len({c for m in study.models(s) for c in study.curves("r", s, 0, m)}) == n_models * len(s.attack.families)


@pytest.mark.parametrize("case", list(SHIPPED))
def test_shipped_config_builds_the_study(case):
    """Each shipped config (merged over config.yaml as Snakemake merges) passes the typed checks."""
    s = merged_study(case)
    assert s.setting == ("wmdp" if case == "wmdp" else "language" if case.startswith("language") else "arithmetic")
    assert s.data is getattr(s, s.setting) and s.data is not None
    assert Study.from_dict(s.to_dict()) == s


# ------------------------------------------------------------------------------------------ bad values


def bad(change) -> str:
    """The error of config.yaml changed by `change(cfg)`."""
    cfg = default_config()
    change(cfg)
    with pytest.raises(ValueError) as e:
        Study.from_dict(cfg)
    return str(e.value)


def test_value_out_of_range_names_path_value_and_range():
    msg = bad(lambda c: c["noise"].update(alphas=[1.5]))
    assert msg.startswith("noise.alphas = [1.5] is invalid: it must be")
    assert ">= 0" in msg and "<= 1" in msg


def test_unknown_key_names_it_and_the_allowed_keys():
    msg = bad(lambda c: c["distill"].update(stepz=5))
    assert msg.startswith("distill.stepz: unknown key; allowed keys of distill: [")
    assert "'steps'" in msg and "'stop_within'" in msg


def test_missing_key_is_named():
    msg = bad(lambda c: c["attack"].pop("steps"))
    assert msg == "attack.steps: missing key (required: ['steps'])"


def test_undo_method_must_be_a_method_of_the_study():
    msg = bad(lambda c: c["noise"].update(methods=["maxent", "ascent"]))
    assert msg.startswith("noise.methods = ['maxent', 'ascent'] is invalid")
    assert "['ascent']" in msg and f"allowed: {default_config()['unlearn']['methods']}" in msg


def test_unknown_method_in_hparams_is_named_with_the_available_ones():
    def change(c):
        c["unlearn"]["methods"].append("nope")
        c["unlearn"]["hparams"]["nope"] = {"steps": 5}

    msg = bad(change)
    assert "unlearn.hparams.nope" in msg and "unknown method 'nope'" in msg
    assert "available:" in msg and "'maxent'" in msg


def test_method_without_hparams_is_named():
    msg = bad(lambda c: c["unlearn"].update(methods=["maxent", "sneaky"]))
    assert msg.startswith("unlearn.methods = ['maxent', 'sneaky'] is invalid") and "['sneaky']" in msg
    assert "unlearn.hparams" in msg


def test_unknown_hyperparameter_is_named_with_the_method():
    msg = bad(lambda c: c["unlearn"]["hparams"]["maxent"].update(temperature=2.0))
    assert "unlearn.hparams.maxent" in msg and "temperature" in msg and "'retain_weight'" in msg


def test_sequence_longer_than_the_model_context():
    msg = bad(lambda c: c["attack"].update(seq_len=256))
    assert msg == ("attack.seq_len = 256 is invalid: it must be at most the model's context model.max_len = 128")


def test_budget_beyond_the_attack():
    msg = bad(lambda c: c["report"].update(budgets=[0, 500]))
    assert msg.startswith("report.budgets = [0, 500] is invalid") and "[500]" in msg and "attack.steps = 200" in msg


def test_budget_without_an_evaluation():
    """A budget between two evaluations would silently report the earlier one: refused, naming what is allowed."""
    msg = bad(lambda c: c["report"].update(budgets=[0, 50, 200]))
    assert msg == ("report.budgets = [0, 50, 200] is invalid: no evaluation falls on [50]; allowed: multiples of "
                   "attack.eval_every = 100, or attack.steps = 200")
    cfg = default_config()
    cfg["report"]["budgets"], cfg["attack"]["eval_every"] = [0, 50, 200], 50
    assert Study.from_dict(cfg).report.budgets == [0, 50, 200]


def test_attack_seeds_below_1000():
    """Data draws are 1000 x study seed + attack seed: an attack seed of 1000 would repeat study seed 1's draw."""
    msg = bad(lambda c: c["attack"].update(seeds=[0, 1000]))
    assert msg.startswith("attack.seeds = [0, 1000] is invalid") and "< 1000" in msg


def test_era_layer_beyond_the_model():
    msg = bad(lambda c: c.update(era={"layers": [0, 7]}))  # config.yaml has no era block: one with the bad key
    assert msg.startswith("era.layers = [0, 7] is invalid") and "[7]" in msg and "model.n_layers = 4" in msg


def test_era_in_the_wmdp_setting():
    wmdp = yaml.safe_load((REPO / "configs" / "wmdp.yaml").read_text())
    msg = bad(lambda c: (c.update({k: v for k, v in wmdp.items() if k not in ("era", "unlearn")}, era={}),
                         c["unlearn"].update(wmdp["unlearn"])))  # an era block (its defaults) in the wmdp setting
    assert msg.startswith("era:") and "era: null" in msg


def test_setting_needs_its_data_block():
    msg = bad(lambda c: c.update(setting="language"))
    assert msg.startswith("language: missing key")


def test_wrong_type_and_choice():
    assert bad(lambda c: c["pretrain"].update(steps="many")) == (
        "pretrain.steps = 'many' is invalid: it must be an integer (> 0)")
    msg = bad(lambda c: c.update(setting="chess"))
    assert msg.startswith("setting = 'chess' is invalid") and "['arithmetic', 'language', 'wmdp']" in msg


def test_attack_families_and_their_keys():
    msg = bad(lambda c: c["attack"].update(families=["forget", "poison"]))
    assert msg.startswith("attack.families = ['forget', 'poison'] is invalid")
    assert "['forget', 'mix', 'retain', 'heldout', 'quant']" in msg
    assert "without repeats" in bad(lambda c: c["attack"].update(families=["mix", "mix"]))
    assert "non-empty" in bad(lambda c: c["attack"].update(families=[]))
    msg = bad(lambda c: c["attack"].update(data=["forget", "mix"]))  # the key attack.families replaced
    assert msg.startswith("attack.data: unknown key; allowed keys of attack: [") and "'families'" in msg
    assert bad(lambda c: c["attack"].update(heldout_fraction=1.0)).startswith("attack.heldout_fraction = 1.0 is invalid")
    msg = bad(lambda c: c["attack"].update(quant_bits=[8, 16]))
    assert msg.startswith("attack.quant_bits = [8, 16] is invalid") and "[2, 3, 4, 8]" in msg
    a = Study.from_dict(default_config()).attack
    assert (a.families, a.heldout_fraction, a.quant_bits, a.mix_forget_fraction) == (
        ["forget", "mix"], 0.5, [8, 4], 0.5), a


def test_every_noise_alpha_and_method_unique():
    assert "without repeats" in bad(lambda c: c["noise"].update(alphas=[0.5, 0.5]))
    assert "without repeats" in bad(lambda c: c["unlearn"].update(methods=["maxent", "maxent"]))
    assert "non-empty" in bad(lambda c: c["attack"].update(lrs=[]))


# ------------------------------------------------------------------------------------------ Section


@dataclass(frozen=True, kw_only=True)
class Inner(Section):
    """A nested section."""

    rate: float = key(0.5, "a rate", gt=0, lt=1)
    names: list[str] = key(["a"], "names", nonempty=True, unique=True, pattern="[a-z]+")


@dataclass(frozen=True, kw_only=True)
class Outer(Section):
    """A section with every kind of field."""

    steps: int = key(doc="required", ge=1)
    flag: bool = key(False, "a flag")
    ratios: list[float] = key([0.1], "ratios", ge=0, le=1)
    mode: str = key("x", "a choice", choices=("x", "y"))
    limit: int | None = key(None, "optional", gt=0)
    inner: Inner = key(Inner(), "nested")
    items: list[Inner] = key([], "nested list")
    hidden: int = key(0, internal=True)


def error(cls, raw, path="") -> str:
    with pytest.raises(ValueError) as e:
        cls.from_dict(raw, path)
    return str(e.value)


def test_section_type_errors_name_key_value_and_type():
    assert error(Outer, {"steps": "3"}) == "steps = '3' is invalid: it must be an integer (>= 1)"
    assert error(Outer, {"steps": 1.0}).startswith("steps = 1.0 is invalid: it must be an integer")
    assert error(Outer, {"steps": True}).startswith("steps = True is invalid")  # a bool is not an integer
    assert error(Outer, {"steps": 1, "flag": 1}) == "flag = 1 is invalid: it must be true or false"
    assert error(Outer, {"steps": 1, "limit": 0}) == "limit = 0 is invalid: it must be an integer or null (> 0)"
    assert error(Outer, {"steps": 1, "mode": "z"}) == "mode = 'z' is invalid: it must be a string (one of ['x', 'y'])"
    assert Outer.from_dict({"steps": 1, "limit": None}).limit is None
    assert Outer.from_dict({"steps": 2, "ratios": [0, 1]}).ratios == [0, 1]  # an int is a number


def test_section_list_items_are_checked_one_by_one():
    msg = error(Outer, {"steps": 1, "ratios": [0.5, 1.5]})
    assert msg == "ratios = [0.5, 1.5] is invalid: it must be a list of a number (>= 0, <= 1)"
    assert error(Outer, {"steps": 1, "ratios": [0.5, "x"]}).startswith("ratios = [0.5, 'x'] is invalid")
    assert error(Outer, {"steps": 1, "ratios": 0.5}).startswith("ratios = 0.5 is invalid: it must be a list")


def test_section_nonempty_and_unique():
    assert error(Inner, {"names": []}) == ("names = [] is invalid: it must be a list of a string (matching [a-z]+), "
                                           "non-empty, without repeats")
    assert error(Inner, {"names": ["a", "a"]}).endswith("without repeats")
    assert error(Inner, {"names": ["A"]}).startswith("names = ['A'] is invalid")


def test_section_nested_errors_carry_the_key_path():
    assert error(Outer, {"steps": 1, "inner": {"rate": 1.0}}, "top") == (
        "top.inner.rate = 1.0 is invalid: it must be a number (> 0, < 1)")
    assert error(Outer, {"steps": 1, "inner": {"bogus": 1}}, "top") == (
        "top.inner.bogus: unknown key; allowed keys of top.inner: ['names', 'rate']")
    assert error(Outer, {"steps": 1, "items": [{}, {"names": ["a", "a"]}]}, "top").startswith(
        "top.items[1].names = ['a', 'a'] is invalid")
    assert error(Outer, {"steps": 1, "inner": 3}, "top") == "top.inner = 3 is invalid: it must be a mapping"
    assert error(Outer, {}, "top") == "top.steps: missing key (required: ['steps'])"
    assert error(Outer, {"steps": 1, "hidden": 2}).startswith("hidden: unknown key")  # internal: not a config key


def test_section_to_dict_round_trip():
    x = Outer.from_dict({"steps": 3, "flag": True, "ratios": [0.2, 0.3], "mode": "y", "limit": 7,
                         "inner": {"rate": 0.25, "names": ["p", "q"]}, "items": [{"rate": 0.1}, {}]})
    assert isinstance(x.inner, Inner) and all(isinstance(i, Inner) for i in x.items)
    d = x.to_dict()
    assert d["inner"] == {"rate": 0.25, "names": ["p", "q"]} and d["items"][0] == {"rate": 0.1, "names": ["a"]}
    assert "hidden" not in d
    assert yaml.safe_load(yaml.safe_dump(d)) == d  # plain YAML
    assert Outer.from_dict(d) == x
    assert Outer.from_dict(x) is x
    s = Study.from_dict(default_config())
    assert Study.from_dict(s.to_dict()) == s


def test_section_defaults_are_not_shared():
    a, b = Outer.from_dict({"steps": 1}), Outer.from_dict({"steps": 1})
    assert a.ratios == b.ratios and a.ratios is not b.ratios


def test_section_json_schema():
    schema = json_schema(Outer)
    assert schema["additionalProperties"] is False and schema["required"] == ["steps"]
    props = schema["properties"]
    assert props["steps"] == {"description": "required", "type": "integer", "minimum": 1}
    assert props["ratios"]["items"] == {"type": "number", "minimum": 0, "maximum": 1}
    assert props["limit"]["type"] == ["integer", "null"] and props["limit"]["exclusiveMinimum"] == 0
    assert props["mode"]["enum"] == ["x", "y"]
    assert props["inner"]["properties"]["names"]["minItems"] == 1
    assert props["inner"]["properties"]["names"]["uniqueItems"] is True
    assert props["inner"]["properties"]["names"]["items"]["pattern"] == "^(?:[a-z]+)$"
    assert "hidden" not in props
