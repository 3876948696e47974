"""What the relearning attacker trains on: forget data only, or a forget + retain mixture.

The forget pool is the `attack` split (forget renderings no other split holds); the mixture adds retain
examples (an attacker may also hold ordinary data, which keeps the model's retain skill alive while the
forget skill comes back). Sampling weights make a `mix_forget_fraction` share of the examples drawn come
from the forget pool, each operation within a pool drawn equally often.
"""
from __future__ import annotations

from collections import Counter

from .batches import read_jsonl

ATTACK_DATA = ("forget", "mix")


def group_weights(rows: list[dict], share: float) -> list[float]:
    """Per-row weights summing to `share`, every operation of `rows` getting an equal part."""
    counts = Counter(r["op"] for r in rows)
    return [share / (len(counts) * counts[r["op"]]) for r in rows]


def attack_mixture(attack: str, data: str = "forget", retain: str | None = None,
                   mix_forget_fraction: float = 0.5) -> tuple[list[dict], list[float]]:
    """The attacker's examples and their sampling weights (they sum to 1)."""
    if data not in ATTACK_DATA:
        raise ValueError(f"attack.data entry {data!r} is unknown; allowed: {list(ATTACK_DATA)}")
    forget_rows = read_jsonl(attack)
    not_forget = sorted({r["op"] for r in forget_rows if not r["forget"]})
    if not_forget:
        raise ValueError(f"attack data {attack} holds retain operations {not_forget}; its pool must be forget-only")
    if data == "forget":
        return forget_rows, group_weights(forget_rows, 1.0)
    if not 0 < mix_forget_fraction < 1:
        raise ValueError(f"attack.mix_forget_fraction = {mix_forget_fraction!r} is invalid: it must lie in (0, 1)")
    if retain is None:
        raise ValueError("attack.data 'mix' needs a retain data file (the rule's `retain` input)")
    retain_rows = [r for r in read_jsonl(retain) if not r["forget"]]
    if not retain_rows:
        raise ValueError(f"retain data file {retain} holds no retain examples for the 'mix' attack")
    return (forget_rows + retain_rows,
            group_weights(forget_rows, mix_forget_fraction) + group_weights(retain_rows, 1 - mix_forget_fraction))
