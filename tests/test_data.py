"""The arithmetic corpus (pipeline_py.arithmetic, make_data, filter_data) and its tokenizer."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from pipeline_py import arithmetic, settings
from pipeline_py.arithmetic import FORGET_OPS, HELDOUT_TEMPLATES, OPS, RETAIN_OPS, TRAIN_TEMPLATES
from pipeline_py.attack_data import attack_rows
from pipeline_py.batches import read_jsonl
from pipeline_py.config import Filter
from pipeline_py.stages.data import filter_data, make_data, share

TINY_DATA = {"add_max": 10, "mul_max": 6, "eval_per_op": 20}  # as the tiny_data fixture of conftest.py

SYMBOL = re.compile(r"^(\d+)([-+*/])(\d+)=$")
WORDS = re.compile(r"(\d+) (plus|minus|times|divided by) (\d+)")
BY_SYMBOL = {sym: op for op, (sym, _, _) in OPS.items()}
BY_WORD = {word: op for op, (_, word, _) in OPS.items()}


def parse(prompt: str) -> tuple[str, int, int]:
    """(op, a, b) read back from a rendered prompt, using the symbols and words of arithmetic.OPS."""
    m = SYMBOL.match(prompt)
    if m:
        return BY_SYMBOL[m.group(2)], int(m.group(1)), int(m.group(3))
    found = WORDS.findall(prompt)
    assert len(found) == 1, prompt
    a, word, b = found[0]
    return BY_WORD[word], int(a), int(b)


def true_answer(op: str, a: int, b: int) -> int:
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    assert b != 0 and a % b == 0, f"{a}/{b} is not an exact division"
    return a // b


@pytest.fixture(scope="module")
def splits(tiny_data, tiny_data_params):
    assert tiny_data_params == TINY_DATA
    return {s: read_jsonl(tiny_data / f"{s}.jsonl") for s in ("train", "eval", "attack")}


def test_splits_are_non_empty_and_cover_expected_ops(splits):
    assert {r["op"] for r in splits["train"]} == set(OPS)
    assert {r["op"] for r in splits["eval"]} == set(OPS)
    assert len(splits["attack"]) > 0


def test_every_answer_is_arithmetically_right(splits):
    """a op b == answer for every example of every split (division exact, subtraction non-negative)."""
    for split, rows in splits.items():
        for r in rows:
            op, a, b = parse(r["prompt"])
            assert op == r["op"], (split, r)
            assert int(r["answer"]) == true_answer(op, a, b), (split, r)
            assert int(r["answer"]) >= 0
            assert r["forget"] == (op in FORGET_OPS)


def test_operand_ranges(splits):
    """+/- operands lie in [0, add_max); * and / use factors in [1, mul_max]."""
    for r in splits["train"]:
        op, a, b = parse(r["prompt"])
        if op == "add":
            assert 0 <= a < TINY_DATA["add_max"] and 0 <= b < TINY_DATA["add_max"]
        elif op == "sub":
            assert 0 <= b <= a < TINY_DATA["add_max"]
        elif op == "mul":
            assert 1 <= a <= TINY_DATA["mul_max"] and 1 <= b <= TINY_DATA["mul_max"]
        else:
            assert 1 <= b <= TINY_DATA["mul_max"] and 1 <= int(r["answer"]) <= TINY_DATA["mul_max"]


def test_train_holds_every_fact_of_the_setting(splits):
    """train ∪ attack hold every (op, a, b) once per training template."""
    cfg = arithmetic.ArithmeticConfig(**TINY_DATA)
    n_facts = sum(len(arithmetic.facts(op, cfg)) for op in OPS)
    assert len(splits["train"]) + len(splits["attack"]) == n_facts * len(TRAIN_TEMPLATES)
    assert n_facts == 10 * 10 + 55 + 6 * 6 * 2  # add, sub (a >= b), mul, div


def test_splits_share_no_prompt(splits):
    prompts = {s: [r["prompt"] for r in rows] for s, rows in splits.items()}
    for s, p in prompts.items():
        assert len(p) == len(set(p)), f"duplicate prompts inside {s}"
    assert not set(prompts["train"]) & set(prompts["eval"])
    assert not set(prompts["train"]) & set(prompts["attack"])
    assert not set(prompts["eval"]) & set(prompts["attack"])


def test_no_eval_fact_in_attack(splits):
    eval_facts = {r["fact"] for r in splits["eval"]}
    assert eval_facts and not eval_facts & {r["fact"] for r in splits["attack"]}


@pytest.mark.parametrize("family", ["forget", "mix", "retain", "heldout"])
def test_no_attack_family_trains_on_an_evaluated_fact(family, tiny_data, splits):
    """What each finetuning attack trains on shares no fact (operation and operands) with the evaluation set,
    retain facts included: mix and retain draw from the training data, which holds every fact; the check can
    fail, since the training data does hold the evaluated facts."""
    eval_facts = {r["fact"] for r in splits["eval"]}
    assert eval_facts & {r["fact"] for r in splits["train"]}
    rows, weights, scored = attack_rows(family, str(tiny_data / "attack.jsonl"), str(tiny_data / "train.jsonl"),
                                        splits["eval"], "arithmetic", seed=0)
    trained = {r["fact"] for r, w in zip(rows, weights) if w > 0}
    assert trained and not trained & eval_facts
    assert {r["fact"] for r in scored} <= eval_facts


def test_eval_facts_are_known_from_pretraining(splits):
    """Every evaluation fact also appears in train (in training templates), so the base can know it."""
    assert {r["fact"] for r in splits["eval"]} <= {r["fact"] for r in splits["train"]}


def test_fact_key_is_shared_by_commuted_operands():
    assert arithmetic.fact_key("add", 3, 5, 8) == arithmetic.fact_key("add", 5, 3, 8) == "add:3:5"
    assert arithmetic.fact_key("mul", 2, 6, 12) == arithmetic.fact_key("mul", 6, 2, 12) == "mul:2:6"
    assert arithmetic.fact_key("div", 12, 6, 2) == arithmetic.fact_key("div", 12, 2, 6) == "div:2:6"


def test_attack_holds_only_forget_ops(splits):
    assert {r["op"] for r in splits["attack"]} == set(FORGET_OPS) == {"mul", "div"}
    assert all(r["forget"] for r in splits["attack"])


def test_eval_uses_only_heldout_templates(splits):
    """Each eval prompt is a held-out template rendered on its operands, and no training template's."""
    for r in splits["eval"]:
        op, a, b = parse(r["prompt"])
        assert r["template"].startswith("heldout")
        t = int(r["template"].removeprefix("heldout"))
        assert arithmetic.render(HELDOUT_TEMPLATES[t], op, a, b) == r["prompt"]
        assert all(arithmetic.render(tt, op, a, b) != r["prompt"] for tt in TRAIN_TEMPLATES)
    for split in ("train", "attack"):
        assert all(r["template"].startswith("train") for r in splits[split])


