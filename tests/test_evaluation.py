"""The Evaluator's one-pass teacher-forced exact match is the same event as greedy decoding the answer."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline_py.batches import ExampleBatches, read_jsonl
from pipeline_py.evaluation import Evaluator
from pipeline_py.losses import token_ce
from pipeline_py.model import build_model
from pipeline_py.tokenizer import BOS_ID, EOS_ID, encode
from pipeline_py.train import TrainConfig, train


class Bigram(nn.Module):
    """A stand-in model whose logits at a position depend only on the token there: logits = table[token]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, input_ids):
        return self.table[input_ids]


def tid(tok, ch: str) -> int:
    return tok.token_to_id(ch)


def bigram_for(tok, rules: dict[str, str], margin: float) -> Bigram:
    """Each character in `rules` predicts its successor (a character or '<eos>') with logit `margin`;
    every other token predicts '7'."""
    V = tok.get_vocab_size()
    table = torch.zeros(V, V)
    table[:, tid(tok, "7")] = margin
    for ch, nxt in rules.items():
        table[tid(tok, ch)] = 0.0
        table[tid(tok, ch), EOS_ID if nxt == "<eos>" else tid(tok, nxt)] = margin
    return Bigram(table)


def greedy_correct(model, tok, row: dict, extra: int = 2) -> bool:
    """Greedy decoding from BOS + prompt, one argmax token at a time until EOS (or answer length + extra):
    correct iff it produces exactly the answer's tokens and then EOS."""
    ids = [BOS_ID] + encode(tok, [row["prompt"]])[0]
    target = encode(tok, [row["answer"]])[0] + [EOS_ID]
    out = []
    with torch.no_grad():
        while len(out) < len(target) + extra:
            nxt = int(model(torch.tensor([ids + out]))[0, -1].argmax())
            out.append(nxt)
            if nxt == EOS_ID:
                break
    return out == target


ROWS = [  # bigram rules below: '=' -> '1', '1' -> '2', '2' -> EOS, anything else -> '7'
    {"op": "mul", "prompt": "3*4=", "answer": "12", "forget": True},  # 1 2 EOS: right
    {"op": "add", "prompt": "5+7=", "answer": "12", "forget": False},  # right (the prompt does not matter)
    {"op": "add", "prompt": "1+0=", "answer": "1", "forget": False},  # 1 then 2, not EOS: wrong
    {"op": "add", "prompt": "9+4=", "answer": "13", "forget": False},  # 1 then 2 != 3: wrong
    {"op": "sub", "prompt": "3-1=", "answer": "2", "forget": False},  # 1 != 2: wrong
    {"op": "div", "prompt": "What is 36 divided by 3? ", "answer": "12", "forget": True},  # ' ' -> 7: wrong
]


def test_hand_made_bigram_case(tok):
    """Exact match per operation on hand-picked cases, incl. a right prefix without EOS and padded rows."""
    model = bigram_for(tok, {"=": "1", "1": "2", "2": "<eos>"}, margin=3.0)
    out = Evaluator(tok, ROWS)(model)
    assert [greedy_correct(model, tok, r) for r in ROWS] == [True, True, False, False, False, False]
    assert out["acc_mul"] == 1.0 and out["acc_div"] == 0.0 and out["acc_sub"] == 0.0
    assert out["acc_add"] == pytest.approx(1 / 3)
    assert out["acc_forget"] == pytest.approx(0.5) and out["acc_retain"] == pytest.approx((1 / 3 + 0) / 2)


