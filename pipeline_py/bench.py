"""Speed of the pipeline on this machine: matmul peak, tokens/s and model-FLOPs utilisation (MFU) of the
training steps, and the wall time of the tiny end-to-end workflow. A benchmark, not a test.

    python -m pipeline_py.bench                              # arithmetic and language sizes, tiny e2e
    python -m pipeline_py.bench --sizes tiny --steps 3 --no-e2e --out /tmp/bench.json   # smoke check
    python -m pipeline_py.bench --breakdown results/tiny                # where a finished study's time went
    python -m pipeline_py.bench --precision --sizes arithmetic language # what precision 'auto' picks here
    python -m pipeline_py.bench --versus-undo --sizes arithmetic        # our loop vs an UNDO-style HF loop

Every step is timed through the pipeline's own loop (`train.train`) on batches built before timing:
- pretrain: next-token CE on packed rows [B, T];
- distill: the frozen teacher's forward under `inference_mode` plus the student's step on forward KL;
- relearn: the attack's step (constant LR, the attack's batch size).
Model FLOPs per token follow PaLM's count: 6·N + 12·L·D·T for a training step (N = parameters in
matrix multiplies, the lm_head included, the embedding lookup not), 2·N + 4·L·D·T for a frozen forward.
MFU = achieved model FLOP/s ÷ the measured dense matmul peak of the step's precision.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

from .atomic import atomic_path
from .losses import forward_kl, token_ce
from .model import ModelConfig, build_model
from .tokenizer import build_tokenizer
from .train import TrainConfig, autocast, cpu_has_bf16, measure_step_seconds, resolve_precision, setup_runtime, train

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Size:
    model: ModelConfig
    batch_size: int  # pretraining / distillation rows per step
    seq_len: int  # tokens per row
    attack_batch_size: int  # relearning rows per step


def sizes() -> dict[str, Size]:
    """The tiny smoke size, the default arithmetic study's model and the language setting's model, read
    from config.yaml and configs/language.yaml so the benchmark follows the configs."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    vocab = build_tokenizer().get_vocab_size()
    out = {
        "tiny": Size(ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=64), 8, 32, 8),
        "arithmetic": Size(ModelConfig(vocab_size=vocab, **cfg["model"]), cfg["pretrain"]["batch_size"],
                           cfg["pretrain"]["seq_len"], cfg["attack"]["batch_size"]),
    }
    lang_file = ROOT / "configs" / "language.yaml"
    if lang_file.is_file():
        lang = yaml.safe_load(lang_file.read_text())
        lang_vocab = lang.get("data", {}).get("vocab_size", 4096)
        out["language"] = Size(ModelConfig(vocab_size=lang_vocab, **lang["model"]), lang["pretrain"]["batch_size"],
                               lang["pretrain"]["seq_len"], lang["attack"]["batch_size"])
    return out


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048, min_time: float = 1.0) -> float:
    """Dense n×n matmul throughput in FLOP/s (2n³ per product), best of repeated timings."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    torch.mm(a, b)
    best, total, reps = 0.0, 0.0, 1
    while total < min_time:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        sync(device)
        dt = time.perf_counter() - t0
        total += dt
        best = max(best, 2 * n**3 * reps / dt)
        reps *= 2
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def flops_per_token(cfg: ModelConfig, seq_len: int, train_step: bool) -> float:
    """PaLM's model FLOPs per token: 6N + 12·L·D·T (training) or 2N + 4·L·D·T (forward only)."""
    n = cfg.n_layers * (4 * cfg.d_model**2 + 3 * cfg.d_model * cfg.d_ff) + cfg.d_model * cfg.vocab_size
    attn = cfg.n_layers * cfg.d_model * seq_len
    return 6 * n + 12 * attn if train_step else 2 * n + 4 * attn


