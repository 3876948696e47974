"""Held-out-facts split for the relearning attack: the two halves share no fact (arithmetic: unordered
operand pair, across multiplication and division; language: document), cover every forget row given,
are deterministic per seed, change with the seed and are roughly balanced."""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from pipeline_py.stages.data import make_data
from pipeline_py.attack_data import fact_group, split_forget_facts
from pipeline_py.batches import read_jsonl

FIX = Path(__file__).resolve().parent / "fixtures" / "language"
SMALL_LANGUAGE = {"source": "files", "retain_files": [str(FIX / "english.txt")],
                  "forget_files": [str(FIX / "korean.txt")], "eval_fraction": 0.3, "attack_fraction": 0.3,
                  "vocab_size": 400, "chunk_tokens": 30, "eval_chunks": 8, "min_chars": 10}


def operand_pair(row: dict) -> tuple[int, int]:
    """The unordered operand pair of a multiplication or division row, read from its prompt and answer
    (independently of the `fact` key the split uses): a*b -> {a, b}; (a*b)/b -> {answer, b}."""
    a, b = map(int, re.findall(r"\d+", row["prompt"])[:2])
    if row["op"] == "mul":
        assert int(row["answer"]) == a * b
        return tuple(sorted((a, b)))
    assert row["op"] == "div" and int(row["answer"]) * b == a
    return tuple(sorted((int(row["answer"]), b)))


def key(row: dict) -> str:
    return json.dumps(row, sort_keys=True)


def check_partition(rows, train, held, unit):
    assert train and held
    assert Counter(map(key, train)) + Counter(map(key, held)) == Counter(map(key, rows))  # every row, once
    assert not {unit(r) for r in train} & {unit(r) for r in held}  # no shared fact
    order = {key(r): i for i, r in enumerate(rows)}
    assert [order[key(r)] for r in train] == sorted(order[key(r)] for r in train)  # input order kept


@pytest.fixture(scope="module")
def arith_forget(tiny_data):
    """Forget rows of the tiny corpus: the attack pool and the pretraining renderings (every fact)."""
    return {split: [r for r in read_jsonl(tiny_data / f"{split}.jsonl") if r["forget"]]
            for split in ("attack", "train", "eval")}


@pytest.mark.parametrize("split", ["attack", "train", "eval"])
def test_arithmetic_halves_share_no_operand_pair_and_cover_every_row(arith_forget, split):
    rows = arith_forget[split]
    assert {r["op"] for r in rows} == {"mul", "div"}
    train, held = split_forget_facts(rows, "arithmetic", seed=0)
    check_partition(rows, train, held, operand_pair)
    pairs = {operand_pair(r) for r in rows}
    held_pairs = {operand_pair(r) for r in held}
    assert len(held_pairs) == int(len(pairs) / 2 + 0.5)  # half the facts, rounded half up
    assert 0.3 <= len(held) / len(rows) <= 0.7
    # a product and its quotients stay together: 2*3, 3*2, 6/3 and 6/2 are one fact
    assert all(fact_group(r, "arithmetic") == "{}:{}".format(*operand_pair(r)) for r in rows)


def test_arithmetic_split_is_deterministic_per_seed_and_differs_across_seeds(arith_forget):
    rows = arith_forget["train"]
    a = split_forget_facts(rows, "arithmetic", seed=0)
    assert split_forget_facts(rows, "arithmetic", seed=0) == a
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    b = split_forget_facts(shuffled, "arithmetic", seed=0)  # membership does not depend on row order
    assert {key(r) for r in b[1]} == {key(r) for r in a[1]}
    held = {seed: frozenset(map(operand_pair, split_forget_facts(rows, "arithmetic", seed)[1]))
            for seed in range(4)}
    assert len(set(held.values())) == 4


def test_fraction_sets_the_share_of_held_out_facts(arith_forget):
    rows = arith_forget["train"]
    n = len({operand_pair(r) for r in rows})
    for fraction in (0.25, 0.75):
        train, held = split_forget_facts(rows, "arithmetic", seed=1, fraction=fraction)
        check_partition(rows, train, held, operand_pair)
        assert len({operand_pair(r) for r in held}) == int(fraction * n + 0.5)


@pytest.fixture(scope="module")
def lang_forget(tmp_path_factory):
    out = tmp_path_factory.mktemp("lang_heldout")
    make_data(*(str(out / f) for f in ("train.jsonl", "eval.jsonl", "attack.jsonl", "tokenizer.json")),
              data=dict(SMALL_LANGUAGE), setting="language", seed=0)
    return [r for s in ("train", "attack", "eval") for r in read_jsonl(out / f"{s}.jsonl") if r["forget"]]


def test_language_halves_share_no_document(lang_forget):
    rows = lang_forget
    docs = {r["doc"] for r in rows}
    assert len(docs) >= 4 and {r["op"] for r in rows} == {"ko"}
    train, held = split_forget_facts(rows, "language", seed=0)
    check_partition(rows, train, held, lambda r: r["doc"])
    assert len({r["doc"] for r in held}) == int(len(docs) / 2 + 0.5)
    assert split_forget_facts(rows, "language", seed=0) == (train, held)
    seeds = {frozenset(r["doc"] for r in split_forget_facts(rows, "language", s)[1]) for s in range(6)}
    assert len(seeds) > 1


def test_wmdp_style_rows_split_by_document_within_each_corpus():
    rows = [{"op": op, "forget": True, "prompt": "", "answer": f"{op} {d} {k}", "doc": f"{op}:{d}"}
            for op in ("bio", "cyber") for d in range(20) for k in range(1 + d % 3)]
    train, held = split_forget_facts(rows, "wmdp", seed=3)
    check_partition(rows, train, held, lambda r: r["doc"])
    for op in ("bio", "cyber"):  # stratified: each corpus gives half its documents
        assert len({r["doc"] for r in held if r["op"] == op}) == 10
    odd = [r for r in rows if int(r["doc"].split(":")[1]) < 5]  # 5 documents per corpus: 5 held out in all
    for seed in range(6):
        _, held = split_forget_facts(odd, "wmdp", seed=seed)
        per_op = [len({r["doc"] for r in held if r["op"] == op}) for op in ("bio", "cyber")]
        assert sum(per_op) == 5 and sorted(per_op) == [2, 3]


def test_bad_inputs_are_refused(arith_forget):
    rows = arith_forget["train"]
    retain = {"op": "add", "forget": False, "prompt": "1+2=", "answer": "3", "fact": "add:1:2"}
    with pytest.raises(ValueError, match="retain"):
        split_forget_facts(rows + [retain], "arithmetic", 0)
    one = [r for r in rows if operand_pair(r) == (2, 3)]
    with pytest.raises(ValueError, match="at least two"):
        split_forget_facts(one, "arithmetic", 0)
    with pytest.raises(ValueError, match="unknown setting"):
        split_forget_facts(rows, "chess", 0)
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            split_forget_facts(rows, "arithmetic", 0, fraction=bad)
    with pytest.raises(ValueError, match="fact key"):
        split_forget_facts([{k: v for k, v in r.items() if k != "fact"} for r in rows], "arithmetic", 0)
    with pytest.raises(ValueError, match="doc"):
        split_forget_facts([{"op": "ko", "forget": True, "prompt": "", "answer": "x"}] * 2, "language", 0)
