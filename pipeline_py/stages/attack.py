"""relearn (the relearning attack on one model) and evaluate (a model's metrics before any attack)."""
from __future__ import annotations

import pandas as pd

from ..attack_data import attack_mixture
from ..batches import PackedStream, read_jsonl
from ..checkpoint import atomic_path, load_checkpoint
from ..config import Attack, Runtime
from ..settings import setting_of
from ..tokenizer import load_tokenizer
from ..train import TrainConfig, setup_runtime, train
from .pretrain import lm_loss


def relearn(model: str, attack: str, retain: str, eval_data: str, out: str, cfg: Attack, data: str, lr: float,
            seed: int, runtime: Runtime) -> None:
    """The relearning attack: AdamW at constant `lr` on forget data (`data` 'forget') or on a mix of forget
    and retain data (`data` 'mix': a `cfg.mix_forget_fraction` share of forget examples, the rest retain
    examples from `retain`), evaluated every `cfg.eval_every` steps from step 0. Writes the whole curve as a
    tidy CSV (step, metric, value, lr, seed, data)."""
    precision = runtime.precision
    dev = setup_runtime(runtime.threads, runtime.device)
    net, _ = load_checkpoint(model)
    tok = load_tokenizer(model)
    rows, weights = attack_mixture(attack, data, retain, cfg.mix_forget_fraction)
    stream = PackedStream(tok, rows, cfg.batch_size, cfg.seq_len, seed, weights=weights)
    evaluator = setting_of(eval_data).evaluator(tok, read_jsonl(eval_data))
    curve = []

    def check(step: int) -> bool:
        curve.extend({"step": step, "metric": k, "value": v} for k, v in evaluator(net, precision, dev).items())
        return False

    tc = TrainConfig(steps=cfg.steps, lr=lr, batch_size=cfg.batch_size, seq_len=cfg.seq_len, schedule="constant",
                     weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, log_every=max(1, cfg.steps // 5))
    train(net, lambda: lm_loss(net, next(stream), dev), tc, f"relearn[lr={lr}]", precision, dev,
          check=check, check_every=cfg.eval_every)
    df = pd.DataFrame(curve).assign(lr=lr, seed=seed, data=data)
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)


def evaluate(model: str, eval_data: str, out: str, name: str, runtime: Runtime) -> None:
    """Metrics of one model before any attack, on the full evaluation set: one row per metric."""
    dev = setup_runtime(runtime.threads, runtime.device)
    net, _ = load_checkpoint(model)
    evaluator = setting_of(eval_data).evaluator(load_tokenizer(model), read_jsonl(eval_data))
    before = evaluator(net.to(dev), runtime.precision, dev)
    rows = [{"model": name, "phase": "before", "metric": k, "value": v} for k, v in before.items()]
    with atomic_path(out) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