def time_step(kind: str, size: Size, precision: str, device: torch.device, steps: int,
              compile_model: bool = False) -> dict:
    """Tokens/s and model FLOP/s of `steps` optimizer steps of one stage kind, after a short warm-up."""
    cfg = size.model
    B = size.attack_batch_size if kind == "relearn" else size.batch_size
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(4, cfg.vocab_size, (B, size.seq_len), generator=g).to(device) for _ in range(8)]
    student = build_model(cfg, 0).to(device)
    teacher = build_model(cfg, 1).to(device).requires_grad_(False) if kind == "distill" else None
    if compile_model:
        student.compile()
        if teacher is not None:
            teacher.compile()
    it = iter(range(10**9))

    def loss():
        x = batches[next(it) % len(batches)]
        if teacher is None:
            return token_ce(student(x), x)
        with torch.inference_mode(), autocast(precision, device):
            t_logits = teacher(x)
        return forward_kl(student(x), t_logits, x)

    schedule = "constant" if kind == "relearn" else "cosine"
    warm = 3 if not compile_model else 10
    train(student, loss, TrainConfig(steps=warm, lr=1e-4, batch_size=B, seq_len=size.seq_len, log_every=10**6,
                                     schedule=schedule), kind, precision, device)
    sync(device)
    t0 = time.perf_counter()
    train(student, loss, TrainConfig(steps=steps, lr=1e-4, batch_size=B, seq_len=size.seq_len, log_every=10**6,
                                     schedule=schedule), kind, precision, device)
    sync(device)
    dt = time.perf_counter() - t0
    tokens = steps * B * size.seq_len
    per_token = flops_per_token(cfg, size.seq_len, True)
    if kind == "distill":
        per_token += flops_per_token(cfg, size.seq_len, False)
    return {"tokens_per_s": tokens / dt, "model_flops_per_s": tokens * per_token / dt, "seconds": dt,
            "steps": steps, "batch_size": B, "seq_len": size.seq_len}


def tiny_workflow_seconds(cores: int) -> float:
    """Wall time of `snakemake pareto_plot` on configs/tiny.yaml from an empty results directory."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", "configs/tiny.yaml",
               "--config", f"results={tmp}/results", "--directory", str(ROOT), "-q", "--", "pareto_plot"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def run(size_names: list[str], steps: int, threads: int, device: str = "auto", e2e: bool = True,
        compile_model: bool = False) -> dict:
    dev = setup_runtime(threads, device)
    native_bf16 = torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_has_bf16()
    peaks = {"fp32": matmul_peak(torch.float32, dev),  # emulated bf16 is ~100x slower: a smaller product
             "bf16": matmul_peak(torch.bfloat16, dev, n=2048 if native_bf16 else 512)}
    precisions = ["fp32", "bf16"] if native_bf16 else ["fp32"]  # emulated bf16 is never used for training
    result = {"device": str(dev), "cpu_count": os.cpu_count(), "threads": threads, "native_bf16": native_bf16,
              "torch": torch.__version__, "compile": compile_model, "peak_flops": peaks, "rows": []}
    table = sizes()
    for name in size_names:
        if name not in table:
            raise SystemExit(f"--sizes: unknown size {name!r}; known: {sorted(table)}")
        for precision in precisions:
            for kind in ("pretrain", "distill", "relearn"):
                row = time_step(kind, table[name], precision, dev, steps, compile_model)
                row.update(size=name, stage=kind, precision=precision, mfu=row["model_flops_per_s"] / peaks[precision],
                           model=asdict(table[name].model))
                result["rows"].append(row)
                print(f"{name:11s} {kind:9s} {precision:5s} {row['tokens_per_s']:10.0f} tok/s "
                      f"{row['model_flops_per_s'] / 1e9:8.2f} GFLOP/s  MFU {100 * row['mfu']:5.1f} %", flush=True)
    if e2e:
        result["tiny_workflow_seconds"] = tiny_workflow_seconds(max(1, threads))
    return result


# ---- the study's own clock: where the wall time of a finished run went --------------------------------------

STAGE_CLASSES = ("data", "pretrain", "unlearn", "distill", "attack", "evaluation", "report", "other")
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def stage_class(job: str) -> str:
    """The stage class of a job named as its log/benchmark file is (relative to logs/, no extension)."""
    top, _, rest = job.partition("/")
    if top == "relearn":
        return "attack"
    if top == "evaluate":
        return "evaluation"
    if job in ("make_data", "filter_data"):
        return "data"
    if job.startswith(("pretrain", "load_base", "load_oracle")):
        return "pretrain"
    if job.startswith(("unlearn_", "ablate")):
        return "unlearn"
    if job.startswith(("noise_", "distill_", "match_oracle_", "oracle_fresh_init")):
        return "distill"
    if job in ("summarize", "pareto_plot") or top == "report":
        return "report"
    return "other"


def log_span(path: Path) -> float | None:
    """Seconds between the first and the last timestamped line of a job's log (None without two stamps)."""
    stamps = []
    for line in path.read_text(errors="replace").splitlines():
        m = TIMESTAMP.match(line)
        if m:
            stamps.append(time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000)
    return max(stamps) - min(stamps) if len(stamps) >= 2 else None


