"""unlearn: one unlearning method (a plug-in of pipeline_py.methods) applied to the base model."""
from __future__ import annotations

import logging

import torch

from ..batches import ExampleBatches, read_jsonl
from ..checkpoint import load_checkpoint, make_record, save_checkpoint
from ..config import Runtime, Unlearn
from ..methods import get_method
from ..methods.base import n_tokens
from ..tokenizer import load_tokenizer
from ..train import TrainConfig, autocast, setup_runtime, train

log = logging.getLogger("pipeline_py")


def to_device(batch: dict, dev) -> dict:
    return {k: v.to(dev) for k, v in batch.items()}


def unlearn(base: str, forget: str, retain: str, out: str, method: str, cfg: Unlearn, runtime: Runtime,
            seed: int) -> None:
    """Unlearn `method` (an entry of cfg.hparams) from the base on the labeled forget and retain sets.

    FLOPs: every loss evaluation with a graph counts its forget (+ retain) tokens as trained (a SAM step
    evaluates twice); the method's frozen reference/teacher forwards count as frozen tokens."""
    if method not in cfg.hparams:
        raise ValueError(f"unlearn.methods: {method!r} has no entry in unlearn.hparams ({sorted(cfg.hparams)})")
    params, precision = cfg.hparams[method], runtime.precision
    dev = setup_runtime(runtime.threads, runtime.device)
    torch.manual_seed(seed)  # methods that sample (RepNoise's noise) are reproducible
    m = get_method(method, params)
    net, parent = load_checkpoint(base)
    net.to(dev)
    m.prepare(net)
    trainable = m.trainable(net)
    net.requires_grad_(False)  # no gradients computed for parameters that do not train
    for p in trainable:
        p.requires_grad_(True)
    tok = load_tokenizer(base)
    f_rows = read_jsonl(forget)
    f_batches = ExampleBatches(tok, f_rows, cfg.batch_size, seed)
    r_batches = ExampleBatches(tok, read_jsonl(retain), cfg.batch_size, seed + 1)
    labeled = len(f_rows) + (len(r_batches.ids) if m.uses_retain else 0)  # labeled examples the method reads
    cur = {"trained_tokens": 0, "loss": None}

    def evaluate():  # the loss on the current batches
        cur["trained_tokens"] += n_tokens(cur["forget"]) + (n_tokens(cur["retain"]) if m.uses_retain else 0)
        return m.loss(net, cur["forget"], cur["retain"])

    def loss():
        cur["forget"] = to_device(next(f_batches), dev)
        cur["retain"] = to_device(next(r_batches), dev) if m.uses_retain else None
        value = evaluate()
        cur["loss"] = value.detach()
        return value

    def recompute():  # same batches, current weights (SAM's second evaluation)
        with autocast(precision, dev):
            return evaluate()

    def check(step: int) -> bool:
        stop = step > 0 and m.should_stop(cur["loss"].item())
        if stop:
            log.info("unlearn[%s]: stopping after step %d, loss %.4f", method, step, cur["loss"].item())
        return stop

    tc = TrainConfig(steps=m.steps, lr=m.lr, warmup=min(cfg.warmup, m.steps // 10), schedule="constant",
                     grad_clip=cfg.grad_clip, log_every=20)
    steps = train(net, loss, tc, f"unlearn[{method}]", precision, dev, params=trainable, check=check,
                  check_every=1, backward=lambda value: m.backward(value, recompute, trainable))
    net.requires_grad_(True)
    rec = make_record("unlearn", net, parent, cur["trained_tokens"], frozen_tokens=m.run.frozen_tokens,
                      labeled_examples=labeled, method=method, params=params, steps=steps)
    save_checkpoint(net, base, out, rec)
