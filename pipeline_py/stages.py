"""The pipeline's stages as plain functions: each reads files, writes files, and is called alike from a
Snakemake rule (workflow/scripts/stage.py), the command line (`python -m pipeline_py STAGE k=v ...`)
and pytest. Every model-writing stage writes a complete checkpoint or nothing."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd
import torch

from .attack_data import attack_mixture
from .batches import ExampleBatches, PackedStream, read_jsonl, write_jsonl
from .checkpoint import atomic_path, load_checkpoint, make_record, save_checkpoint
from .losses import forward_kl, token_ce
from .methods import get_method
from .methods.base import n_tokens
from .model import ModelConfig, build_model
from .noise import check_alpha_beta, shrink_perturb
from .report import load_curves, worst_case
from .resume import Resume
from .settings import get_setting, setting_of
from .tokenizer import load_tokenizer
from .train import TrainConfig, autocast, setup_runtime, train

log = logging.getLogger("pipeline_py")


def make_data(out_dir: str, data: dict, seed: int = 0, setting: str = "arithmetic") -> None:
    """Build one setting's corpus (train/eval/attack JSONL, tokenizer) and a manifest with checksums."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = get_setting(setting).make_data(out, data, seed)
    manifest = {"setting": setting, "seed": seed, **extra, "files": {}}
    for f in sorted(out.glob("*.jsonl")) + [out / "tokenizer.json"]:
        manifest["files"][f.name] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
        if f.suffix == ".jsonl":
            manifest["files"][f.name]["examples"] = sum(1 for line in f.open() if line.strip())
            log.info("make_data: %s %d examples", f.name, manifest["files"][f.name]["examples"])
    with atomic_path(out / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2))


def filter_data(train: str, oracle: str, forget: str, retain: str, n_labeled: int = 256, seed: int = 0) -> None:
    """The oracle's data (forget examples removed) and the small labeled forget/retain sets."""
    rows = read_jsonl(train)
    if n_labeled <= 0:
        raise ValueError(f"filter.n_labeled must be a positive integer, got {n_labeled!r}")
    write_jsonl([r for r in rows if not r["forget"]], oracle)
    rng = torch.Generator().manual_seed(seed)
    for flag, path in ((True, forget), (False, retain)):
        pool = [r for r in rows if r["forget"] == flag]
        pick = torch.randperm(len(pool), generator=rng)[:n_labeled].tolist()
        write_jsonl([pool[i] for i in sorted(pick)], path)
    log.info("filter_data: %d labeled of %d training examples per side", n_labeled, len(rows))


def pretrain(data: str, out: str, model: dict, train_cfg: dict, precision: str = "bf16", seed: int = 0,
             threads: int = 1, device: str = "auto") -> None:
    """Train a fresh model on `data` (all of the base mixture, or the oracle's retain-only data)."""
    dev = setup_runtime(threads, device)
    tok = load_tokenizer(Path(data).parent)
    cfg, tc = ModelConfig(vocab_size=tok.get_vocab_size(), **model), TrainConfig(**train_cfg)
    net = build_model(cfg, seed).to(dev)
    rows = read_jsonl(data)
    stream = PackedStream(tok, rows, tc.batch_size, tc.seq_len, seed)
    resume = Resume.for_stream(out, tc.save_every, stream, [data], stage="pretrain", model=cfg, train=tc,
                               precision=precision, seed=seed)
    train(net, lambda: lm_loss(net, next(stream), dev), tc, "pretrain", precision, dev, resume=resume)
    rec = make_record("pretrain", net, None, stream.tokens_seen, data=data, data_examples=len(rows))
    save_checkpoint(net, Path(data).parent, out, rec)
    resume.clear()


def to_device(batch: dict, dev) -> dict:
    return {k: v.to(dev) for k, v in batch.items()}


def lm_loss(model, batch: dict, dev) -> torch.Tensor:
    return token_ce(model(batch["input_ids"].to(dev)), batch["labels"].to(dev))


