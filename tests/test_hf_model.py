"""The Hugging Face wrapper's `hidden_layer` output is the residual stream after the block, for every block:
for the last one Hugging Face's `hidden_states[-1]` is the state after the final norm, which RMU must not
steer. The pipeline's own Llama gives the block's residual output too, and agrees with the wrapper."""
from __future__ import annotations

import pytest
import torch

from pipeline_py.hf_model import HFCausalLM
from pipeline_py.model import ModelConfig, build_model

CFG = ModelConfig(vocab_size=40, d_model=16, n_layers=3, n_heads=2, d_ff=32, max_len=16)


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    hf = LlamaForCausalLM(LlamaConfig(**CFG.to_hf(pad_id=0, bos_id=1, eos_id=2)))
    with torch.no_grad():  # non-trivial norm gains, so the final norm visibly changes the state
        for name, p in hf.named_parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    return HFCausalLM(hf).eval()


def block_outputs(model, x) -> list[torch.Tensor]:
    """Every decoder layer's own output, captured by hooks independent of the wrapper's."""
    seen: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
             for layer in model.model.layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.fixture(scope="module")
def wrapped():
    return tiny_llama()


@pytest.fixture(scope="module")
def x():
    return torch.randint(3, CFG.vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))


def test_last_layer_is_the_blocks_residual_output_not_the_final_normed_state(wrapped, x):
    L = CFG.n_layers
    ref = block_outputs(wrapped, x)
    with torch.no_grad():
        logits, h = wrapped(x, hidden_layer=L - 1)
        hf = wrapped.hf(input_ids=x, output_hidden_states=True, use_cache=False)
    assert len(ref) == L and h.shape == (2, 7, CFG.d_model)
    assert torch.equal(h, ref[L - 1])
    normed = wrapped.model.norm(ref[L - 1])
    assert torch.allclose(hf.hidden_states[L], normed, atol=1e-6)  # HF's last entry is after the final norm
    assert not torch.allclose(h, hf.hidden_states[L], atol=1e-2)
    assert torch.allclose(logits, hf.logits, atol=1e-6)
    assert torch.allclose(wrapped.hf.lm_head(wrapped.model.norm(h)), logits, atol=1e-5)


@pytest.mark.parametrize("layer", [0, 1])
def test_intermediate_layers_still_match_hidden_states(wrapped, x, layer):
    ref = block_outputs(wrapped, x)
    with torch.no_grad():
        logits, h = wrapped(x, hidden_layer=layer)
        hf = wrapped.hf(input_ids=x, output_hidden_states=True, use_cache=False)
    assert torch.allclose(h, hf.hidden_states[layer + 1], atol=1e-6) and torch.equal(h, ref[layer])
    assert not torch.allclose(h, hf.hidden_states[layer + 2], atol=1e-2)
    assert torch.allclose(logits, wrapped(x), atol=1e-6)


def test_gradients_flow_through_the_captured_state_and_hooks_are_removed(wrapped, x):
    """RMU backpropagates through h into mlp.down_proj; the wrapper leaves no hook behind."""
    w = wrapped.model.layers[CFG.n_layers - 1].mlp.down_proj.weight
    before = [dict(layer._forward_hooks) for layer in wrapped.model.layers]  # transformers' own hooks
    _, h = wrapped(x, hidden_layer=CFG.n_layers - 1)
    (g,) = torch.autograd.grad(h.pow(2).sum(), w)
    assert g.abs().sum() > 0
    assert [dict(layer._forward_hooks) for layer in wrapped.model.layers] == before


@pytest.mark.parametrize("bad", [-1, CFG.n_layers, 1.5, True])
def test_out_of_range_layers_are_refused(wrapped, x, bad):
    with pytest.raises(ValueError, match="hidden_layer"):
        wrapped(x, hidden_layer=bad)


def test_pipeline_llama_gives_the_same_residual_outputs_as_the_wrapper(x):
    """The pipeline's own Llama, loaded into LlamaForCausalLM, returns the same tensor for every block
    (the last included): the residual stream after the block, before the final norm."""
    from transformers import LlamaConfig, LlamaForCausalLM

    own = build_model(CFG, seed=2).eval()
    with torch.no_grad():
        for p in own.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    hf = LlamaForCausalLM(LlamaConfig(**CFG.to_hf(pad_id=0, bos_id=1, eos_id=2)))
    missing, unexpected = hf.load_state_dict(own.state_dict(), strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    wrapped = HFCausalLM(hf).eval()
    with torch.no_grad():
        # by hand: block by block through the pipeline's modules
        T = x.shape[1]
        h = own.model.embed_tokens(x)
        manual = []
        for block in own.model.layers:
            h = block(h, own.cos[:T], own.sin[:T])
            manual.append(h)
        for layer in range(CFG.n_layers):
            logits_own, h_own = own(x, hidden_layer=layer)
            logits_hf, h_hf = wrapped(x, hidden_layer=layer)
            assert torch.equal(h_own, manual[layer])
            assert torch.allclose(h_own, h_hf, atol=1e-5)
            assert torch.allclose(logits_own, logits_hf, atol=1e-5)
        assert not torch.allclose(manual[-1], own.model.norm(manual[-1]), atol=1e-2)
