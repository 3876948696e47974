"""What a relearning attacker trains on, per attack family, and what the attack is scored on.

The forget pool is the `attack` split (forget renderings no other split holds). `mix` adds retain
examples (an attacker may also hold ordinary data, which keeps the model's retain skill alive while the
forget skill comes back); `retain` trains on retain examples alone; `heldout` trains on half of the pool's
facts. Sampling weights draw each operation within a pool equally often.

`split_forget_facts` cuts forget rows into two halves that share no fact (arithmetic: operand pair;
language, WMDP: document): a held-out relearning attack finetunes on one half and evaluates on the other,
so forget accuracy coming back on the held-out half is latent knowledge returning, not memorisation.
"""
from __future__ import annotations

from collections import Counter

from .batches import read_jsonl
from .settings import unit_hash

FINETUNE = ("forget", "mix", "retain", "heldout")  # attack families that finetune the model


def group_weights(rows: list[dict], share: float) -> list[float]:
    """Per-row weights summing to `share`, every operation of `rows` getting an equal part."""
    counts = Counter(r["op"] for r in rows)
    return [share / (len(counts) * counts[r["op"]]) for r in rows]


def attack_rows(family: str, attack: str, retain: str, eval_rows: list[dict], setting: str, seed: int = 0,
                mix_forget_fraction: float = 0.5, heldout_fraction: float = 0.5
                ) -> tuple[list[dict], list[float], list[dict]]:
    """What one finetuning attack trains on, with sampling weights summing to 1, and the rows it is scored on.

    forget: the attack pool (forget renderings no other split holds); mix: the pool plus retain examples of
    the training data (`mix_forget_fraction` of the draws from the pool); retain: retain examples only (an
    attacker holding just ordinary data); heldout: one half of the pool's facts (`split_forget_facts`), scored
    on the evaluation rows of facts that half does not hold, so nothing it recovers was shown to it. The retain
    examples of mix and retain leave out every fact the evaluation set scores (rows with a `fact` key)."""
    if family not in FINETUNE:
        raise ValueError(f"attack.families entry {family!r} is not a finetuning attack; allowed: {list(FINETUNE)}")
    forget_rows = read_jsonl(attack)
    not_forget = sorted({r["op"] for r in forget_rows if not r["forget"]})
    if not_forget:
        raise ValueError(f"attack data {attack} holds retain operations {not_forget}; its pool must be forget-only")
    if family in ("mix", "retain"):
        scored_facts = {r["fact"] for r in eval_rows if "fact" in r}  # no evaluation fact in the attack data
        retain_rows = [r for r in read_jsonl(retain) if not r["forget"] and r.get("fact") not in scored_facts]
        if not retain_rows:
            raise ValueError(f"retain data file {retain} holds no retain examples for the {family!r} attack")
    if family == "forget":
        return forget_rows, group_weights(forget_rows, 1.0), eval_rows
    if family == "retain":
        return retain_rows, group_weights(retain_rows, 1.0), eval_rows
    if family == "mix":
        if not 0 < mix_forget_fraction < 1:
            raise ValueError(f"attack.mix_forget_fraction = {mix_forget_fraction!r} is invalid: it must lie in (0, 1)")
        return (forget_rows + retain_rows,
                group_weights(forget_rows, mix_forget_fraction) + group_weights(retain_rows, 1 - mix_forget_fraction),
                eval_rows)
    train, _ = split_forget_facts(forget_rows, setting, seed, heldout_fraction)
    seen = {fact_group(r, setting) for r in train}
    scored = [r for r in eval_rows if not r["forget"] or fact_group(r, setting) not in seen]
    if not any(r["forget"] for r in scored):
        raise ValueError("heldout attack: every forget evaluation fact is in the attacker's half; nothing is left "
                         "to score (give the setting more evaluation facts)")
    return train, group_weights(train, 1.0), scored


# ------------------------------------------------------------------ held-out facts (relearning attack)

