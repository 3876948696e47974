"""pretrain: the base (all data) and the oracle (retain data only), one recipe."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..batches import PackedStream, read_jsonl
from ..checkpoint import make_record, save_checkpoint
from ..config import Runtime
from ..losses import token_ce
from ..model import ModelConfig, build_model
from ..resume import Resume
from ..tokenizer import load_tokenizer
from ..train import TrainConfig, setup_runtime, train


def lm_loss(model, batch: dict, dev) -> torch.Tensor:
    """Next-token CE of a packed batch {input_ids, labels} [B, T]."""
    return token_ce(model(batch["input_ids"].to(dev)), batch["labels"].to(dev))


def pretrain(data: str, tokenizer: str, out: str, model: ModelConfig, train_cfg: TrainConfig, runtime: Runtime,
             seed: int) -> None:
    """Train a fresh model on `data` (all of the base mixture, or the oracle's retain-only data)."""
    dev = setup_runtime(runtime.threads, runtime.device)
    tok = load_tokenizer(Path(tokenizer).parent)
    cfg, tc = dataclasses.replace(model, vocab_size=tok.get_vocab_size()), train_cfg
    net = build_model(cfg, seed).to(dev)
    rows = read_jsonl(data)
    stream = PackedStream(tok, rows, tc.batch_size, tc.seq_len, seed)
    resume = Resume.for_stream(out, tc.save_every, stream, [data], stage="pretrain", model=cfg, train=tc,
                               precision=runtime.precision, seed=seed)
    train(net, lambda: lm_loss(net, next(stream), dev), tc, "pretrain", runtime.precision, dev, resume=resume)
    rec = make_record("pretrain", net, None, stream.tokens_seen, data=data, data_examples=len(rows))
    save_checkpoint(net, Path(tokenizer).parent, out, rec)
    resume.clear()
