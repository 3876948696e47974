"""The cluster profile on a real SLURM: tests/slurm/start_local_slurm.sh starts a one-node SLURM on this
machine (installing Debian's slurm-wlm and munge when missing), then the tiny study's pareto_plot runs
through `--workflow-profile workflow/profiles/slurm` while one running job is killed with scancel.

Checked: every non-local job ran as a SLURM job with the CPUs, memory and time limit its rule declares;
the outputs match a local run of the same study file by file in shape (data byte for byte); the
cancelled job was resubmitted and its checkpoint loads and is finite. Skipped, with the reason, only
where SLURM cannot be started at all (not root, or neither SLURM nor apt-get present).

The study is configs/tiny.yaml narrowed to one method, one α, one attack LR, the forget and quantization attack
families and no oracle matching (29 SLURM jobs and 2 local ones): every stage of the main study still runs, and
the test stays within a few minutes on 2 cores.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors import safe_open

from pipeline_py import study

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
START = REPO / "tests" / "slurm" / "start_local_slurm.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SMALLER = {"seeds": [0],  # one seed: the copies of share_data/share_model are local rules, checked in test_workflow
           "noise": {"alphas": [0.5], "fresh_init": False, "methods": ["maxent"]},
           "unlearn": {"methods": ["maxent"],  # replaces config.yaml's list
                       "hparams": {"maxent": {"steps": 5, "lr": 3.0e-4}}},  # merged over tiny.yaml's entry
           "attack": {"lrs": [3.0e-3], "families": ["forget", "quant"]}, "oracle_match": {"inits": []}}
KILLED_RULE = "pretrain"  # the base model: the first training job, a checkpoint every later job reads

pytestmark = pytest.mark.e2e


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def start_slurm() -> None:
    """Start the local SLURM, or skip naming why it cannot run here."""
    assert importlib.util.find_spec("snakemake_executor_plugin_slurm"), \
        "snakemake-executor-plugin-slurm is missing: pip install -e '.[test]'"
    if os.geteuid() != 0:
        pytest.skip("SLURM cannot be started: not root (start_local_slurm.sh installs packages and starts daemons)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("SLURM cannot be started: slurm-wlm is not installed and there is no apt-get to install it")
    proc = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"start_local_slurm.sh failed (exit {proc.returncode}):\n{proc.stderr[-5000:]}"


def squeue_records(prefix: str) -> list[dict]:
    """Every job SLURM still remembers (MinJobAge keeps finished ones) whose name starts with `prefix`."""
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%j|%k|%T|%C|%m|%l"],
                         capture_output=True, text=True, check=True).stdout
    keys = ("id", "name", "comment", "state", "cpus", "mem", "limit")
    rows = [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]
    return [r for r in rows if r["name"].startswith(prefix)]


def rule_of(comment: str) -> str:
    """The executor tags each job with --comment rule_<rule>_wildcards_<values>."""
    return re.match(r"rule_(\w+?)(_wildcards_.*)?$", comment).group(1)


def kill_when_running(prefix: str, rule_log: Path, stop: threading.Event, killed: dict) -> None:
    """Wait until the job of KILLED_RULE runs and its stage has started, then scancel it."""
    while not stop.is_set():
        running = [r for r in squeue_records(prefix) if r["state"] == "RUNNING" and rule_of(r["comment"]) == KILLED_RULE]
        text = rule_log.read_text() if rule_log.exists() else ""
        if running and "starts" in text:
            subprocess.run(["scancel", running[0]["id"]], check=True)
            killed.update(id=running[0]["id"], stage_done=" done in " in text)
            return
        time.sleep(0.2)


def declared_local_rules() -> set[str]:
    """Rules marked `localrule: True` in workflow/rules/*.smk."""
    found = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text()):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(r"^\s+localrule: True", block, re.M):
                found.add(m.group(1))
    return found


def job_counts(text: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints before running, as {rule: count}."""
    table = text[text.index("Job stats:"):text.index("total", text.index("Job stats:"))]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The study on SLURM (one job cancelled mid-run) and locally: their results dirs and outputs."""
    start_slurm()
    root = tmp_path_factory.mktemp("slurm")
    extra = root / "smaller.yaml"
    extra.write_text(yaml.safe_dump(SMALLER))
    prefix = f"undotest{uuid.uuid4().hex[:8]}"
    slurm_results, local_results = root / "on_slurm", root / "local"
    cmd = [sys.executable, "-m", "snakemake", "pareto_plot", "--configfile", str(TINY), str(extra)]
    slurm = subprocess.Popen(
        [*cmd, "--config", f"results={slurm_results}", "--workflow-profile", str(PROFILE),
         "--slurm-status-command", "squeue",  # no accounting database on the local SLURM
         "--slurm-init-seconds-before-status-checks", "2", "--slurm-jobname-prefix", prefix,
         "--slurm-logdir", str(root / "slurm_logs")],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the local reference run goes alongside: it uses the CPU the SLURM run leaves idle between polls
    local_log = root / "local.log"  # a file, not a pipe: nobody reads a pipe while the SLURM run is awaited
    with local_log.open("w") as sink:
        local = subprocess.Popen([*cmd, "--config", f"results={local_results}", "--cores", "2"], cwd=REPO,
                                 env=env(), stdout=sink, stderr=subprocess.STDOUT)
    killed, stop = {}, threading.Event()
    rule_log = slurm_results / "arithmetic" / "seed0" / "logs" / f"{KILLED_RULE}.log"
    killer = threading.Thread(target=kill_when_running, args=(prefix, rule_log, stop, killed), daemon=True)
    killer.start()
    try:
        slurm_out, _ = slurm.communicate(timeout=1800)
    finally:
        stop.set()
        if slurm.poll() is None:  # timed out: stop Snakemake and leave no job of this run in the queue
            slurm.kill()
            local.kill()
            for r in squeue_records(prefix):
                if r["state"] in ("PENDING", "RUNNING"):
                    subprocess.run(["scancel", r["id"]], check=False)
    assert slurm.returncode == 0, slurm_out[-20000:]
    local.wait(timeout=1800)
    local_out = local_log.read_text()
    assert local.returncode == 0, local_out[-20000:]
    return {"slurm": slurm_results / "arithmetic", "local": local_results / "arithmetic", "slurm_out": slurm_out,
            "local_out": local_out, "records": squeue_records(prefix), "killed": killed}


def test_every_non_local_job_ran_as_a_slurm_job_with_its_resources(runs):
    expected = job_counts(runs["local_out"])
    local_rules = declared_local_rules()
    assert "pareto_plot" in local_rules
    for rule in local_rules:
        expected.pop(rule, None)  # share_data/share_model run only with several seeds
    # 6 models (base, oracle, maxent, its UNDO student, ERA, its UNDO student): per model one relearn job (the
    # forget family), one quantize job and one evaluation
    assert expected["relearn"] == expected["quantize"] == expected["evaluate"] == 6, expected
    assert sum(expected.values()) == 29, expected
    done = [r for r in runs["records"] if r["state"] == "COMPLETED"]
    counts = {}
    for r in done:
        counts[rule_of(r["comment"])] = counts.get(rule_of(r["comment"]), 0) + 1
    assert counts == expected, runs["slurm_out"][-5000:]
    # each rule's declared threads, mem_mb and runtime became --cpus-per-task, --mem and --time
    cluster = yaml.safe_load((REPO / "config.yaml").read_text())["cluster"]
    for r in done:
        rule = rule_of(r["comment"])
        training = rule in ("pretrain", "pretrain_oracle", "pretrain_routed", "distill", "distill_students",
                            "match_oracle")
        assert int(r["cpus"]) == (cluster["train_threads"] if training else 1), r
        assert r["mem"] == ("2000M" if rule in ("pretrain", "pretrain_oracle", "pretrain_routed", "unlearn", "ablate",
                                                "distill", "distill_students", "relearn", "match_oracle")
                            else "1000M"), r
        assert r["limit"] in ("10:00", "15:00", "30:00", "1:00:00"), r
    # the job's torch threads follow its CPUs, and pareto_plot (a local rule) never went to SLURM
    pretrain_log = (runs["slurm"] / "seed0" / "logs" / "pretrain.log").read_text()
    assert re.search(rf"runtime': Runtime\([^)]*threads={cluster['train_threads']}\)", pretrain_log), pretrain_log
    assert not local_rules & {rule_of(r["comment"]) for r in runs["records"]}
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", runs["slurm_out"])
    assert set(submitted) == {r["id"] for r in runs["records"]}


def outputs(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and not {"logs", "benchmarks"} & set(p.parts)}


def test_outputs_match_a_local_run_in_shape(runs):
    slurm, local = runs["slurm"], runs["local"]
    files = outputs(local)
    assert outputs(slurm) == files
    assert any(p.name == "model.safetensors" for p in files) and Path("summary.csv") in files
    for rel in sorted(files):
        a, b = slurm / rel, local / rel
        if rel.suffix == ".jsonl" or rel.name == "tokenizer.json":  # data generation is exact
            assert a.read_bytes() == b.read_bytes(), rel
        elif rel.suffix == ".csv":
            da, db = pd.read_csv(a), pd.read_csv(b)
            assert list(da.columns) == list(db.columns) and da.shape == db.shape, rel
            keys = [c for c in ("model", "budget", "step", "op") if c in db.columns]
            assert da[keys].astype(str).values.tolist() == db[keys].astype(str).values.tolist(), rel
        elif rel.suffix == ".safetensors":
            with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
                assert set(fa.keys()) == set(fb.keys()), rel
                for k in fb.keys():
                    assert fa.get_slice(k).get_shape() == fb.get_slice(k).get_shape(), (rel, k)
        elif rel.suffix in (".png", ".pdf"):
            assert a.stat().st_size > 1000, rel


def test_cancelled_job_is_resubmitted_and_its_checkpoint_is_sound(runs):
    killed = runs["killed"]
    assert killed, "the watcher never saw the job running, nothing was cancelled"
    mine = [r for r in runs["records"] if rule_of(r["comment"]) == KILLED_RULE]
    states = {r["id"]: r["state"] for r in mine}
    assert states[killed["id"]] == "CANCELLED", mine
    retried = [i for i, s in states.items() if i != killed["id"]]
    assert len(retried) == 1 and states[retried[0]] == "COMPLETED" and int(retried[0]) > int(killed["id"]), mine
    assert f"SLURM-job '{killed['id']}' failed" in runs["slurm_out"]
    # the checkpoint written by the retry loads with plain transformers and holds finite weights
    from transformers import AutoModelForCausalLM

    ckpt, reference = (Path(study.ckpt(str(runs[k]), "base", 0)).parent for k in ("slurm", "local"))
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(p.name for p in reference.iterdir())  # no leftovers
