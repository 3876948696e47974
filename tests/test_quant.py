"""RTN weight quantization (the quantization attack): hand-computed codes, the grid's size, the error bound,
which weights are quantized, and that quantization perturbs a model's predictions only slightly."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from pipeline_py.batches import pad_examples, read_jsonl, tokenize_examples
from pipeline_py.evaluation import Evaluator
from pipeline_py.losses import token_ce
from pipeline_py.model import ModelConfig, build_model
from pipeline_py.quant import QUANT_BITS, fake_quantize, qmax, quantize_model, quantize_rows, quantized_weights

W = torch.tensor([[0.7, -0.33, 0.12, 0.0],
                  [-1.4, 0.2, 0.54, 1.0],
                  [0.0, 0.0, 0.0, 0.0],
                  [0.02, -0.05, 0.049, 0.0]])
BLOCK_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def test_four_bit_codes_and_values_match_a_hand_computation():
    """scale = max|row| / 7; codes round(w / scale) in [-7, 7]; values codes · scale."""
    q, scale = quantize_rows(W, 4)
    s3 = 0.05 / 7
    assert scale.squeeze(1).tolist() == pytest.approx([0.1, 0.2, 0.0, s3], rel=1e-6)
    # row 0: 7, -3.3, 1.2, 0 | row 1: -7, 1, 2.7, 5 | row 2: zero | row 3: 2.8, -7, 6.86, 0
    assert q.tolist() == [[7, -3, 1, 0], [-7, 1, 3, 5], [0, 0, 0, 0], [3, -7, 7, 0]]
    expected = [[0.7, -0.3, 0.1, 0.0], [-1.4, 0.2, 0.6, 1.0], [0.0] * 4, [3 * s3, -0.05, 0.05, 0.0]]
    got = fake_quantize(W, 4)
    assert got.dtype == torch.float32 and got.shape == W.shape
    for row, exp in zip(got.tolist(), expected):
        assert row == pytest.approx(exp, abs=1e-6)


def test_int8_codes_match_a_hand_computation():
    q, scale = quantize_rows(W[:2], 8)
    assert scale.squeeze(1).tolist() == pytest.approx([0.7 / 127, 1.4 / 127], rel=1e-6)
    # 0.7 -> 127; -0.33 / (0.7/127) = -59.87 -> -60; 0.12 -> 21.77 -> 22 | -1.4 -> -127; 0.2 -> 18.14 -> 18;
    # 0.54 -> 48.99 -> 49; 1.0 -> 90.71 -> 91
    assert q.tolist() == [[127, -60, 22, 0], [-127, 18, 49, 91]]


def test_symmetric_range_and_ties_to_even():
    assert [qmax(b) for b in (2, 4, 8)] == [1, 7, 127]
    for bad in (1, 0, 17, 4.0, True):
        with pytest.raises(ValueError, match="bits"):
            qmax(bad)
    # max 7 -> scale 1 exactly: 2.5 -> 2, 3.5 -> 4, -0.5 -> 0 (round half to even); -7 is the lowest code
    q, scale = quantize_rows(torch.tensor([[7.0, 2.5, 3.5, -0.5, -7.0]]), 4)
    assert scale.item() == 1.0 and q.tolist() == [[7, 2, 4, 0, -7]]
    with pytest.raises(ValueError, match="2-D"):
        quantize_rows(torch.ones(3), 4)
    with pytest.raises(ValueError, match="NaN"):
        quantize_rows(torch.tensor([[1.0, float("nan")]]), 4)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_grid_size_error_bound_and_idempotence(bits):
    torch.manual_seed(bits)
    w = torch.randn(64, 300) * torch.rand(64, 1) * 0.1
    q, scale = quantize_rows(w, bits)
    deq = fake_quantize(w, bits)
    Q = qmax(bits)
    assert q.abs().max().item() == Q  # every row's largest entry maps to ±Q
    levels = 2 ** bits
    for row in deq:
        assert len(torch.unique(row)) <= min(levels - 1, 2 * Q + 1) <= levels  # 15 for 4-bit, 255 for int8
    assert ((w - deq).abs() <= scale / 2 + 1e-7).all()
    assert torch.allclose(fake_quantize(deq, bits), deq, atol=1e-7)  # the grid is a fixed point
    assert torch.equal(quantize_rows(w, bits)[0], q)  # deterministic


@pytest.fixture(scope="module")
def trained(tiny_data, tok, tiny_cfg):
    """The tiny Llama after 200 steps on the tiny corpus (so its predictions are not near-ties), and an
    evaluator on 400 training rows."""
    rows = read_jsonl(tiny_data / "train.jsonl")
    ids, plen = tokenize_examples(tok, rows)
    net = build_model(tiny_cfg, seed=0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    rng = random.Random(0)
    for _ in range(200):
        idx = rng.sample(range(len(ids)), 64)
        b = pad_examples([ids[i] for i in idx], [plen[i] for i in idx])
        loss = token_ce(net(b["input_ids"]), b["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net, Evaluator(tok, rng.sample(rows, 400))


def argmax_agreement(a, b, ev: Evaluator) -> float:
    """Share of answer positions (of the evaluator's rows) where models a and b predict the same token."""
    same = n = 0
    cpu = torch.device("cpu")
    with torch.no_grad():
        for batches in ev.batches.values():
            for (pa, _, mask), (pb, _, _) in zip(Evaluator.predictions(a, batches, "fp32", cpu),
                                                  Evaluator.predictions(b, batches, "fp32", cpu)):
                same += (pa.argmax(-1) == pb.argmax(-1))[mask].sum().item()
                n += mask.sum().item()
    return same / n


def selected_mask_except_row_max(w: torch.Tensor) -> torch.Tensor:
    return w.abs() < w.abs().amax(dim=1, keepdim=True)


@pytest.mark.parametrize("bits", QUANT_BITS)
def test_tiny_perturbations_of_a_quantized_model_quantize_back_and_keep_its_predictions(trained, bits):
    """A model on the grid, each matrix entry (row maxima aside, so the scales stay) moved by up to a
    quarter of its row's step, quantizes back onto the same grid: same weights, same greedy accuracy, same
    argmax at every position of the fixture data."""
    net, ev = trained
    grid = quantize_model(net, bits)
    noisy = quantize_model(net, bits)
    gen = torch.Generator().manual_seed(bits)
    params = dict(noisy.named_parameters())
    names = quantized_weights(noisy)
    with torch.no_grad():
        for name in names:
            w = params[name]
            _, scale = quantize_rows(w, bits)
            noise = (torch.rand(w.shape, generator=gen) - 0.5) * 0.5 * scale
            w.add_(noise * selected_mask_except_row_max(w))
    assert any(not torch.equal(params[n], dict(grid.named_parameters())[n]) for n in names)
    again = quantize_model(noisy, bits)
    for (name, a), b in zip(again.named_parameters(), grid.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-7), name
    assert ev(again) == pytest.approx(ev(grid), abs=1e-6)
    assert argmax_agreement(again, grid, ev) == 1.0
    # at int8 (a quarter step is ~1e-4 here) the noisy model itself predicts almost as the grid model does
    # (at 4 bits a quarter step is no longer tiny: ~97% agreement)
    if bits == 8:
        assert argmax_agreement(noisy, grid, ev) >= 0.99


def test_int8_keeps_greedy_accuracy_and_4bit_moves_more(trained):
    """int8 RTN of a (briefly) trained model: per-operation exact-match accuracy within one example of
    fp32 and argmax agreement >= 99% of answer positions; 4-bit perturbs weights more than int8."""
    net, ev = trained
    base = ev(net)
    q8, q4 = quantize_model(net, 8), quantize_model(net, 4)
    r8 = ev(q8)
    for op in ("add", "sub", "mul", "div"):
        n = sum(b["input_ids"].shape[0] for b in ev.batches[op])
        assert abs(r8[f"acc_{op}"] - base[f"acc_{op}"]) <= 1 / n + 1e-9
    assert argmax_agreement(net, q8, ev) >= 0.99
    err = {bits: sum((a - b).abs().sum().item() for a, b in zip(net.parameters(), q.parameters()))
           for bits, q in ((8, q8), (4, q4))}
    assert 0 < err[8] < err[4]


def test_which_weights_are_quantized_and_the_original_is_untouched(tiny_cfg):
    net = build_model(tiny_cfg, seed=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q = quantize_model(net, 4)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # original untouched
    expected = sorted(f"model.layers.{i}.{m}.weight" for i in range(tiny_cfg.n_layers) for m in BLOCK_LINEARS)
    assert quantized_weights(net) == expected
    after = dict(q.named_parameters())
    for name, p in net.named_parameters():
        if name in expected:
            assert not torch.equal(after[name], p) and after[name].dtype == torch.float32
            assert all(len(torch.unique(row)) <= 15 for row in after[name])
        else:  # norm gains (1-D), embeddings and the LM head stay exact
            assert torch.equal(after[name], p), name
    assert {n for n, p in net.named_parameters() if p.ndim == 1} and \
        all(n not in expected for n, p in net.named_parameters() if p.ndim == 1)
    both = quantized_weights(net, include_lm_head=True, include_embeddings=True)
    assert both == sorted(expected + ["lm_head.weight", "model.embed_tokens.weight"])
    qb = dict(quantize_model(net, 4, include_lm_head=True, include_embeddings=True).named_parameters())
    assert torch.equal(qb["lm_head.weight"], fake_quantize(net.lm_head.weight, 4))
    assert torch.equal(qb["model.embed_tokens.weight"], fake_quantize(net.model.embed_tokens.weight, 4))


def test_hf_models_are_quantized_alike_and_tied_weights_once():
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline_py.hf_model import HFCausalLM

    cfg = ModelConfig(vocab_size=30, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=16)
    torch.manual_seed(0)
    wrapped = HFCausalLM(LlamaForCausalLM(LlamaConfig(**cfg.to_hf(0, 1, 2))))
    names = quantized_weights(wrapped)
    assert names == sorted(f"hf.model.layers.{i}.{m}.weight" for i in range(2) for m in BLOCK_LINEARS)
    assert "hf.lm_head.weight" in quantized_weights(wrapped, include_lm_head=True)
    q = quantize_model(wrapped, 8)
    x = torch.randint(3, 30, (2, 6))
    with torch.no_grad():
        assert q(x).shape == (2, 6, 30)
    original, quantized = dict(wrapped.named_parameters()), dict(q.named_parameters())
    assert all(torch.equal(quantized[n], fake_quantize(original[n], 8)) for n in names)

    tied = HFCausalLM(LlamaForCausalLM(LlamaConfig(**{**cfg.to_hf(0, 1, 2), "tie_word_embeddings": True})))
    assert tied.hf.lm_head.weight is tied.hf.model.embed_tokens.weight
    assert len(quantized_weights(tied, include_lm_head=True)) == 2 * len(BLOCK_LINEARS) + 1
    qt = quantize_model(tied, 4, include_lm_head=True)
    assert qt.hf.lm_head.weight is qt.hf.model.embed_tokens.weight  # still tied, quantized once
    assert torch.equal(qt.hf.lm_head.weight, fake_quantize(tied.hf.lm_head.weight, 4))


def test_conv1d_weights_are_quantized_per_output_column():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    m = nn.Sequential(Conv1D(5, 3))  # weight [in = 3, out = 5]
    q = quantize_model(m, 4)
    assert torch.equal(q[0].weight, fake_quantize(m[0].weight.T, 4).T)
    assert torch.equal(q[0].bias, m[0].bias)
