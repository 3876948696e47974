"""The wmdp setting offline: a tiny random HF model stands in for gemma-2-2b, local JSON corpora for the WMDP
corpora and wikitext, local lm-eval tasks for wmdp_bio/wmdp_cyber/mmlu (see wmdp_fixtures.py)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from pipeline_py import study, wmdp
from pipeline_py.batches import read_jsonl, tokenize_examples
from pipeline_py.checkpoint import load_checkpoint, save_checkpoint
from pipeline_py.config import Attack, Filter, Runtime, Study
from pipeline_py.stages.attack import relearn
from pipeline_py.stages.data import filter_data, make_data
from pipeline_py.stages.distill import noise
from pipeline_py.tokenizer import load_tokenizer
from pipeline_py.wmdp_sources import WmdpConfig, check_sources, explain

sys.path.insert(0, str(Path(__file__).parent))
from wmdp_fixtures import write_config, write_fixtures, write_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def merged_paper_config(*overlays: Path, base: Path = REPO / "configs" / "wmdp.yaml") -> dict:
    """config.yaml, then `base` and the overlays merged over it as Snakemake merges --configfile files."""
    from snakemake.utils import update_config

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    for f in ([] if base == REPO / "config.yaml" else [base]) + list(overlays):
        update_config(cfg, yaml.safe_load(Path(f).read_text()))
    return cfg


@pytest.fixture(scope="session")
def wm(tmp_path_factory):
    """Fixtures, the data directory (make_data + filter_data) and the loaded base checkpoint."""
    root = tmp_path_factory.mktemp("wmdp")
    cfg = write_fixtures(root / "fx")
    data = root / "data"
    make_data(str(data / "train.jsonl"), str(data / "eval.jsonl"), str(data / "attack.jsonl"),
              str(data / "tokenizer.json"), cfg, setting="wmdp", seed=0)
    filter_data(str(data / "train.jsonl"), str(data / "oracle.jsonl"), str(data / "forget.jsonl"),
                str(data / "retain.jsonl"), Filter(n_labeled=16), seed=0)
    wmdp.load_base(str(data / "tokenizer.json"), str(root / "base"), cfg["base"], pretrain_tokens=1e6)
    return {"root": root, "cfg": cfg, "data": data, "base": root / "base"}


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "wmdp.colour: unknown key; allowed keys of wmdp: ['attack_fraction', 'base',"),
    ({"forget": []}, "wmdp.forget = "),
    ({"forget": [{"op": "bio", "path": "json"}]}, "wmdp.forget[0].data_files = None is invalid"),
    ({"forget": [{"op": "bio", "path": "json", "data_files": "f.json", "colour": 1}]},
     "wmdp.forget[0].colour: unknown key"),
    ({"retain": [{"op": "bio", "path": "json", "data_files": "r.json"}]}, "['bio', 'bio']"),
    ({"eval_fraction": 0.7}, "wmdp.eval_fraction = 0.7 is invalid: it must be a number (> 0, < 0.5)"),
    ({"chunk_tokens": 0}, "wmdp.chunk_tokens = 0 is invalid"),
    ({"lm_eval": {"limit": 0}}, "wmdp.lm_eval.limit = 0 is invalid"),
    ({"lm_eval": {"retain_tasks": {}}}, "wmdp.lm_eval.retain_tasks = {} is invalid"),
])
def test_bad_config_names_the_key(tmp_path, change, message):
    raw = {"base": "x", "forget": [{"op": "bio", "path": "json", "data_files": "f.json"}],
           "retain": [{"op": "wiki", "path": "json", "data_files": "r.json"}], **change}
    with pytest.raises(ValueError) as e:
        WmdpConfig.parse(raw)
    assert message in str(e.value)


def test_unreachable_sources_are_reported_with_how_to_provide_them(tmp_path, monkeypatch):
    """Offline: a missing local model, a misspelled hub model, a hub data set and a missing local file all
    fail together, each named by its key with the way to provide it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = {"base": str(tmp_path / "no_model"), "oracle": "nobody/gemma-2-2bb",
           "forget": [{"op": "bio", "path": "cais/wmdp-bio-forget-corpuss"}],
           "retain": [{"op": "wiki", "path": "json", "data_files": str(tmp_path / "missing.json")}]}
    with pytest.raises(ValueError) as e:
        check_sources(raw)
    msg = str(e.value)
    assert f"wmdp.base = '{tmp_path / 'no_model'}' is not a model directory (no config.json there)" in msg
    assert "wmdp.oracle = 'nobody/gemma-2-2bb' cannot be loaded offline" in msg and "huggingface-cli download" in msg
    assert "wmdp.forget[0].path = 'cais/wmdp-bio-forget-corpuss' cannot be loaded offline" in msg
    assert "wmdp.retain[0].data_files: missing local files" in msg


