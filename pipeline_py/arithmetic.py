"""The synthetic arithmetic setting: retain = addition and subtraction, forget = multiplication and division.

Every problem is a *fact* (operation and operands) rendered through a *template*. Splits:

- facts of each operation are split by a stable hash of their unordered operand pair into
  training facts and evaluation facts (`eval_fraction`);
- `train` (pretraining) holds every fact, evaluation facts included, in the training templates, so the
  base model knows them; a hashed `attack_fraction` of the training facts' renderings is moved out of
  `train` into `attack`, the relearning attack's pool (forget operations only);
- `eval` holds the evaluation facts in the held-out templates, which no other split uses.

So the three splits share no string, and the attack never contains an evaluation fact: recovering
forget accuracy on `eval` during the attack means latent knowledge came back, not memorisation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .batches import write_jsonl
from .section import Section, key
from .evaluation import Evaluator
from .settings import Metrics, unit_hash
from .tokenizer import build_tokenizer, save_tokenizer

OPS = {  # name: (symbol, word, is_forget)
    "add": ("+", "plus", False),
    "sub": ("-", "minus", False),
    "mul": ("*", "times", True),
    "div": ("/", "divided by", True),
}
METRICS = Metrics(retain="acc_retain", forget="acc_forget", higher_is_better=True)  # exact match
RETAIN_OPS = tuple(op for op, (_, _, forget) in OPS.items() if not forget)
FORGET_OPS = tuple(op for op, (_, _, forget) in OPS.items() if forget)

# Word problems are a prefix, the core "{a} {W} {b}" and a suffix; training sees most combinations and
# every prefix and suffix, evaluation uses combinations never seen in training.
PREFIXES = ("", "What is ", "Q: ", "Tell me ", "Quick, ")
SUFFIXES = ("? ", " A: ", ": ", " makes ", " is ")
HELDOUT_COMBOS = ((2, 3), (3, 0), (4, 1))  # (prefix, suffix) pairs kept for evaluation only
TRAIN_TEMPLATES = ("{a}{S}{b}=",) + tuple(
    PREFIXES[i] + "{a} {W} {b}" + SUFFIXES[j]
    for i in range(len(PREFIXES)) for j in range(len(SUFFIXES)) if (i, j) not in HELDOUT_COMBOS)
HELDOUT_TEMPLATES = tuple(PREFIXES[i] + "{a} {W} {b}" + SUFFIXES[j] for i, j in HELDOUT_COMBOS)


@dataclass(frozen=True, kw_only=True)
class ArithmeticConfig(Section):
    """The arithmetic setting's data: retain + and -, forget * and /."""

    add_max: int = key(50, "operands of + and - lie in [0, add_max); sub keeps a >= b so answers are >= 0", ge=2)
    mul_max: int = key(20, "operands of * lie in [1, mul_max]; div is (a*b)/b with the same operands", ge=2)
    eval_fraction: float = key(0.2, "share of facts held out for evaluation (by unordered operand pair)", gt=0, lt=1)
    attack_fraction: float = key(0.25, "share of training renderings kept for the attack instead of pretraining",
                                 gt=0, lt=1)
    eval_per_op: int = key(200, "evaluation problems per operation (subsampled by hash when more exist)", gt=0)


def facts(op: str, cfg: ArithmeticConfig) -> list[tuple[int, int, int]]:
    """(a, b, answer) for every problem of one operation."""
    if op == "add":
        return [(a, b, a + b) for a in range(cfg.add_max) for b in range(cfg.add_max)]
    if op == "sub":
        return [(a, b, a - b) for a in range(cfg.add_max) for b in range(a + 1)]
    pairs = [(a, b) for a in range(1, cfg.mul_max + 1) for b in range(1, cfg.mul_max + 1)]
    if op == "mul":
        return [(a, b, a * b) for a, b in pairs]
    if op == "div":
        return [(a * b, b, a) for a, b in pairs]
    raise ValueError(f"unknown operation {op!r}; allowed: {sorted(OPS)}")


def fact_key(op: str, a: int, b: int, ans: int) -> str:
    """Facts that share an unordered operand pair share a key (a*b and b*a; (a*b)/b and a*b)."""
    x, y = (a, b) if op in ("add", "sub") else ((a, b) if op == "mul" else (ans, b))
    return f"{op}:{min(x, y)}:{max(x, y)}"


def render(template: str, op: str, a: int, b: int) -> str:
    sym, word, _ = OPS[op]
    return template.format(a=a, b=b, S=sym, W=word)


def generate(cfg: ArithmeticConfig, seed: int) -> dict[str, list[dict]]:
    """All examples of the setting, keyed by split ('train', 'eval', 'attack')."""
    splits: dict[str, list[dict]] = {"train": [], "eval": [], "attack": []}
    for op, (_, _, forget) in OPS.items():
        eval_rows = []
        for a, b, ans in facts(op, cfg):
            key = fact_key(op, a, b, ans)
            is_eval = unit_hash(seed, "eval", key) < cfg.eval_fraction
            base = {"op": op, "forget": forget, "fact": key, "answer": str(ans)}
            for t, template in enumerate(TRAIN_TEMPLATES):
                to_attack = (not is_eval and forget
                             and unit_hash(seed, "attack", key, a, b, t) < cfg.attack_fraction)
                row = base | {"prompt": render(template, op, a, b), "template": f"train{t}"}
                splits["attack" if to_attack else "train"].append(row)
            if is_eval:
                for t, template in enumerate(HELDOUT_TEMPLATES):
                    eval_rows.append(base | {"prompt": render(template, op, a, b), "template": f"heldout{t}"})
        eval_rows.sort(key=lambda r: unit_hash(seed, "pick", r["prompt"]))
        splits["eval"] += eval_rows[: cfg.eval_per_op]
    return splits


def make_data(out_dir: str | Path, data: dict, seed: int) -> dict:
    """Write train/eval/attack JSONL and the character tokenizer into `out_dir`; returns manifest entries."""
    cfg = ArithmeticConfig.from_dict(data, "arithmetic")
    save_tokenizer(build_tokenizer(), Path(out_dir))
    for split, rows in generate(cfg, seed).items():
        write_jsonl(rows, Path(out_dir) / f"{split}.jsonl")
    return {"config": asdict(cfg)}


def evaluator(tok, rows: list[dict]):
    """Exact match and answer CE per operation, macro-averaged over retain and forget operations."""
    return Evaluator(tok, rows)
