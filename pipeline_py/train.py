"""The one training loop of the pipeline: pretraining, unlearning, distillation and the relearning attack
differ only in the loss closure they pass in and the data it draws."""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from .section import Section, key

if TYPE_CHECKING:
    from .resume import Resume

log = logging.getLogger("pipeline_py")

SCHEDULES = ("cosine", "constant")
PRECISIONS = ("bf16", "fp32", "auto")


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Section):
    """A training run of the one loop: its length, optimiser and batches."""

    steps: int = key(doc="optimizer steps (an upper bound when a stop rule ends training early)", gt=0)
    lr: float = key(doc="peak AdamW learning rate", gt=0)
    batch_size: int = key(32, "sequences per step", gt=0)
    seq_len: int = key(64, "tokens per packed sequence", gt=0)
    warmup: int = key(0, "linear warm-up steps", ge=0)
    schedule: str = key("cosine", "'cosine' decays towards min_lr_ratio * lr over the steps; 'constant' keeps lr",
                        choices=SCHEDULES)
    min_lr_ratio: float = key(0.1, "floor of the cosine schedule, as a share of lr", ge=0, le=1)
    weight_decay: float = key(0.0, "AdamW decoupled weight decay (matrices only)", ge=0)
    grad_clip: float = key(1.0, "max global gradient norm; 0 disables clipping", ge=0)
    log_every: int = key(100, "steps between progress lines in the log", gt=0)
    save_every: int = key(0, "steps between resume states (a killed job continues from the last); 0 = none", ge=0)
    grad_accum: int = key(1, "micro-batches of batch_size whose gradients make one optimizer step", gt=0)

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "constant":
            return self.lr
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def setup_runtime(threads: int = 1, device: str = "auto") -> torch.device:
    """Thread count, denormal flushing (tiny models stall on denormals on CPU) and the device."""
    torch.set_num_threads(max(1, threads))
    torch.set_flush_denormal(True)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (read once per process: every 'auto' autocast asks)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_native(device: torch.device) -> bool:
    """Whether the device computes bf16 natively (emulated bf16 on an AVX2-only CPU is ~100x slower: never
    measured, never chosen by `auto`)."""
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()


# ---- precision "auto": chosen by a one-off measurement, cached per machine and model shape ----------------

BF16_MARGIN = 0.10  # bf16 is chosen only when its step is more than 10 % faster than fp32's
_DECIDED: dict[str, str] = {}  # device -> the precision "auto" last resolved to in this process
_DEFAULTED: set[str] = set()  # devices whose default (no model measured yet) was logged


