"""The one training loop of the pipeline: pretraining, unlearning, distillation and the relearning attack
differ only in the loss closure they pass in and the data it draws."""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
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


def cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(precision: str, device: torch.device):
    """bf16 autocast (master weights stay fp32) or a no-op for fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        ok = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
        precision = "bf16" if ok else "fp32"
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
          backward: Callable[[torch.Tensor], None] | None = None, resume: Resume | None = None) -> int:
    """Run up to `cfg.steps` AdamW steps of `loss_fn()`; return the number of steps taken.

    `check(step)` runs at step 0, every `check_every` steps and after the last step; returning True
    stops training (early stopping). A non-finite loss, or a non-finite weight after a step, stops the
    stage with an error naming the stage, the step and the loss. `backward(loss)` fills the gradients of
    a step (default `loss.backward()`; a SAM step re-evaluates the loss at perturbed weights there).
    `params` (default all) are the parameters the optimizer updates. With `resume`, training continues
    from a saved state when there is one and saves its state every `resume.every` steps.
    """
    if backward is not None and cfg.grad_accum != 1:
        raise ValueError(f"{stage}: grad_accum = {cfg.grad_accum} cannot combine with a custom backward step (SAM)")
    model.to(device).train()
    opt = make_optimizer(model, cfg, params)
    trainable = [p for g in opt.param_groups for p in g["params"]]
    names = {id(p): n for n, p in model.named_parameters()}
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
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
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