def tsv_seconds(path: Path) -> float | None:
    """Mean `s` (wall seconds) over the rows of a Snakemake benchmark TSV (several rows when `repeat` is used)."""
    lines = [ln.split("\t") for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < 2 or "s" not in lines[0]:
        return None
    col = lines[0].index("s")
    vals = [float(r[col]) for r in lines[1:] if len(r) > col]
    return sum(vals) / len(vals) if vals else None


def startup_seconds(repeats: int = 1) -> float:
    """Wall time of a fresh process importing what a job imports (`import torch, pipeline_py.stages.attack`)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, pipeline_py.stages.attack"], check=True, cwd=ROOT)
        best = min(best, time.perf_counter() - t0)
    return best


def collect_jobs(results: str | Path, startup: float) -> list[dict]:
    """Every job of a finished run under `results` (<setting>/seed*/ and <setting>/logs for the report): its
    wall seconds from its benchmark TSV (start-up included), else from its log's first/last timestamps plus
    `startup` (a log starts after the imports). Returns dicts: setting, seed, job, cls, wall, source."""
    jobs = []
    for setting_dir in sorted(p for p in Path(results).iterdir() if p.is_dir()):
        dirs = [(d.name, d) for d in sorted(setting_dir.glob("seed*")) if d.is_dir()] + [("", setting_dir)]
        for seed, d in dirs:
            found = {}
            for f in sorted((d / "benchmarks").glob("*.tsv")):
                if (s := tsv_seconds(f)) is not None:
                    found[f.stem] = (s, "benchmark")
            logs = d / "logs"
            for f in sorted(logs.rglob("*.log")) if logs.is_dir() else []:
                name = f.relative_to(logs).with_suffix("").as_posix()
                if name not in found and (s := log_span(f)) is not None:
                    found[name] = (s + startup, "log")
            jobs += [{"setting": setting_dir.name, "seed": seed, "job": name, "cls": stage_class(name), "wall": s,
                      "source": src} for name, (s, src) in sorted(found.items())]
            for j in jobs[len(jobs) - len(found):]:  # benchmark wall minus log span: the job's whole overhead
                f = logs / f"{j['job']}.log"
                if j["source"] == "benchmark" and f.is_file() and (span := log_span(f)) is not None:
                    j["overhead"] = j["wall"] - span
    return jobs


CHAIN = ("data", "pretrain", "unlearn", "noise", "distill", "attack")  # the path every study has, in order


def chain_step(job: str, cls: str) -> str | None:
    if job == "make_data":
        return "data"
    if job.startswith("noise_"):
        return "noise"
    if job == "ablate":
        return None  # counted with pretrain_routed: pretrain_routed -> ablate is one chain through the pretrain step
    return {"pretrain": "pretrain", "unlearn": "unlearn", "distill": "distill", "attack": "attack",
            "evaluation": "attack"}.get(cls)


def breakdown(results: str | Path, startup: float, cores: int = 2) -> dict:
    """Wall time by stage class (start-up split out as its own class), and the critical-path lower bound on
    `cores` cores: max(total job-seconds / cores, longest chain). The longest chain of a seed is the sum, over the
    steps make_data -> pretrain (or pretrain_routed + ablate) -> unlearn -> noise -> distill -> relearn/evaluate,
    of each step's longest job; the longest over seeds plus the report jobs (summarize, pareto_plot).
    Jobs run one thread each, so job-seconds are CPU-seconds."""
    jobs = collect_jobs(results, startup)
    if not jobs:
        raise SystemExit(f"--breakdown: no benchmark TSVs or timestamped logs under {results}")
    classes = {c: {"seconds": 0.0, "jobs": 0} for c in STAGE_CLASSES + ("start-up",)}
    for j in jobs:
        up = min(startup, j["wall"])
        classes[j["cls"]]["seconds"] += j["wall"] - up
        classes[j["cls"]]["jobs"] += 1
        classes["start-up"]["seconds"] += up
        classes["start-up"]["jobs"] += 1
    total = sum(j["wall"] for j in jobs)
    for c in classes.values():
        c["share"] = c["seconds"] / total
    chains = {}
    for (setting, seed) in {(j["setting"], j["seed"]) for j in jobs if j["seed"]}:
        mine = {j["job"]: j["wall"] for j in jobs if (j["setting"], j["seed"]) == (setting, seed)}
        step_max = dict.fromkeys(CHAIN, 0.0)
        for j in jobs:
            if (j["setting"], j["seed"]) != (setting, seed) or (step := chain_step(j["job"], j["cls"])) is None:
                continue
            wall = j["wall"] + (mine.get("ablate", 0.0) if j["job"] == "pretrain_routed" else 0.0)
            step_max[step] = max(step_max[step], wall)
        chains[(setting, seed)] = step_max
    report = {s: sum(j["wall"] for j in jobs if j["setting"] == s and not j["seed"]) for s in {j["setting"] for j in jobs}}
    longest_key = max(chains, key=lambda k: sum(chains[k].values()) + report.get(k[0], 0.0)) if chains else None
    chain = dict(chains[longest_key]) if longest_key else {}
    if longest_key:
        chain["report"] = report.get(longest_key[0], 0.0)
    chain_s = sum(chain.values())
    overheads = [j["overhead"] for j in jobs if "overhead" in j]
    return {"jobs": len(jobs), "total_seconds": total, "startup_per_job": startup, "classes": classes,
            "cores": cores, "longest_chain": chain, "longest_chain_seconds": chain_s,
            "longest_chain_of": "/".join(longest_key) if longest_key else None,
            "per_core_seconds": total / cores, "lower_bound_seconds": max(total / cores, chain_s),
            "from_benchmarks": sum(j["source"] == "benchmark" for j in jobs),
            "observed_overhead": sorted(overheads)[len(overheads) // 2] if overheads else None,
            "observed_overhead_jobs": len(overheads)}


def format_breakdown(b: dict) -> str:
    out = [f"{'class':11s} {'seconds':>9s} {'share':>6s} {'jobs':>5s}"]
    for name, c in b["classes"].items():
        if c["jobs"]:
            out.append(f"{name:11s} {c['seconds']:9.1f} {100 * c['share']:5.1f}% {c['jobs']:5d}")
    out.append(f"{'total':11s} {b['total_seconds']:9.1f} 100.0% {b['jobs']:5d}   "
               f"({b['from_benchmarks']} jobs timed by benchmark TSVs, the rest by log stamps + "
               f"{b['startup_per_job']:.1f} s start-up each)")
    if b.get("observed_overhead") is not None:
        out.append(f"observed per-job overhead (benchmark wall - log span, median of {b['observed_overhead_jobs']} "
                   f"jobs): {b['observed_overhead']:.1f} s, against {b['startup_per_job']:.1f} s of imports assumed")
    steps = " -> ".join(f"{k} {v:.1f}" for k, v in b["longest_chain"].items())
    out.append(f"longest chain ({b['longest_chain_of']}): {b['longest_chain_seconds']:.1f} s = {steps}")
    out.append(f"critical path on {b['cores']} cores >= max(total / {b['cores']} = {b['per_core_seconds']:.1f} s, "
               f"longest chain {b['longest_chain_seconds']:.1f} s) = {b['lower_bound_seconds']:.1f} s")
    return "\n".join(out)


# ---- side by side with an UNDO-style loop (bench/undo_reference.py) ------------------------------------------

def load_reference():
    """bench/undo_reference.py (outside the package: the pipeline never imports it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("undo_reference", ROOT / "bench" / "undo_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def pipeline_relearn_seconds(size: Size, batches, eval_batches, steps: int, eval_every: int, dev) -> float:
    """The pipeline's attack: train.train at constant LR, the check hook evaluating (inference_mode forwards
    over the evaluation batches) at step 0, every `eval_every` steps and after the last."""
    net = build_model(size.model, 0).to(dev)
    it = iter(range(10**9))

    def check(step: int) -> bool:
        with torch.inference_mode():
            sum(token_ce(net(x), x).item() for x in eval_batches)
        return False

    cfg = TrainConfig(steps=steps, lr=1e-4, batch_size=size.attack_batch_size, seq_len=size.seq_len,
                      schedule="constant", log_every=10**6)
    def loss():
        x = batches[next(it) % len(batches)]
        return token_ce(net(x), x)

    dt, _ = _timed(lambda: train(net, loss, cfg, "relearn", "fp32", dev, check=check, check_every=eval_every))
    return dt


def versus_undo(size_names: list[str], steps: int, threads: int, eval_batches_n: int = 15,
                attack_steps: int | None = None) -> dict:
    """Seconds per step of the pipeline's loop and of the UNDO-style reference at the same model size, batch and
    step count, fp32, on the same thread count; ratios = reference ÷ pipeline (our speed-up). A relearn run is
    `attack_steps` (config.yaml's attack.steps) steps evaluated every config.yaml attack.eval_every steps by the
    pipeline and every 5 by the reference, each evaluation a forward over `eval_batches_n` attack-sized batches
    (15 cost about 5 training steps, config.yaml's estimate of an evaluation)."""
    ref = load_reference()
    dev = setup_runtime(threads, "cpu")
    cfg_yaml = yaml.safe_load((ROOT / "config.yaml").read_text())
    eval_every = int(cfg_yaml["attack"]["eval_every"])
    attack_steps = attack_steps or int(cfg_yaml["attack"]["steps"])  # one attack run of config.yaml
    table = sizes()
    out = {"threads": threads, "torch": torch.__version__, "pipeline_eval_every": eval_every,
           "reference_eval_every": ref.EVAL_EVERY, "attack_steps": attack_steps, "eval_batches": eval_batches_n,
           "rows": []}
    pipe_up = startup_seconds()
    ref_up = ref.import_seconds()
    out["startup"] = {"pipeline": pipe_up, "reference": ref_up, "ratio": ref_up / pipe_up}
    for name in size_names:
        size = table[name]
        g = torch.Generator().manual_seed(0)
        row = {"size": name}
        for kind in ("pretrain", "distill"):
            B = size.batch_size
            batches = [torch.randint(4, size.model.vocab_size, (B, size.seq_len), generator=g) for _ in range(8)]
            ours = time_step(kind, size, "fp32", dev, steps)["seconds"] / steps
            student = ref.build_reference(size.model, 0)
            if kind == "pretrain":
                ref.pretrain_steps(student, batches, 3)  # warm-up, as time_step does
                dt, losses = _timed(lambda: ref.pretrain_steps(student, batches, steps))
            else:
                teacher = ref.build_reference(size.model, 1).requires_grad_(False)
                ref.distill_steps(student, teacher, batches, 3)
                dt, losses = _timed(lambda: ref.distill_steps(student, teacher, batches, steps))
            row[kind] = {"pipeline_s_per_step": ours, "reference_s_per_step": dt / steps, "ratio": dt / steps / ours,
                         "batch": [B, size.seq_len]}
        B = size.attack_batch_size
        batches = [torch.randint(4, size.model.vocab_size, (B, size.seq_len), generator=g) for _ in range(8)]
        evals = [torch.randint(4, size.model.vocab_size, (B, size.seq_len), generator=g) for _ in range(eval_batches_n)]
        ours = pipeline_relearn_seconds(size, batches, evals, attack_steps, eval_every, dev)
        model = ref.build_reference(size.model, 0)
        theirs, _ = _timed(lambda: ref.relearn_run(model, batches, evals, attack_steps))
        row["relearn"] = {"pipeline_s": ours, "reference_s": theirs, "ratio": theirs / ours, "batch": [B, size.seq_len],
                          "steps": attack_steps}
        row["relearn_run_with_startup"] = {"pipeline_s": ours + pipe_up, "reference_s": theirs + ref_up,
                                           "ratio": (theirs + ref_up) / (ours + pipe_up)}
        out["rows"].append(row)
        for k in ("pretrain", "distill"):
            r = row[k]
            print(f"{name:11s} {k:9s} pipeline {1e3 * r['pipeline_s_per_step']:8.1f} ms/step  reference "
                  f"{1e3 * r['reference_s_per_step']:8.1f} ms/step  speed-up x{r['ratio']:.2f}", flush=True)
        r = row["relearn"]
        print(f"{name:11s} relearn   {attack_steps} steps: pipeline (eval every {eval_every}) {r['pipeline_s']:.2f} s  "
              f"reference (eval every {ref.EVAL_EVERY}) {r['reference_s']:.2f} s  speed-up x{r['ratio']:.2f}; "
              f"with process start-up x{row['relearn_run_with_startup']['ratio']:.2f}", flush=True)
    print(f"process start-up: pipeline {pipe_up:.2f} s (import torch, pipeline_py.stages.attack), reference "
          f"{ref_up:.2f} s (import torch, transformers' Llama)  x{ref_up / pipe_up:.2f}")
    return out


def precision_report(size_names: list[str], threads: int, device: str = "auto") -> dict:
    """What precision 'auto' resolves to here for each size's pretraining step, with both timings measured now
    (bf16 timed even where it is not native, to show by how much it loses; never cached from here)."""
    dev = setup_runtime(threads, device)
    native = cpu_has_bf16() if dev.type == "cpu" else torch.cuda.is_bf16_supported()
    out = {"device": str(dev), "native_bf16": native, "threads": threads, "rows": []}
    for name in size_names:
        size = sizes()[name]
        net = build_model(size.model, 0)
        t = measure_step_seconds(net, dev, size.batch_size, size.seq_len, ("fp32", "bf16"), rounds=3)
        chosen = resolve_precision("auto", dev, net, size.batch_size, size.seq_len)
        out["rows"].append({"size": name, "fp32_s": t["fp32"], "bf16_s": t["bf16"], "auto": chosen,
                            "batch": [size.batch_size, size.seq_len]})
        print(f"{name:11s} B{size.batch_size}xT{size.seq_len} forward+backward: fp32 {1e3 * t['fp32']:.1f} ms, "
              f"bf16 {1e3 * t['bf16']:.1f} ms ({'native' if native else 'emulated'}) -> auto picks {chosen}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipeline_py.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["arithmetic", "language"], help="model sizes to time")
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps per row")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models")
    ap.add_argument("--no-e2e", dest="e2e", action="store_false", help="skip the tiny workflow timing")
    ap.add_argument("--out", default="results/bench.json", help="JSON file to write")
    ap.add_argument("--breakdown", metavar="RESULTS_DIR", help="only: where a finished run's wall time went")
    ap.add_argument("--startup", type=float, help="--breakdown: seconds of start-up per job (default: measured)")
    ap.add_argument("--cores", type=int, default=2, help="--breakdown: cores of the critical-path bound")
    ap.add_argument("--precision", action="store_true", help="only: what precision 'auto' picks here, and why")
    ap.add_argument("--versus-undo", action="store_true", help="only: the pipeline's loop vs bench/undo_reference.py")
    ap.add_argument("--attack-steps", type=int, help="--versus-undo: steps of the relearn run (config.yaml's)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [s for s in args.sizes if s in sizes() or s != "language"]  # language needs configs/language.yaml
    if args.breakdown:
        startup = args.startup if args.startup is not None else startup_seconds()
        res = breakdown(args.breakdown, startup, args.cores)
        print(format_breakdown(res))
    elif args.precision:
        res = precision_report(names, args.threads, args.device)
    elif args.versus_undo:
        res = versus_undo(names, args.steps, args.threads, attack_steps=args.attack_steps)
    else:
        res = run(names, args.steps, args.threads, args.device, args.e2e, args.compile)
        print(f"matmul peak: fp32 {res['peak_flops']['fp32'] / 1e9:.1f} GFLOP/s, "
              f"bf16 {res['peak_flops']['bf16'] / 1e9:.1f} GFLOP/s ({'native' if res['native_bf16'] else 'emulated'})")
        if "tiny_workflow_seconds" in res:
            print(f"tiny workflow (configs/tiny.yaml, pareto_plot): {res['tiny_workflow_seconds']:.1f} s")
    with atomic_path(args.out) as tmp:  # creates the parent directory
        Path(tmp).write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
