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
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

from .atomic import atomic_path
from .clock import breakdown, format_breakdown, startup_seconds
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
              compile_model: bool = False, students: int = 1) -> dict:
    """Tokens/s and model FLOP/s of `steps` optimizer steps of one stage kind, after a short warm-up;
    distill with `students` > 1 trains that many students on one teacher forward per batch (as the
    distill_students rule does), and the figures are per student."""
    cfg = size.model
    B = size.attack_batch_size if kind == "relearn" else size.batch_size
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(4, cfg.vocab_size, (B, size.seq_len), generator=g).to(device) for _ in range(8)]
    nets = torch.nn.ModuleList(build_model(cfg, i).to(device) for i in range(students if kind == "distill" else 1))
    teacher = build_model(cfg, 1000).to(device).requires_grad_(False) if kind == "distill" else None
    if compile_model:
        for m in (*nets, teacher):
            if m is not None:
                m.compile()
    student = nets if len(nets) > 1 else nets[0]
    it = iter(range(10**9))

    def loss():
        x = batches[next(it) % len(batches)]
        if teacher is None:
            return token_ce(student(x), x)
        with torch.inference_mode(), autocast(precision, device):
            t_logits = teacher(x)
        return sum(forward_kl(net(x), t_logits, x) for net in nets)

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
    dt /= len(nets)  # per student
    tokens = steps * B * size.seq_len
    per_token = flops_per_token(cfg, size.seq_len, True)
    if kind == "distill":
        per_token += flops_per_token(cfg, size.seq_len, False) / len(nets)
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


EVAL_SET = (2000, 28, 64)  # sequences, tokens each, sequences per forward: the default arithmetic evaluation set
# (seed 0: 1,987 problems, 54,609 padded tokens, in Evaluator's batches of 64)


def versus_undo(size_names: list[str], steps: int, threads: int, eval_set: tuple[int, int, int] = EVAL_SET,
                attack_steps: int | None = None) -> dict:
    """Seconds per step of the pipeline's loop and of the UNDO-style reference at the same model size, batch and
    step count, fp32, on the same thread count; ratios = reference ÷ pipeline (our speed-up). A relearn run is
    `attack_steps` (config.yaml's attack.steps) steps evaluated every config.yaml attack.eval_every steps by the
    pipeline and every 5 by the reference, each evaluation a forward over `eval_set` (random tokens shaped as the
    default study's evaluation set: sequences, their length, sequences per batch), the same batches for both."""
    ref = load_reference()
    dev = setup_runtime(threads, "cpu")
    cfg_yaml = yaml.safe_load((ROOT / "config.yaml").read_text())
    eval_every = int(cfg_yaml["attack"]["eval_every"])
    attack_steps = attack_steps or int(cfg_yaml["attack"]["steps"])  # one attack run of config.yaml
    table = sizes()
    out = {"threads": threads, "torch": torch.__version__, "pipeline_eval_every": eval_every,
           "reference_eval_every": ref.EVAL_EVERY, "attack_steps": attack_steps, "eval_set": list(eval_set),
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
        # the default's three students of one teacher share its forward (distill_students): per student
        ours = time_step("distill", size, "fp32", dev, steps, students=3)["seconds"] / steps
        theirs = row["distill"]["reference_s_per_step"]
        row["distill_3_students"] = {"pipeline_s_per_step": ours, "reference_s_per_step": theirs,
                                     "ratio": theirs / ours, "batch": [size.batch_size, size.seq_len]}
        B = size.attack_batch_size
        batches = [torch.randint(4, size.model.vocab_size, (B, size.seq_len), generator=g) for _ in range(8)]
        n, T, per = eval_set
        evals = [torch.randint(4, size.model.vocab_size, (min(per, n - i), T), generator=g) for i in range(0, n, per)]
        ours = pipeline_relearn_seconds(size, batches, evals, attack_steps, eval_every, dev)
        model = ref.build_reference(size.model, 0)
        theirs, _ = _timed(lambda: ref.relearn_run(model, batches, evals, attack_steps))
        row["relearn"] = {"pipeline_s": ours, "reference_s": theirs, "ratio": theirs / ours, "batch": [B, size.seq_len],
                          "steps": attack_steps}
        row["relearn_run_with_startup"] = {"pipeline_s": ours + pipe_up, "reference_s": theirs + ref_up,
                                           "ratio": (theirs + ref_up) / (ours + pipe_up)}
        out["rows"].append(row)
        for k in ("pretrain", "distill", "distill_3_students"):
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
