"""The attacks on one model, and evaluate (its metrics before any attack).

`relearn` runs one finetuning attack family (forget, mix, retain, heldout; pipeline_py.attack_data) at every
learning rate and attack seed of the grid, one run after another in one process, and writes every curve to
one tidy CSV. `quantize` is the zero-step attack: the weights rounded to int8 and to 4 bits, then evaluated.
"""
from __future__ import annotations

import copy
import logging

import pandas as pd

from ..attack_data import attack_rows
from ..batches import PackedStream, read_jsonl
from ..checkpoint import atomic_path, load_checkpoint
from ..config import Attack, Runtime
from ..quant import quantize_model
from ..settings import get_setting, setting_name, setting_of
from ..tokenizer import load_tokenizer
from ..train import TrainConfig, setup_runtime, train
from .pretrain import lm_loss

log = logging.getLogger("pipeline_py")


def relearn(model: str, attack: str, retain: str, eval_data: str, out: str, cfg: Attack, family: str,
            runtime: Runtime, seed: int) -> None:
    """One attack family on one model: AdamW at a constant LR for `cfg.steps` steps, for every LR of
    `cfg.lrs` and attack seed of `cfg.seeds`, each run from the model's own weights, evaluated every
    `cfg.eval_every` steps from step 0. The data order follows the attack seed and the study's `seed`
    together, so seeds that share one pretrained model still attack it with different draws.
    Writes one CSV: step, metric, value, lr, seed (the attack seed), data (the family)."""
    precision = runtime.precision
    dev = setup_runtime(runtime.threads, runtime.device)
    start, _ = load_checkpoint(model)
    tok = load_tokenizer(model)
    name = setting_name(eval_data)
    setting, eval_rows = get_setting(name), read_jsonl(eval_data)
    frames = []
    for aseed in cfg.seeds:
        draw = 1000 * seed + aseed  # distinct for every (study seed, attack seed) pair below 1000 attack seeds
        rows, weights, scored = attack_rows(family, attack, retain, eval_rows, name, draw, cfg.mix_forget_fraction,
                                            cfg.heldout_fraction)
        evaluator = setting.evaluator(tok, scored)
        at_start = evaluator(start.to(dev), precision, dev)  # step 0 of every LR's run: the same weights
        stream = PackedStream(tok, rows, cfg.batch_size, cfg.seq_len, draw, weights=weights)  # tokenized once
        fresh = stream.state_dict()  # every LR's run draws the same batches from here
        for lr in cfg.lrs:
            net = copy.deepcopy(start)
            stream.load_state_dict(fresh)
            curve = []

            def check(step: int) -> bool:
                metrics = at_start if step == 0 else evaluator(net, precision, dev)
                curve.extend({"step": step, "metric": k, "value": v} for k, v in metrics.items())
                return False

            tc = TrainConfig(steps=cfg.steps, lr=lr, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                             schedule="constant", weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                             log_every=max(1, cfg.steps // 5))
            train(net, lambda: lm_loss(net, next(stream), dev), tc, f"relearn[{family}, lr={lr}, seed={aseed}]",
                  precision, dev, check=check, check_every=cfg.eval_every)
            frames.append(pd.DataFrame(curve).assign(lr=lr, seed=aseed, data=family))
    with atomic_path(out) as tmp:
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False)


def quantize(model: str, eval_data: str, out: str, cfg: Attack, runtime: Runtime) -> None:
    """The quantization attack: every linear layer's weights rounded to nearest on a symmetric per-output-channel
    grid of `bits` for each of `cfg.quant_bits`, no training; the rows say data 'quant<bits>', step 0."""
    dev = setup_runtime(runtime.threads, runtime.device)
    net, _ = load_checkpoint(model)
    evaluator = setting_of(eval_data).evaluator(load_tokenizer(model), read_jsonl(eval_data))
    rows = []
    for bits in cfg.quant_bits:
        metrics = evaluator(quantize_model(net, bits).to(dev), runtime.precision, dev)
        log.info("quantize: %d bits: %s", bits, metrics)
        rows += [{"step": 0, "metric": k, "value": v, "lr": 0.0, "seed": 0, "data": f"quant{bits}"}
                 for k, v in metrics.items()]
    with atomic_path(out) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def evaluate(model: str, eval_data: str, out: str, name: str, runtime: Runtime) -> None:
    """Metrics of one model before any attack, on the full evaluation set: one row per metric."""
    dev = setup_runtime(runtime.threads, runtime.device)
    net, _ = load_checkpoint(model)
    evaluator = setting_of(eval_data).evaluator(load_tokenizer(model), read_jsonl(eval_data))
    before = evaluator(net.to(dev), runtime.precision, dev)
    rows = [{"model": name, "phase": "before", "metric": k, "value": v} for k, v in before.items()]
    with atomic_path(out) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
