"""A reference training loop in the style the UNDO paper's code describes, for `python -m pipeline_py.bench
--versus-undo` to time the pipeline's loop against. Not part of the pipeline and never imported by it.

Written for this benchmark from the paper's description, not copied from its code:
- the model is Hugging Face's `LlamaForCausalLM`, built from the same config.json as the pipeline's model
  (`ModelConfig.to_hf`), with eager attention (`attn_implementation="eager"`), in fp32;
- a step is the plain PyTorch loop: `model(input_ids=x, labels=x).loss` (HF shifts the labels and takes the
  token cross-entropy), `loss.backward()`, gradient clipping, `AdamW.step()`, a LambdaLR scheduler step;
- distillation: the teacher's logits under `torch.no_grad()`, then the full-vocabulary KL on every position,
  `F.kl_div(log_softmax(student), softmax(teacher), reduction="batchmean")` over [B·T, V] rows;
- the relearning attack evaluates every 5 steps (and at step 0): the mean LM loss over the evaluation
  batches under `torch.no_grad()` in eval mode; each attack run is its own process, so it pays the start-up
  of `import torch, transformers` once per run (`import_seconds`).
"""
from __future__ import annotations

import math
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

EVAL_EVERY = 5  # the reference attack's evaluation interval, in steps


def build_reference(cfg, seed: int = 0, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
    """`LlamaForCausalLM` from the pipeline model's config.json dict, eager attention, fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = dict(cfg.to_hf(pad_id, bos_id, eos_id))
    for k in ("architectures", "model_type", "torch_dtype"):
        hf.pop(k, None)
    torch.manual_seed(seed)
    config = LlamaConfig(**hf)
    config._attn_implementation = "eager"
    return LlamaForCausalLM(config).float()


def make_optimizer(model, lr: float, steps: int, warmup: int = 0):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)

    def factor(step: int) -> float:  # linear warm-up then cosine to 10 %
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _step(model, opt, sched, loss: torch.Tensor, clip: float = 1.0) -> float:
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    sched.step()
    opt.zero_grad()
    return loss.item()


def pretrain_steps(model, batches: list[torch.Tensor], steps: int, lr: float = 1e-4) -> list[float]:
    """`steps` next-token CE steps on `batches` (cycled); the losses."""
    model.train()
    opt, sched = make_optimizer(model, lr, steps)
    return [_step(model, opt, sched, model(input_ids=batches[i % len(batches)],
                                          labels=batches[i % len(batches)]).loss) for i in range(steps)]


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) over the full vocabulary on every position, averaged over positions."""
    V = student_logits.shape[-1]
    return F.kl_div(F.log_softmax(student_logits.reshape(-1, V), dim=-1),
                    F.softmax(teacher_logits.reshape(-1, V), dim=-1), reduction="batchmean")


def distill_steps(student, teacher, batches: list[torch.Tensor], steps: int, lr: float = 1e-4) -> list[float]:
    """`steps` distillation steps of `student` towards the frozen `teacher`; the losses."""
    student.train()
    teacher.eval()
    opt, sched = make_optimizer(student, lr, steps)
    losses = []
    for i in range(steps):
        x = batches[i % len(batches)]
        with torch.no_grad():
            t_logits = teacher(input_ids=x).logits
        losses.append(_step(student, opt, sched, kl_loss(student(input_ids=x).logits, t_logits)))
    return losses


def evaluate(model, eval_batches: list[torch.Tensor]) -> float:
    """Mean LM loss over the evaluation batches, without gradients, in eval mode."""
    model.eval()
    with torch.no_grad():
        value = sum(model(input_ids=x, labels=x).loss.item() for x in eval_batches) / len(eval_batches)
    model.train()
    return value


def relearn_run(model, batches: list[torch.Tensor], eval_batches: list[torch.Tensor], steps: int,
                lr: float = 1e-4, eval_every: int = EVAL_EVERY) -> tuple[list[float], list[tuple[int, float]]]:
    """The relearning attack: constant-LR AdamW steps, evaluated at step 0, every `eval_every` steps and
    after the last step; the training losses and the (step, eval loss) curve."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    curve = [(0, evaluate(model, eval_batches))]
    losses = []
    for i in range(1, steps + 1):
        x = batches[(i - 1) % len(batches)]
        losses.append(_step(model, opt, sched, model(input_ids=x, labels=x).loss))
        if i % eval_every == 0 or i == steps:
            curve.append((i, evaluate(model, eval_batches)))
    return losses, curve


IMPORTS = "import torch; from transformers import AutoTokenizer, LlamaForCausalLM; LlamaForCausalLM"


def import_seconds(code: str = IMPORTS, repeats: int = 1) -> float:
    """Wall seconds of a fresh Python process running `code` (default: the reference's imports)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t0)
    return best