SPLIT_BY = {"arithmetic": "operand pair", "language": "document", "wmdp": "document"}


def fact_group(row: dict, setting: str) -> str:
    """The unit a held-out split keeps whole. Arithmetic: the unordered operand pair of a multiplication
    fact, shared by its division facts (a·b, b·a, (a·b)/b and (a·b)/a are one group, `fact` "mul:2:3" and
    "div:2:3" both give "2:3"), so the attacker never trains on a product whose quotient is evaluated.
    Language and WMDP: the document (`doc`) a chunk was cut from."""
    if setting not in SPLIT_BY:
        raise ValueError(f"held-out split: unknown setting {setting!r}; known: {sorted(SPLIT_BY)}")
    if setting == "arithmetic":
        fact = row.get("fact")
        parts = fact.split(":") if isinstance(fact, str) else []
        if len(parts) != 3:
            raise ValueError(f"arithmetic row without a fact key 'op:x:y': {row!r}")
        x, y = sorted(int(v) for v in parts[1:])
        return f"{x}:{y}"
    if "doc" not in row:
        raise ValueError(f"{setting} row without a 'doc' id: {str(row)[:200]}")
    return str(row["doc"])


def split_forget_facts(rows: list[dict], setting: str, seed: int,
                       fraction: float = 0.5) -> tuple[list[dict], list[dict]]:
    """(train_rows, heldout_rows): the forget rows split by fact group (`fact_group`) with no group in
    both halves, for a relearning attack that finetunes on one half and evaluates on the other.

    Exactly round(fraction · N) of the N groups are held out (at least one, at most N - 1). Groups are
    stratified by the set of operations their rows hold (mul and/or div, or a WMDP corpus), each stratum
    giving fraction · n_s of its groups rounded up or down (largest remainders), and ordered within a
    stratum by a stable hash of (seed, group): the split is deterministic in `seed` (and independent of row
    order) and changes with it. Halves balance facts, not rows (a document's chunks or a fact's renderings
    vary in number). Rows keep their input order within each half; every input row lands in exactly one
    half. Raises on retain rows and on fewer than two groups."""
    if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0.0 < fraction < 1.0):
        raise ValueError(f"held-out fraction must lie in (0, 1), got {fraction!r}")
    retain = sorted({r.get("op") for r in rows if not r.get("forget")}, key=str)
    if retain:
        raise ValueError(f"held-out split takes forget rows only; got rows of retain operations {retain}")
    groups = [fact_group(r, setting) for r in rows]
    ops: dict[str, set] = {}
    for r, g in zip(rows, groups):
        ops.setdefault(g, set()).add(str(r.get("op")))
    if len(ops) < 2:
        raise ValueError(f"held-out split needs at least two facts ({SPLIT_BY[setting]}s), got {len(ops)}")
    strata: dict[tuple, list[str]] = {}
    for g, g_ops in ops.items():
        strata.setdefault(tuple(sorted(g_ops)), []).append(g)
    # how many groups each stratum holds out: floor(fraction · n_s), plus one for the strata with the largest
    # remainders until the total is round(fraction · N) (at least 1, at most N - 1)
    total = min(max(int(fraction * len(ops) + 0.5), 1), len(ops) - 1)
    names = sorted(strata)
    take = {s: int(fraction * len(strata[s])) for s in names}
    by_remainder = sorted(names, key=lambda s: (-(fraction * len(strata[s]) - take[s]),
                                                unit_hash(seed, "stratum", *s), s))
    for s in by_remainder[: max(total - sum(take.values()), 0)]:
        take[s] += 1
    held: set[str] = set()
    for s in names:
        members = sorted(strata[s], key=lambda g: (unit_hash(seed, "heldout", g), g))
        held.update(members[: take[s]])
    train = [r for r, g in zip(rows, groups) if g not in held]
    heldout = [r for r, g in zip(rows, groups) if g in held]
    return train, heldout