def test_gated_and_missing_repos_are_told_apart(monkeypatch):
    from huggingface_hub import errors

    def hub_error(cls, message):  # the hub's errors want an HTTP response; only the type and text matter here
        e = cls.__new__(cls)
        Exception.__init__(e, message)
        return e

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    gated = explain("wmdp.base", "google/gemma-2-2b", hub_error(errors.GatedRepoError, "Access to model is restricted"),
                    "HOW")
    assert "is gated on the Hugging Face Hub" in gated and "huggingface-cli login" in gated and gated.endswith(
        "(GatedRepoError: Access to model is restricted)")
    missing = explain("wmdp.base", "googel/gemma", hub_error(errors.RepositoryNotFoundError, "404"), "HOW")
    assert "was not found (misspelled, private or missing): HOW" in missing


def test_run_fails_before_any_job_when_the_model_cannot_be_loaded(tmp_path):
    """`snakemake` (a real run, not a dry run: planning skips the source checks) on the paper config with no
    network: the error names the gated/uncached model and data sets, and nothing is written."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "pareto_plot", "--configfile",
                           str(REPO / "configs" / "wmdp.yaml"), "--config", f"results={tmp_path / 'out'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)  # a busy machine
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "the wmdp setting cannot load its sources" in err
    assert "wmdp.base = 'google/gemma-2-2b' cannot be loaded offline" in err
    assert "wmdp.forget[0].path = 'cais/wmdp-bio-forget-corpus'" in err
    assert not (tmp_path / "out").exists()


def test_dry_run_plans_without_the_sources(tmp_path):
    """`snakemake -n` on the paper config, offline and with no model weights or corpora anywhere, plans
    the study (a cluster run is planned on a login node without the weights)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "pareto_plot", "--configfile",
                           str(REPO / "configs" / "wmdp.yaml"), "--config", f"results={tmp_path / 'out'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "cannot load its sources" not in text
    assert {rule for rule, _ in planned_jobs(text)} >= {"load_base", "unlearn", "distill", "relearn", "pareto_plot"}
    assert not (tmp_path / "out").exists()


