"""pipeline_py.cli: a rule's (or the shell's) arguments bound to the function it names: unknown and missing
arguments named with the function's parameters, section-typed parameters built from mappings, checkpoint files
standing for their directories; `python -m pipeline_py`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_py import cli
from pipeline_py.config import Attack, Distill, Runtime
from pipeline_py.stages.attack import evaluate, quantize, relearn
from pipeline_py.stages.distill import distill, noise

REPO = Path(__file__).resolve().parents[1]
RUNTIME = {"precision": "fp32", "device": "cpu", "threads": 1}


def fail(fn, kwargs, where="rule test") -> str:
    with pytest.raises(SystemExit) as e:
        cli.bind(fn, kwargs, where)
    return str(e.value)


def test_unknown_key_is_named_with_the_parameter_list():
    msg = fail(noise, {"teacher": "t", "out": "o", "init": "fresh", "seed": 0, "sede": 1}, "rule noise")
    assert msg == ("rule noise: pipeline_py.stages.distill.noise takes no argument ['sede']; "
                   "its parameters: ['teacher', 'out', 'init', 'seed']")


def test_missing_parameter_is_named():
    msg = fail(noise, {"teacher": "t", "out": "o", "init": "fresh"}, "rule noise")
    assert msg == ("rule noise: pipeline_py.stages.distill.noise needs ['seed']; "
                   "its parameters: ['teacher', 'out', 'init', 'seed']")
    msg = fail(evaluate, {"model": "m", "out": "o"}, "rule evaluate")
    assert "needs ['eval_data', 'name', 'runtime']" in msg and msg.startswith("rule evaluate: ")


def test_parameters_with_defaults_may_be_left_out():
    args = cli.bind(distill, {"teacher": "t", "student": "s", "data": "d", "eval_data": "e", "out": "o",
                              "cfg": {"steps": 5, "lr": 1e-3, "stop_within": None, "check_every": 5},
                              "runtime": RUNTIME, "seed": 0}, "rule distill")
    assert "teacher_in_lineage" not in args


def test_mapping_becomes_the_section():
    args = cli.bind(relearn, {"model": "m", "attack": "a", "retain": "r", "eval_data": "e", "out": "o.csv",
                              "cfg": {"lrs": [1e-3], "seeds": [0], "steps": 10, "eval_every": 5},
                              "family": "heldout", "runtime": RUNTIME, "seed": 1}, "rule relearn")
    assert isinstance(args["cfg"], Attack) and args["cfg"].steps == 10 and args["cfg"].batch_size == 16
    assert args["cfg"].families == ["forget"] and args["cfg"].heldout_fraction == 0.5
    assert args["cfg"].quant_bits == [8, 4]
    assert args["runtime"] == Runtime(precision="fp32", device="cpu", threads=1)
    assert args["family"] == "heldout" and args["out"] == "o.csv"
    msg = fail(relearn, {"model": "m", "attack": "a", "retain": "r", "eval_data": "e", "out": "o.csv",
                         "cfg": {"lrs": [1e-3], "seeds": [0], "steps": 10, "eval_every": 5},
                         "data": "forget", "lr": 1e-3, "seed": 0, "runtime": RUNTIME}, "rule relearn")
    assert msg == ("rule relearn: pipeline_py.stages.attack.relearn takes no argument ['data', 'lr']; "
                   "its parameters: ['model', 'attack', 'retain', 'eval_data', 'out', 'cfg', 'family', 'runtime', "
                   "'seed']")
    ready = Distill(steps=5, lr=1e-3, stop_within=None, check_every=5)  # a section passes as it is
    args = cli.bind(distill, {"teacher": "t", "student": "s", "data": "d", "eval_data": "e", "out": "o",
                              "cfg": ready, "runtime": RUNTIME, "seed": 0}, "rule distill")
    assert args["cfg"] is ready


def test_bad_section_value_names_param_and_key():
    base = {"model": "m", "attack": "a", "retain": "r", "eval_data": "e", "out": "o.csv", "family": "forget",
            "runtime": RUNTIME, "seed": 0}
    msg = fail(relearn, {**base, "cfg": {"lrs": [1e-3], "seeds": [0], "steps": 0, "eval_every": 5}}, "rule relearn")
    assert msg == "rule relearn: cfg.steps = 0 is invalid: it must be an integer (> 0)"
    msg = fail(relearn, {**base, "cfg": {"lrs": [1e-3], "seeds": [0], "steps": 10, "eval_every": 5, "stepz": 1}})
    assert msg.startswith("rule test: cfg.stepz: unknown key; allowed keys of cfg: [")
    msg = fail(relearn, {**base, "cfg": {"lrs": [1e-3], "seeds": [0], "eval_every": 5}})
    assert msg == "rule test: cfg.steps: missing key (required: ['steps'])"
    msg = fail(relearn, {**base, "runtime": {**RUNTIME, "device": "tpu"}, "cfg": {
        "lrs": [1e-3], "seeds": [0], "steps": 10, "eval_every": 5}})
    assert msg.startswith("rule test: runtime.device = 'tpu' is invalid")
    msg = fail(relearn, {**base, "cfg": {"lrs": [1e-3], "seeds": [0], "steps": 10, "eval_every": 5,
                                         "families": ["forget", "poison"]}})
    assert msg.startswith("rule test: cfg.families = ['forget', 'poison'] is invalid")
    assert "['forget', 'mix', 'retain', 'heldout', 'quant']" in msg
    msg = fail(relearn, {**base, "cfg": {"lrs": [1e-3], "seeds": [0], "steps": 10, "eval_every": 5,
                                         "data": ["forget"]}})
    assert msg.startswith("rule test: cfg.data: unknown key; allowed keys of cfg: [") and "'families'" in msg
    msg = fail(quantize, {"model": "m", "eval_data": "e", "out": "o.csv", "runtime": RUNTIME,
                          "cfg": {"lrs": [1e-3], "seeds": [0], "steps": 10, "eval_every": 5, "quant_bits": [16]}},
               "rule quantize")
    assert msg.startswith("rule quantize: cfg.quant_bits = [16] is invalid") and "[2, 3, 4, 8]" in msg


def test_checkpoint_files_become_their_directories():
    args = cli.bind(noise, {"teacher": "r/seed0/models/base/maxent/model.safetensors",
                            "out": "r/seed0/models/base/maxent/noised_fresh/model.safetensors",
                            "init": "fresh", "seed": 0}, "rule noise")
    assert args == {"teacher": "r/seed0/models/base/maxent", "out": "r/seed0/models/base/maxent/noised_fresh",
                    "init": "fresh", "seed": 0}
    assert cli.as_dir("a/b.csv") == "a/b.csv" and cli.as_dir(["x.safetensors"]) == ["x.safetensors"]


def test_resolve_names_a_missing_function():
    assert cli.resolve("pipeline_py.stages.distill.distill") is distill
    for path in ("pipeline_py.stages.distill.distil", "pipeline_py.stages.nothere.x", "distill"):
        with pytest.raises(SystemExit, match="cannot find the stage function"):
            cli.resolve(path)


def test_call_runs_the_function_with_bound_arguments(tmp_path, monkeypatch):
    """call() logs to the log file and passes the bound arguments."""
    import types

    seen = {}
    mod = types.ModuleType("fake_stage_mod")

    def stage(out: str, runtime: Runtime, seed: int = 0) -> None:
        seen.update(out=out, runtime=runtime, seed=seed)

    stage.__module__ = "fake_stage_mod"
    mod.stage = stage
    monkeypatch.setitem(sys.modules, "fake_stage_mod", mod)
    log = tmp_path / "logs" / "stage.log"
    cli.call("fake_stage_mod.stage", {"out": str(tmp_path / "m" / "model.safetensors"), "runtime": RUNTIME},
             str(log), "rule fake")
    assert seen == {"out": str(tmp_path / "m"), "runtime": Runtime(**RUNTIME), "seed": 0}
    text = log.read_text()
    assert "fake_stage_mod.stage starts" in text and "fake_stage_mod.stage done in" in text
    with pytest.raises(SystemExit, match="rule fake: fake_stage_mod.stage takes no argument"):
        cli.call("fake_stage_mod.stage", {"out": "o", "runtime": RUNTIME, "x": 1}, None, "rule fake")


def test_python_m_pipeline_py_help_and_arguments():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pipeline_py", "--help"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "python -m pipeline_py pipeline_py.stages.pretrain.pretrain" in proc.stdout and "YAML" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "pipeline_py", "pipeline_py.stages.distill.noise", "teacher=t",
                           "out=o", "init=fresh", "sede=1"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "takes no argument ['sede']" in proc.stderr and "its parameters: ['teacher', 'out', 'init', 'seed']" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pipeline_py", "pipeline_py.stages.distill.noise", "teacher"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "expected key=value, got 'teacher'" in proc.stderr


def test_every_rule_names_a_function_that_takes_its_arguments():
    """Each `call=` of workflow/rules/*.smk resolves to a function (static: the named inputs, outputs and
    params are bound when the rule runs)."""
    import re

    calls = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        calls |= set(re.findall(r'call="([\w.]+)"', smk.read_text()))
    assert "pipeline_py.stages.distill.distill" in calls and len(calls) >= 10
    assert {"pipeline_py.stages.attack.relearn", "pipeline_py.stages.attack.quantize"} <= calls
    for path in sorted(calls):
        assert callable(cli.resolve(path)), path