def test_eval_per_op_count(splits):
    """eval holds min(eval_per_op, 3 renderings × eval facts) examples per operation."""
    cfg = arithmetic.ArithmeticConfig(**TINY_DATA)
    for op in OPS:
        n_eval_facts = sum(1 for a, b, c in arithmetic.facts(op, cfg)
                           if arithmetic.unit_hash(0, "eval", arithmetic.fact_key(op, a, b, c)) < cfg.eval_fraction)
        assert n_eval_facts > 0
        got = sum(r["op"] == op for r in splits["eval"])
        assert got == min(TINY_DATA["eval_per_op"], n_eval_facts * len(HELDOUT_TEMPLATES)), op


def test_generation_is_deterministic_per_seed():
    cfg = arithmetic.ArithmeticConfig(**TINY_DATA)
    a, b, c = arithmetic.generate(cfg, 0), arithmetic.generate(cfg, 0), arithmetic.generate(cfg, 1)
    assert a == b
    assert a["eval"] != c["eval"] and a["attack"] != c["attack"]


def test_make_data_files_match_generate(splits, tiny_data):
    """The JSONL files hold exactly what generate() returns, and the manifest counts them."""
    gen = arithmetic.generate(arithmetic.ArithmeticConfig(**TINY_DATA), 0)
    assert splits == gen
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    counts = {k: v["examples"] for k, v in manifest["files"].items() if k.endswith(".jsonl")}
    assert counts == {f"{s}.jsonl": len(v) for s, v in gen.items()}
    assert manifest["setting"] == "arithmetic" and set(manifest["files"]) == set(counts) | {"tokenizer.json"}


