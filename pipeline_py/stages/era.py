"""The two stages of ERA (gradient routing): `pretrain_routed` and `ablate`.

`pretrain_routed` follows the base's recipe (same data, same example order, batch and LR schedule shape;
`era.steps_factor` may give it more steps than the base, since routing slows learning), so its compute is the
base's times the extra neurons' share and the step ratio; only the model is expanded and the gradients
routed. `ablate` deletes the extra neurons and runs a short coherence finetune on the
small labeled retain set, leaving a standard checkpoint that the attack, evaluation, noise and
distillation stages read like any unlearned model.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from ..batches import PackedStream, read_jsonl
from ..checkpoint import make_record, save_checkpoint
from ..config import Runtime
from ..losses import token_ce
from ..model import ModelConfig
from ..resume import Resume
from ..routing import (EraConfig, RoutedLM, RoutedStream, load_routed, route_weights, save_routed, stage_keys,
                       targets)
from ..tokenizer import load_tokenizer
from ..train import TrainConfig, setup_runtime, train
from .pretrain import lm_loss

log = logging.getLogger("pipeline_py")


def pretrain_routed(data: str, tokenizer: str, out: str, model: ModelConfig, train_cfg: TrainConfig, era: EraConfig,
                    runtime: Runtime, seed: int) -> None:
    """Pretrain the expanded model on the base's data with per-token routed gradients and the specialising
    L1 penalties (extra neurons outside labeled forget examples, original neurons at routed positions)."""
    ec, precision = era, runtime.precision
    dev = setup_runtime(runtime.threads, runtime.device)
    tok = load_tokenizer(Path(tokenizer).parent)
    cfg = dataclasses.replace(model, vocab_size=tok.get_vocab_size())
    tc = dataclasses.replace(train_cfg, steps=max(1, round(train_cfg.steps * ec.steps_factor)))
    torch.manual_seed(seed)
    net = RoutedLM(cfg, ec.layers, ec.extra).to(dev)
    rows = read_jsonl(data)
    stream = RoutedStream(tok, rows, tc.batch_size, tc.seq_len, seed, ec)
    log.info("pretrain_routed: %d of %d forget examples labeled for routing, layers %s, %d extra neurons each",
             stream.labeled.sum(), sum(r["forget"] for r in rows), list(ec.layers), ec.extra)

    def loss():
        b = next(stream)
        x = b["input_ids"].to(dev)
        route = tuple(w.to(dev) for w in route_weights(b["strength"], ec.forget_weight))
        ce = token_ce(net(x, route=route), b["labels"].to(dev))
        if not (ec.l1 or ec.l1_orig):
            return ce
        return ce + net.l1_penalty(targets(b["strength"]).to(dev), targets(b["forget"]).to(dev), ec.l1, ec.l1_orig)

    resume = Resume.for_stream(out, tc.save_every, stream, [data], stage="pretrain_routed", model=cfg, train=tc,
                               era=ec, precision=precision, seed=seed)
    train(net, loss, tc, "pretrain_routed", precision, dev, resume=resume)
    rec = make_record("pretrain_routed", net, None, stream.tokens_seen, labeled_examples=int(stream.labeled.sum()),
                      data=data, data_examples=len(rows), era=stage_keys(ec.to_dict(), "pretrain_routed"), routed_tokens=stream.routed_tokens)
    save_routed(net, Path(tokenizer).parent, out, rec)
    resume.clear()


def ablate(routed: str, retain: str, out: str, era: EraConfig, runtime: Runtime, seed: int) -> None:
    """Remove the extra neurons (input and output weights), then finetune `era.finetune_steps` steps on the
    labeled retain examples (packed, loss on every token) to restore coherence."""
    ec, precision = era, runtime.precision
    dev = setup_runtime(runtime.threads, runtime.device)
    routed_net, parent = load_routed(routed)
    net = routed_net.ablate().to(dev)
    del routed_net
    tok = load_tokenizer(routed)
    tc = TrainConfig(steps=max(1, ec.finetune_steps), lr=ec.finetune_lr, warmup=min(5, ec.finetune_steps // 10),
                     schedule="constant", log_every=max(1, ec.finetune_steps // 4))
    retain_rows = read_jsonl(retain)
    stream = PackedStream(tok, retain_rows, tc.batch_size, tc.seq_len, seed)
    steps = 0
    if ec.finetune_steps:
        steps = train(net, lambda: lm_loss(net, next(stream), dev), tc, "ablate[finetune]", precision, dev)
    labeled = len(retain_rows) if ec.finetune_steps else 0  # the labeled retain examples the finetune reads
    rec = make_record("ablate", net, parent, stream.tokens_seen, labeled_examples=labeled, steps=steps, routed=routed,
                      era=stage_keys(ec.to_dict(), "ablate"))
    save_checkpoint(net, routed, out, rec)