def precision_cache_file() -> Path:
    """$UNDO_PIPELINE_CACHE/precision.json, else $XDG_CACHE_HOME (or ~/.cache)/undo-pipeline/precision.json."""
    root = os.environ.get("UNDO_PIPELINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "undo-pipeline")
    return Path(root) / "precision.json"


def machine_key(device: torch.device) -> str:
    """The processor that computes (CPU model name or GPU name), the torch version and the thread count."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or "cpu"
        with contextlib.suppress(OSError):
            name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                         if line.startswith("model name")), name)
        name += " native-bf16" if cpu_has_bf16() else ""
    return f"{device.type}:{name}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def shape_key(model: torch.nn.Module, batch_size: int, seq_len: int) -> str | None:
    """The model class, its sizes and the step's batch; None for a model without a token-LM config."""
    c = getattr(model, "cfg", None)
    if not all(hasattr(c, k) for k in ("vocab_size", "d_model", "n_layers")):
        return None
    dims = " ".join(f"{k}={getattr(c, k)}" for k in ("d_model", "n_layers", "n_heads", "d_ff", "vocab_size")
                    if hasattr(c, k))
    return f"{type(model).__name__} {dims} params={sum(p.numel() for p in model.parameters())} B={batch_size} T={seq_len}"


def measure_step_seconds(model: torch.nn.Module, device: torch.device, batch_size: int, seq_len: int,
                         precisions: tuple[str, ...], rounds: int = 5) -> dict[str, float]:
    """Seconds of one forward + backward (next-token CE) of a copy of `model` on random tokens, per precision:
    one warm-up step each, then `rounds` steps each, interleaved so that load from other processes hits
    both alike; the fastest step of each counts. The global RNG and the model itself are left untouched."""
    net = copy.deepcopy(model).to(device).train().requires_grad_(True)
    T = min(seq_len, getattr(net.cfg, "max_len", seq_len))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, net.cfg.vocab_size, (batch_size, T), generator=g).to(device)

    def step(precision: str) -> float:
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        with autocast(precision, device):
            out = net(x)
        logits = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                 x[:, 1:].reshape(-1))
        loss.backward()
        sync()
        net.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    best = {}
    for p in precisions:
        step(p)
    for _ in range(rounds):
        for p in precisions:
            best[p] = min(best.get(p, math.inf), step(p))
    return best


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, entry: dict) -> None:
    """Add one decision: re-read, merge, write a temporary sibling, rename (readers never see half a file)."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = entry
        fd, tmp = tempfile.mkstemp(prefix=".precision.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def resolve_precision(precision: str, device: torch.device, model: torch.nn.Module | None = None,
                      batch_size: int = 32, seq_len: int = 64) -> str:
    """'bf16' or 'fp32'. Explicit settings pass through. 'auto' is fp32 where bf16 is not native (no
    measurement); otherwise the faster of the two for this model's training step on this machine (bf16 only
    when more than BF16_MARGIN faster), measured once and cached in `precision_cache_file()` keyed by
    `machine_key` and `shape_key`. The choice and its reason (the two timings) are logged. Without a model
    (an evaluation before any training) 'auto' takes this process's last decision for the device, else fp32
    on a CPU (bf16 is slower at this project's sizes even where native) and bf16 on a GPU that supports it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    dev = str(device)
    if not bf16_native(device):
        if _DECIDED.get(dev) != "fp32":  # logged once: autocast asks again at every step and evaluation batch
            log.info("precision auto -> fp32: bf16 not supported natively on %s", dev)
        _DECIDED[dev] = "fp32"
        return "fp32"
    shape = shape_key(model, batch_size, seq_len) if model is not None else None
    if shape is None:
        if dev in _DECIDED:  # autocast calls inside or after train(): silent, the decision is logged once
            return _DECIDED[dev]
        chosen = "bf16" if device.type == "cuda" else "fp32"
        if dev not in _DEFAULTED:
            _DEFAULTED.add(dev)
            log.info("precision auto -> %s for now: no model shape to measure yet (the device's default)", chosen)
        return chosen
    key = f"{machine_key(device)}|{shape}"
    path = precision_cache_file()
    entry = _read_cache(path).get(key)
    if entry and entry.get("precision") in ("bf16", "fp32"):
        how = "cached in " + str(path)
    else:
        t = measure_step_seconds(model, device, batch_size, seq_len, ("fp32", "bf16"))
        entry = {"precision": "bf16" if t["bf16"] < (1 - BF16_MARGIN) * t["fp32"] else "fp32",
                 "fp32_s": t["fp32"], "bf16_s": t["bf16"], "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        _write_cache(path, key, entry)
        how = "measured now"
    _DECIDED[dev] = entry["precision"]
    log.info("precision auto -> %s: forward+backward step fp32 %.1f ms, bf16 %.1f ms (bf16 needs > %d %% faster; "
             "%s; %s)", entry["precision"], 1e3 * entry["fp32_s"], 1e3 * entry["bf16_s"], round(100 * BF16_MARGIN),
             how, shape)
    return entry["precision"]


def autocast(precision: str, device: torch.device, model: torch.nn.Module | None = None):
    """bf16 autocast (master weights stay fp32) or a no-op for fp32; 'auto' as `resolve_precision` decides."""
    precision = resolve_precision(precision, device, model) if precision == "auto" else precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, params=None) -> torch.optim.AdamW:
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    fused = bool(params) and all(p.is_cuda for p in params)  # one kernel per step on a GPU
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=fused or None)