def unlearn(base: str, forget: str, retain: str, out: str, method: str, params: dict, batch_size: int = 32,
            precision: str = "bf16", seed: int = 0, threads: int = 1, device: str = "auto") -> None:
    """Apply one unlearning method (a plug-in of pipeline_py.methods) to the base model.

    FLOPs: every loss evaluation with a graph counts its forget (+ retain) tokens as trained (a SAM step
    evaluates twice); the method's frozen reference/teacher forwards count as frozen tokens."""
    dev = setup_runtime(threads, device)
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
    f_batches = ExampleBatches(tok, f_rows, batch_size, seed)
    r_batches = ExampleBatches(tok, read_jsonl(retain), batch_size, seed + 1)
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

    tc = TrainConfig(steps=m.steps, lr=m.lr, warmup=min(10, m.steps // 10), schedule="constant", log_every=20)
    steps = train(net, loss, tc, f"unlearn[{method}]", precision, dev, params=trainable, check=check,
                  check_every=1, backward=lambda value: m.backward(value, recompute, trainable))
    net.requires_grad_(True)
    rec = make_record("unlearn", net, parent, cur["trained_tokens"], frozen_tokens=m.run.frozen_tokens,
                      labeled_examples=labeled, method=method, params=params, steps=steps)
    save_checkpoint(net, base, out, rec)


def noise(teacher: str, out: str, alpha: float | None, beta: float = 0.1, seed: int = 0) -> None:
    """The student's starting point: shrink-and-perturb of the teacher, or a fresh init (`alpha` None)."""
    net, parent = load_checkpoint(teacher)
    if alpha is None:
        # Unlearn-and-Distill: a fresh random initialisation (of the same architecture for a pretrained model)
        net = net.fresh_copy(seed + 1000) if hasattr(net, "fresh_copy") else build_model(net.cfg, seed + 1000)
    else:
        check_alpha_beta(alpha, beta)
        shrink_perturb(net, alpha, beta, seed)
    save_checkpoint(net, teacher, out, make_record("noise", net, parent, 0, alpha=alpha, beta=beta))


def distill(teacher: str, student: str, data: str, eval_data: str, out: str, train_cfg: dict,
            stop_within: float | None = 0.05, check_every: int = 50, precision: str = "bf16", seed: int = 0,
            threads: int = 1, device: str = "auto", teacher_in_lineage: bool = True) -> None:
    """Forward KL(teacher ‖ student) on the unlabeled pretraining mixture (forget data included);
    stops early once the student's retain metric (the setting's) is within `stop_within` of the teacher's.

    FLOPs: student tokens trained, teacher tokens and the retain checks' tokens as forwards. The lineage
    adds the teacher's own lineage when the student does not descend from the teacher
    (`teacher_in_lineage` False: the oracle distilled into the base)."""
    dev = setup_runtime(threads, device)
    t_net, t_record = load_checkpoint(teacher)
    s_net, parent = load_checkpoint(student)
    t_net.to(dev).requires_grad_(False)
    tok = load_tokenizer(teacher)
    tc = TrainConfig(**train_cfg)
    stream = PackedStream(tok, read_jsonl(data), tc.batch_size, tc.seq_len, seed)
    setting = setting_of(eval_data)
    key = setting.METRICS.retain
    retain_eval = setting.evaluator(tok, [r for r in read_jsonl(eval_data) if not r["forget"]])
    target = retain_eval(t_net, precision, dev)[key]
    log.info("distill: teacher %s %.3f", key, target)

    def loss():
        b = next(stream)
        x = b["input_ids"].to(dev)
        with torch.inference_mode(), autocast(precision, dev):
            t_logits = t_net(x)  # [B, T, V], no graph kept for the frozen teacher
        return forward_kl(s_net(x), t_logits, b["labels"].to(dev))

    def check(step: int) -> bool:
        value = retain_eval(s_net, precision, dev)[key]
        log.info("distill step %d: student %s %.3f (teacher %.3f)", step, key, value, target)
        return stop_within is not None and step > 0 and setting.METRICS.within(value, target, stop_within)

    resume = Resume.for_stream(out, tc.save_every, stream, [f"{d}/model.safetensors" for d in (teacher, student)]
                               + [data, eval_data], stage="distill", train=tc, stop_within=stop_within,
                               check_every=check_every, precision=precision, seed=seed)
    steps = train(s_net, loss, tc, "distill", precision, dev, check=check, check_every=check_every, resume=resume)
    # retain checks as train() runs them (step 0, every check_every steps, the last step) plus the teacher's
    # one, counted from the steps taken so a resumed run counts what an uninterrupted one would
    n_checks = 1 + steps // check_every + (steps % check_every != 0) + 1
    eval_tokens = n_checks * getattr(retain_eval, "tokens", 0)  # an evaluator that does not count adds none
    if not teacher_in_lineage:
        parent = {**parent, "lineage_flops": parent.get("lineage_flops", 0) + t_record.get("lineage_flops", 0),
                  "lineage_labeled_examples": parent.get("lineage_labeled_examples", 0)
                  + t_record.get("lineage_labeled_examples", 0)}
    rec = make_record("distill", s_net, parent, stream.tokens_seen, frozen_tokens=stream.tokens_seen + eval_tokens,
                      steps=steps, teacher=teacher, eval_tokens=eval_tokens)
    save_checkpoint(s_net, teacher, out, rec)
    resume.clear()


def relearn(model: str, attack: str, eval_data: str, out: str, lr: float, steps: int = 150,
            eval_every: int = 10, batch_size: int = 16, seq_len: int = 64, seed: int = 0,
            precision: str = "bf16", threads: int = 1, device: str = "auto", data: str = "forget",
            retain: str | None = None, mix_forget_fraction: float = 0.5) -> None:
    """The relearning attack: AdamW at constant `lr` on forget data (`data` 'forget') or on a mix of forget
    and retain data (`data` 'mix': a `mix_forget_fraction` share of forget examples, the rest retain
    examples from `retain`), evaluated every `eval_every` steps from step 0. Writes the whole curve as a
    tidy CSV (step, metric, value, lr, seed, data)."""
    dev = setup_runtime(threads, device)
    net, _ = load_checkpoint(model)
    tok = load_tokenizer(model)
    rows, weights = attack_mixture(attack, data, retain, mix_forget_fraction)
    stream = PackedStream(tok, rows, batch_size, seq_len, seed, weights=weights)
    evaluator = setting_of(eval_data).evaluator(tok, read_jsonl(eval_data))
    curve = []

    def check(step: int) -> bool:
        curve.extend({"step": step, "metric": k, "value": v} for k, v in evaluator(net, precision, dev).items())
        return False

    tc = TrainConfig(steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len, schedule="constant",
                     weight_decay=0.0, grad_clip=1.0, log_every=max(1, steps // 5))
    train(net, lambda: lm_loss(net, next(stream), dev), tc, f"relearn[lr={lr}]", precision, dev,
          check=check, check_every=eval_every)
    df = pd.DataFrame(curve).assign(lr=lr, seed=seed, data=data)
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)


def evaluate(model: str, eval_data: str, curves: list[str], out: str, name: str, precision: str = "bf16",
             threads: int = 1, device: str = "auto", forget_metric: str | None = None,
             higher_is_better: bool | None = None) -> None:
    """Metrics of one model before the attack (full eval set) and after it (worst case over the LR grid and
    data choices at the last step, forget metric averaged over attack seeds), plus its compute. The
    forget metric and its direction default to the setting's."""
    dev = setup_runtime(threads, device)
    net, record = load_checkpoint(model)
    evaluator = setting_of(eval_data).evaluator(load_tokenizer(model), read_jsonl(eval_data))
    before = evaluator(net.to(dev), precision, dev)
    rows = [{"model": name, "phase": "before", "metric": k, "value": v} for k, v in before.items()]
    if curves:
        metrics = setting_of(eval_data).METRICS
        wc = worst_case(load_curves(list(curves)), forget_metric or metrics.forget,
                        metrics.higher_is_better if higher_is_better is None else higher_is_better)
        last = wc.loc[wc.step.idxmax()].drop(["seed", "model", "step", "lr", "data", "forget_std", "n_aseeds"])
        rows += [{"model": name, "phase": "after", "metric": k, "value": float(v)} for k, v in last.items()]
    rows += [{"model": name, "phase": "compute", "metric": k, "value": float(record.get(k, 0))}
             for k in ("flops", "lineage_flops", "trained_tokens", "lineage_labeled_examples")]
    with atomic_path(out) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