def planned_jobs(text: str) -> list[tuple[str, dict[str, str]]]:
    """Every job block of a dry run as (rule, its resources)."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if m:
            res = re.search(r"^\s*resources: (.*)$", block, re.M)
            jobs.append((m.group(1), dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}))
    return jobs


def test_paper_config_plans_its_study_with_gpu_jobs(tmp_path):
    """configs/wmdp.yaml, its model and corpora pointed at the local stand-ins, passes the schema and the
    config checks and plans its study: load_base instead of pretraining, no oracle, RMU and MaxEnt each
    unlearned and distilled at α 0.25, attacked on forget data at 3 LRs (one relearn job per model). Every job
    holding the model asks for
    wmdp.resources' memory and wall time, the training and lm-eval jobs also for cluster.gpu's GPU."""
    fx = write_fixtures(tmp_path / "fx")
    overlay = tmp_path / "local.yaml"
    overlay.write_text(yaml.safe_dump({"wmdp": {k: fx[k] for k in ("base", "forget", "retain")}}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "4", "pareto_plot", "--configfile",
                           str(REPO / "configs" / "wmdp.yaml"), str(overlay), "--config", f"results={tmp_path / 'out'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    jobs = planned_jobs(proc.stdout + proc.stderr)
    counts = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    paper_study = Study.from_dict(merged_paper_config(overlay))
    models = 1 + 2 + 2  # base; rmu, maxent; their UNDO students
    assert len(study.models(paper_study)) == models and not paper_study.oracle
    assert paper_study.attack.families == ["forget"] and len(paper_study.attack.lrs) == 3
    assert counts == {"make_data": 1, "filter_data": 1, "load_base": 1, "unlearn": 2, "noise": 2, "distill": 2,
                      "relearn": models, "evaluate": models, "summarize": 1, "pareto_plot": 1}
    paper = yaml.safe_load((REPO / "configs" / "wmdp.yaml").read_text())
    held = {"mem_mb": str(paper["wmdp"]["resources"]["mem_mb"]), "runtime": str(paper["wmdp"]["resources"]["runtime"])}
    for rule, res in jobs:
        if rule in ("summarize", "pareto_plot"):
            continue
        want = {"mem_mb": "1000", "runtime": "10"} if rule == "filter_data" else held
        assert {k: res.get(k) for k in want} == want, (rule, res)
        gpu = rule in ("unlearn", "distill", "relearn", "quantize", "evaluate")
        assert res.get("gpu") == (str(paper["cluster"]["gpu"]) if gpu else None), (rule, res)
    assert paper["cluster"]["gpu"] == 1


# ------------------------------------------------------------------------------------------ data


def test_chunks_cut_at_token_boundaries_and_lose_nothing(wm):
    tok = load_tokenizer(wm["data"])
    text = "Port 7 of service elm accepts a crafted header. " * 5
    chunks = wmdp.chunk_text(tok, text, 20)
    assert "".join(chunks) == text
    assert all(len(tok.encode(c, add_special_tokens=False).ids) <= 20 for c in chunks)
    assert len(chunks) == -(-len(text) // 20)  # one token per character here


def test_splits_share_no_document_and_the_attack_is_forget_only(wm):
    rows = {s: read_jsonl(wm["data"] / f"{s}.jsonl") for s in ("train", "eval", "attack")}
    docs = {s: {r["doc"] for r in rs} for s, rs in rows.items()}
    assert not (docs["train"] & docs["eval"]) and not (docs["train"] & docs["attack"]) and not (docs["eval"] & docs["attack"])
    assert {r["op"] for r in rows["attack"]} == {"bio", "cyber"} and all(r["forget"] for r in rows["attack"])
    assert {r["op"] for r in rows["train"]} == {"bio", "cyber", "wikitext"}
    manifest = json.loads((wm["data"] / "manifest.json").read_text())
    assert manifest["setting"] == "wmdp" and manifest["files"]["eval.jsonl"]["examples"] == 24  # 8 per corpus


def test_examples_use_the_pretrained_tokenizers_special_ids(wm):
    """The stand-in's ids are pad 0, eos 1, bos 2 (not the character tokenizer's 0/1/2 = pad/bos/eos)."""
    tok = load_tokenizer(wm["data"])
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    ids, plen = tokenize_examples(tok, [{"prompt": "", "answer": "ab"}])
    assert ids == [[2, tok.token_to_id("a"), tok.token_to_id("b"), 1]] and plen == [1]


# ------------------------------------------------------------------------------------------ models


def test_wrapper_gives_logits_and_hidden_states_of_any_architecture(tmp_path):
    """A gemma-2 model through the wrapper: the pipeline's call signature, RMU's weights, a checkpoint that
    round-trips bit-exactly and loads with plain transformers."""
    from transformers import AutoModelForCausalLM

    from pipeline_py.hf_model import load_pretrained
    from pipeline_py.methods import get_method

    net = load_pretrained(str(write_model(tmp_path / "g2", arch="gemma2")))
    x = torch.randint(3, 90, (2, 9))
    logits, h = net(x, hidden_layer=0)
    assert logits.shape == (2, 9, 99) and h.shape == (2, 9, 32)
    ref = net.hf(input_ids=x, output_hidden_states=True)
    assert torch.allclose(h, ref.hidden_states[1], atol=1e-5) and torch.allclose(net(x), ref.logits, atol=1e-5)
    assert not torch.allclose(h, ref.hidden_states[2], atol=1e-2)  # block 0's output, not block 1's
    rmu = get_method("rmu", {"layer": 1, "layers": [0, 1], "steps": 1})
    assert [p.shape for p in rmu.trainable(net)] == [(32, 64), (32, 64)]
    save_checkpoint(net, tmp_path / "g2", tmp_path / "ckpt", {"stage": "test"})
    back, record = load_checkpoint(tmp_path / "ckpt")
    assert record["backend"] == "hf" and torch.equal(back(x), net(x))
    assert torch.allclose(AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")(x).logits, net(x), atol=1e-5)


def test_noise_with_beta_zero_is_a_pure_shrink(wm, tmp_path):
    noise(str(wm["base"]), str(tmp_path / "n"), study.init_name(0.25, 0.0), seed=0)
    (a, _), (b, _) = load_checkpoint(wm["base"]), load_checkpoint(tmp_path / "n")
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys() and all(torch.equal(pb[k], pa[k] * 0.75) for k in pa)


def test_lm_eval_accuracy_equals_a_hand_computed_argmax(wm):
    """lm-eval's multiple-choice accuracy on the in-memory model equals picking, by hand, the choice with the
    highest summed log-probability after `question\\nAnswer:` (choices prefixed by a space)."""
    net, _ = load_checkpoint(wm["base"])
    tok = load_tokenizer(wm["base"])
    scores = wmdp.WmdpEvaluator(tok, read_jsonl(wm["data"] / "eval.jsonl")).lm_eval_scores(net, "fp32", torch.device("cpu"))
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    docs = read_jsonl(Path(wm["cfg"]["lm_eval"]["include_path"]) / "tiny_wmdp_bio.json")[:8]
    correct = 0
    with torch.no_grad():
        for d in docs:
            ctx = enc(d["question"] + "\nAnswer:")
            lls = []
            for choice in d["choices"]:
                cont = enc(" " + choice)
                logp = torch.log_softmax(net(torch.tensor([ctx + cont[:-1]]))[0].float(), -1)
                lls.append(sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont)))
            correct += max(range(4), key=lambda i: (lls[i], -i)) == d["answer"]
    assert scores["acc_wmdp_bio"] == pytest.approx(correct / 8)
    assert scores["acc_forget"] == pytest.approx((scores["acc_wmdp_bio"] + scores["acc_wmdp_cyber"]) / 2)
    assert scores["acc_retain"] == scores["acc_mmlu"]


def test_attack_on_forget_data_lowers_forget_ce(wm, tmp_path):
    out = tmp_path / "curve.csv"
    relearn(str(wm["base"]), str(wm["data"] / "attack.jsonl"), str(wm["data"] / "train.jsonl"),
            str(wm["data"] / "eval.jsonl"), str(out),
            Attack(lrs=[3e-3], seeds=[0], steps=6, eval_every=6, batch_size=4, seq_len=48), family="forget",
            runtime=Runtime(precision="fp32", device="cpu"), seed=0)
    df = pd.read_csv(out)
    assert set(zip(df.data, df.lr, df.seed)) == {("forget", 3e-3, 0)}
    c = df.pivot_table(index="step", columns="metric", values="value")
    assert list(c.index) == [0, 6]
    assert c.loc[6, "ce_forget"] < c.loc[0, "ce_forget"] - 0.05
    assert {"acc_wmdp_bio", "acc_wmdp_cyber", "acc_mmlu", "acc_forget", "acc_retain", "ce_retain"} <= set(c.columns)


def test_heldout_attack_on_wmdp_splits_documents(wm):
    """The heldout family in the wmdp setting trains on half of the attack pool's documents; the forget rows
    it is scored on are of other documents (the eval split shares no document with the pool: all of them)."""
    from pipeline_py.attack_data import attack_rows, split_forget_facts

    pool, ev = read_jsonl(wm["data"] / "attack.jsonl"), read_jsonl(wm["data"] / "eval.jsonl")
    rows, w, scored = attack_rows("heldout", str(wm["data"] / "attack.jsonl"), str(wm["data"] / "train.jsonl"), ev,
                                  "wmdp", seed=0)
    assert rows == split_forget_facts(pool, "wmdp", 0, 0.5)[0] and sum(w) == pytest.approx(1.0)
    docs, pool_docs = {r["doc"] for r in rows}, {r["doc"] for r in pool}
    assert 0 < len(docs) < len(pool_docs)
    assert not docs & {r["doc"] for r in scored if r["forget"]}
    assert scored == ev


def test_quantize_attack_on_the_hf_model(wm, tmp_path):
    """The quantization attack on the Hugging Face stand-in (transformers' own layers): step-0 rows of every
    metric of the setting for int8 and 4 bits; int8 keeps the forget cross-entropy close to the model's."""
    from pipeline_py.stages.attack import evaluate, quantize

    rt = Runtime(precision="fp32", device="cpu")
    quantize(str(wm["base"]), str(wm["data"] / "eval.jsonl"), str(tmp_path / "quant.csv"),
             Attack(lrs=[3e-3], families=["quant"], seeds=[0], steps=6, eval_every=6), rt)
    q = pd.read_csv(tmp_path / "quant.csv")
    assert list(dict.fromkeys(q.data)) == ["quant8", "quant4"]
    assert set(q.step) == {0} and set(q.lr) == {0.0} and set(q.seed) == {0}
    by = q.pivot_table(index="metric", columns="data", values="value")
    assert {"acc_wmdp_bio", "acc_wmdp_cyber", "acc_mmlu", "acc_forget", "acc_retain", "ce_forget"} <= set(by.index)
    evaluate(str(wm["base"]), str(wm["data"] / "eval.jsonl"), str(tmp_path / "eval.csv"), "base", rt)
    ev = pd.read_csv(tmp_path / "eval.csv").set_index("metric").value
    assert set(by.index) == set(ev.index)
    assert by.loc["ce_forget", "quant8"] == pytest.approx(ev["ce_forget"], rel=0.02)


# ------------------------------------------------------------------------------------------ the DAG


@pytest.mark.e2e
def test_e2e_wmdp_dag_on_cpu(tmp_path):
    """The whole wmdp DAG (load_base -> maxent -> noise α 0.25 β 0 -> distill -> attack -> evaluate ->
    pareto_plot) on the stand-ins; the summary table and figures come out like the other settings'."""
    results = tmp_path / "results"
    config = write_config(tmp_path / "fx", results)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "pareto_plot", "--configfile",
                           str(config)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(results / "wmdp" / "summary.csv")
    models = study.models(Study.from_dict(merged_paper_config(config, base=REPO / "config.yaml")))
    assert models == ["base", "base/maxent", "base/maxent/undo_a0.25_b0.0"]
    assert set(summary.model) == set(models)
    assert summary.forget_attacked.between(0, 1).all() and summary.retain_before.between(0, 1).all()
    base = summary[summary.model == "base"].iloc[0]
    assert base.compute_fraction == 1.0  # no oracle: compute is relative to the base's pretraining
    ev = pd.read_csv(study.evaluation(str(results / "wmdp"), "base/maxent/undo_a0.25_b0.0", 0))
    assert {"acc_wmdp_bio", "acc_mmlu", "ce_forget", "ce_retain"} <= set(ev.metric)
    for fig in ("relearning_curves", "pareto", "robustness_vs_compute"):
        assert (results / "wmdp" / "figures" / f"{fig}.png").stat().st_size > 0
    ckpt = Path(study.ckpt(str(results / "wmdp"), "base/maxent/undo_a0.25_b0.0", 0))
    record = json.loads((ckpt.parent / "record.json").read_text())
    assert record["backend"] == "hf" and record["stage"] == "distill"


def test_gradient_accumulation_equals_one_big_batch():
    """Two micro-batches of 2 with grad_accum = 2 take the same optimizer step as one batch of 4."""
    from pipeline_py.train import TrainConfig, train

    x, y = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.randn(4, 1)
    nets = [torch.nn.Linear(3, 1) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    halves = iter([(x[:2], y[:2]), (x[2:], y[2:])])

    def micro():
        xb, yb = next(halves)
        return (nets[0](xb) - yb).pow(2).mean()

    train(nets[0], micro, TrainConfig(steps=1, lr=0.1, grad_accum=2, grad_clip=0.0), "accum")
    train(nets[1], lambda: (nets[1](x) - y).pow(2).mean(), TrainConfig(steps=1, lr=0.1, grad_clip=0.0), "full")
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match=re.escape("grad_accum = 0 is invalid: it must be an integer (> 0)")):
        TrainConfig(steps=1, lr=0.1, grad_accum=0)