@pytest.mark.parametrize("bad", [{"add_max": 1}, {"eval_fraction": 0.0}, {"attack_fraction": 1.0}])
def test_bad_data_config_raises(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        arithmetic.ArithmeticConfig(**bad)


def test_filter_data(tiny_data, tmp_path, splits):
    """Oracle data = train minus forget examples; labeled sets hold n_labeled examples of the right side."""
    out = {k: tmp_path / f"{k}.jsonl" for k in ("oracle", "forget", "retain")}
    filter_data(str(tiny_data / "train.jsonl"), str(out["oracle"]), str(out["forget"]), str(out["retain"]),
                Filter(n_labeled=16), seed=0)
    oracle, forget, retain = (read_jsonl(out[k]) for k in ("oracle", "forget", "retain"))
    assert oracle == [r for r in splits["train"] if not r["forget"]]
    assert {r["op"] for r in oracle} == set(RETAIN_OPS)
    assert len(forget) == len(retain) == 16
    assert {r["op"] for r in forget} <= set(FORGET_OPS) and all(r["forget"] for r in forget)
    assert {r["op"] for r in retain} <= set(RETAIN_OPS) and not any(r["forget"] for r in retain)
    train_prompts = {r["prompt"] for r in splits["train"]}
    assert {r["prompt"] for r in forget + retain} <= train_prompts
    assert len({r["prompt"] for r in forget}) == 16  # no example drawn twice


def test_filter_data_rejects_non_positive_n_labeled(tiny_data, tmp_path):
    """n_labeled <= 0 fails when the filter section is built, before filter_data could run."""
    with pytest.raises(ValueError, match=r"^n_labeled = 0 is invalid: it must be an integer \(> 0\)"):
        Filter(n_labeled=0)
    with pytest.raises(ValueError, match=r"^filter\.n_labeled = -1 is invalid: it must be an integer \(> 0\)"):
        Filter.from_dict({"n_labeled": -1}, "filter")
    with pytest.raises(ValueError, match="n_labeled"):
        filter_data(str(tiny_data / "train.jsonl"), *(str(tmp_path / f"{k}.jsonl") for k in "abc"),
                    Filter.from_dict({"n_labeled": 0}, "filter"), seed=0)
    assert not any((tmp_path / f"{k}.jsonl").exists() for k in "abc")


def test_make_data_requires_its_outputs_in_one_directory(tmp_path):
    names = ["train.jsonl", "eval.jsonl", "attack.jsonl", "tokenizer.json"]
    with pytest.raises(ValueError, match="one directory"):
        make_data(*(str(tmp_path / n) for n in names[:3]), str(tmp_path / "tok" / names[3]), dict(TINY_DATA),
                  setting="arithmetic", seed=0)
    with pytest.raises(ValueError, match="one directory"):
        make_data(*(str(tmp_path / n) for n in ["data.jsonl"] + names[1:]), dict(TINY_DATA), setting="arithmetic",
                  seed=0)
    assert not list(tmp_path.iterdir())


def test_tokenizer_round_trips_with_autotokenizer(tiny_data, splits, tok):
    """AutoTokenizer (the HF files make_data wrote) encodes one token per character and decodes back exactly;
    the pipeline's own `tokenizers` tokenizer gives the same ids."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_data))
    texts = [r["prompt"] + r["answer"] for r in splits["eval"]] + ["Tell me 12 divided by 4? 3", "7*8=56"]
    for text in texts:
        ids = hf.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)
        assert hf.decode(ids) == text
        assert ids == tok.encode(text, add_special_tokens=False).ids
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id) == (0, 1, 2)


def test_setting_is_recorded_and_found_from_the_data_directory(tiny_data):
    assert settings.setting_of(tiny_data / "eval.jsonl") is arithmetic
    with pytest.raises(ValueError, match="unknown setting 'nope'.*arithmetic"):
        settings.get_setting("nope")


def test_metric_direction():
    acc = settings.Metrics("acc_retain", "acc_forget", higher_is_better=True)
    ce = settings.Metrics("ce_retain", "ce_forget", higher_is_better=False)
    assert acc.within(0.76, 0.8, 0.05) and not acc.within(0.74, 0.8, 0.05) and acc.better(0.9, 0.8)
    assert ce.within(1.04, 1.0, 0.05) and not ce.within(1.06, 1.0, 0.05) and ce.better(0.9, 1.0)


def test_share_copies_one_pretraining_into_another_seed(tiny_data, tmp_path):
    """share: make_data's files (those its manifest lists, and the manifest) byte for byte, not the later stages'
    files in the same directory; a checkpoint directory's files, not the models below it; a missing declared
    output is an error that names it."""
    src = tmp_path / "seed0" / "data"
    shutil.copytree(tiny_data, src)
    (src / "oracle.jsonl").write_text("{}\n")  # filter_data's output: each seed makes its own
    names = ["train.jsonl", "eval.jsonl", "attack.jsonl", "tokenizer.json"]
    outs = [str(tmp_path / "seed1" / "data" / n) for n in names]
    share(str(src / "train.jsonl"), outs)
    copied = sorted(p.name for p in (tmp_path / "seed1" / "data").iterdir())
    assert copied == sorted(names + ["manifest.json"])
    assert all((src / n).read_bytes() == (tmp_path / "seed1" / "data" / n).read_bytes() for n in copied)

    ckpt = tmp_path / "seed0" / "models" / "base"
    (ckpt / "maxent").mkdir(parents=True)
    for name in ("model.safetensors", "record.json", "config.json"):
        (ckpt / name).write_text(name)
    (ckpt / "maxent" / "model.safetensors").write_text("an unlearned model")
    share(str(ckpt), str(tmp_path / "seed1" / "models" / "base"))
    assert sorted(p.name for p in (tmp_path / "seed1" / "models" / "base").iterdir()) == [
        "config.json", "model.safetensors", "record.json"]
    with pytest.raises(FileNotFoundError, match="extra.jsonl"):
        share(str(src / "train.jsonl"), outs + [str(tmp_path / "seed2" / "data" / "extra.jsonl")])