def test_hand_made_answer_cross_entropy(tok):
    """ce_op = mean over answer tokens and EOS of -log p(target). With logit m on one token and 0 on the
    other V-1: -log p = log(e^m + V - 1) - m on the favoured token ('hit'), log(e^m + V - 1) otherwise."""
    m, V = 3.0, tok.get_vocab_size()
    model = bigram_for(tok, {"=": "1", "1": "2", "2": "<eos>"}, margin=m)
    hit = math.log(math.exp(m) + V - 1) - m
    miss = math.log(math.exp(m) + V - 1)
    out = Evaluator(tok, ROWS)(model)
    assert out["ce_mul"] == pytest.approx(hit, rel=1e-5)  # '1', '2', EOS: three hits
    # "5+7=12": 3 hits; "1+0=1": '1' hit, EOS miss; "9+4=13": '1' hit, '3' miss, EOS miss
    assert out["ce_add"] == pytest.approx((5 * hit + 3 * miss) / 8, rel=1e-5)
    assert out["ce_sub"] == pytest.approx((miss + hit) / 2, rel=1e-5)  # '2' miss ('=' -> '1'), EOS hit
    assert out["ce_div"] == pytest.approx((miss + 2 * hit) / 3, rel=1e-5)  # ' ' -> '7' misses '1'
    assert out["ce_forget"] == pytest.approx((out["ce_mul"] + out["ce_div"]) / 2)


def test_hand_made_kl_from_uniform(tok):
    """klu_op = mean over answer positions of KL(U ‖ p) = -log V - mean_v log p(v). Every position's logits
    are m on one token and 0 on the rest, so log p = m - Z or -Z with Z = log(e^m + V - 1), and
    KL = Z - m / V - log V at every position; uniform logits (m = 0) give 0."""
    V = tok.get_vocab_size()
    for m in (0.0, 3.0, 9.0):
        out = Evaluator(tok, ROWS)(bigram_for(tok, {"=": "1", "1": "2", "2": "<eos>"}, margin=m))
        want = math.log(math.exp(m) + V - 1) - m / V - math.log(V)
        for key in ("klu_add", "klu_sub", "klu_mul", "klu_div", "klu_forget", "klu_retain"):
            assert out[key] == pytest.approx(want, abs=1e-5), key
    assert want > 4.0  # a confident model is far from uniform: the check can fail


def test_evaluator_restores_training_mode(tok):
    model = bigram_for(tok, {}, margin=1.0).train()
    Evaluator(tok, ROWS)(model)
    assert model.training
    Evaluator(tok, ROWS)(model.eval())
    assert not model.training


@pytest.fixture(scope="module")
def fitted(tiny_data, tok, tiny_cfg):
    """A tiny Llama fitted (answer-only loss, 80 steps) on half of 40 evaluation examples, 10 per operation:
    it gets many of those right and most of the others wrong, so right and wrong cases both occur."""
    rows = read_jsonl(tiny_data / "eval.jsonl")
    by_op = {op: [r for r in rows if r["op"] == op][:10] for op in ("add", "sub", "mul", "div")}
    picked = [r for op_rows in by_op.values() for r in op_rows]
    fit_rows = picked[::2]
    model = build_model(tiny_cfg, seed=0)
    batches = ExampleBatches(tok, fit_rows, batch_size=len(fit_rows), seed=0)

    def loss():
        b = next(batches)
        return token_ce(model(b["input_ids"]), b["labels"])

    train(model, loss, TrainConfig(steps=80, lr=1e-2, warmup=5, log_every=1000), "fit", precision="fp32")
    return model.eval(), picked


def test_teacher_forced_exact_match_equals_greedy_decoding(fitted, tok):
    """Per example, Evaluator's verdict (a one-row evaluation set) equals a hand-written greedy decode."""
    model, rows = fitted
    greedy = [greedy_correct(model, tok, r) for r in rows]
    forced = [Evaluator(tok, [r])(model)[f"acc_{r['op']}"] == 1.0 for r in rows]
    assert forced == greedy
    assert 0 < sum(greedy) < len(rows), "need both right and wrong examples for a meaningful comparison"


def test_batched_padded_evaluation_equals_greedy_per_op(fitted, tok):
    """On the whole padded batch (mixed lengths), per-operation accuracy = mean greedy correctness,
    also with a batch size that splits an operation over several batches."""
    model, rows = fitted
    for batch_size in (256, 3):
        out = Evaluator(tok, rows, batch_size=batch_size)(model)
        for op in ("add", "sub", "mul", "div"):
            op_rows = [r for r in rows if r["op"] == op]
            expected = sum(greedy_correct(model, tok, r) for r in op_rows) / len(op_rows)
            assert out[f"acc_{op}"] == pytest.approx(expected), (batch_size, op)