def check_weights(params: list[torch.Tensor], names: dict[int, str], stage: str, step: int,
                  loss: torch.Tensor) -> None:
    """Raise if any weight is NaN or infinite (one fused norm, one device sync per step)."""
    if params and torch.isfinite(torch.nn.utils.get_total_norm(params)):
        return
    bad = next((p for p in params if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise FloatingPointError(f"{stage}: weight {names.get(id(bad), '?')} is NaN or inf after step {step} "
                                 f"(loss {loss.item():.6g}); stopping, no checkpoint written")


def train(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], cfg: TrainConfig, stage: str,
          precision: str = "bf16", device: torch.device = torch.device("cpu"), params=None,
          check: Callable[[int], bool] | None = None, check_every: int = 0,
          backward: Callable[[torch.Tensor], None] | None = None, resume: Resume | None = None,
          clip_groups: list[list[torch.Tensor]] | None = None) -> int:
    """Run up to `cfg.steps` AdamW steps of `loss_fn()`; return the number of steps taken.

    `check(step)` runs at step 0, every `check_every` steps and after the last step; returning True
    stops training (early stopping). A non-finite loss, or a non-finite weight after a step, stops the
    stage with an error naming the stage, the step and the loss. `backward(loss)` fills the gradients of
    a step (default `loss.backward()`; a SAM step re-evaluates the loss at perturbed weights there).
    `params` (default all) are the parameters the optimizer updates. With `resume`, training continues
    from a saved state when there is one and saves its state every `resume.every` steps. `clip_groups`
    (default: all parameters as one group) clips each group's gradient norm on its own: several models
    trained as one (students of one teacher) each keep the clipping they would get alone.
    """
    if backward is not None and cfg.grad_accum != 1:
        raise ValueError(f"{stage}: grad_accum = {cfg.grad_accum} cannot combine with a custom backward step (SAM)")
    model.to(device).train()
    precision = resolve_precision(precision, device, model, cfg.batch_size, cfg.seq_len)  # 'auto': once, measured
    opt = make_optimizer(model, cfg, params)
    trainable = [p for g in opt.param_groups for p in g["params"]]
    names = {id(p): n for n, p in model.named_parameters()}
    clip_sets = [{id(p) for p in g} for g in clip_groups] if clip_groups else None
    clip_lists = [[p for p in trainable if id(p) in s] for s in clip_sets] if clip_sets else [trainable]  # optimizer order
    start = resume.restore(model, opt) if resume else 0
    t0, step = time.time(), start
    if start == 0 and check and check(0):
        model.eval()
        return 0
    for step in range(start + 1, cfg.steps + 1):
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step - 1)
        opt.zero_grad(set_to_none=True)
        for _ in range(cfg.grad_accum):  # each micro-batch adds 1/grad_accum of its mean loss's gradient
            with autocast(precision, device):
                loss = loss_fn()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{stage}: loss is {loss.item()} at step {step}; stopping, no checkpoint written")
            if backward is None:
                (loss / cfg.grad_accum).backward()
            else:
                backward(loss)
        if cfg.grad_clip > 0:
            for group in clip_lists:
                torch.nn.utils.clip_grad_norm_(group, cfg.grad_clip)
        opt.step()
        check_weights(trainable, names, stage, step, loss)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.info("%s step %d/%d loss %.4f lr %.2e %.1f steps/s", stage, step, cfg.steps, loss.item(),
                     opt.param_groups[0]["lr"], (step - start) / (time.time() - t0))
        if check and ((check_every and step % check_every == 0) or step == cfg.steps):
            model.eval()
            stop = check(step)
            model.train()
            if stop:
                break
        if resume and resume.due(step, cfg.steps):
            resume.save(model, opt, step)
    model.eval()
    return step

