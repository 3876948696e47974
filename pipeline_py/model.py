"""A small Llama written out in plain PyTorch, parameter-for-parameter compatible with Hugging Face's
`LlamaForCausalLM` (same names, shapes and maths), so checkpoints load with `from_pretrained` while
training jobs skip the seconds that importing `transformers` costs.

Shapes: B batch, T time, D d_model, H heads, Dh = D/H head width, F d_ff, V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .section import Section, key


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Section):
    """The pipeline's tiny Llama (checkpoints load with AutoModelForCausalLM.from_pretrained)."""

    vocab_size: int = key(80, "output classes, set from the tokenizer by the pipeline", gt=0, internal=True)
    d_model: int = key(128, "residual width", gt=0)
    n_layers: int = key(4, "transformer blocks", gt=0)
    n_heads: int = key(4, "attention heads; must divide d_model", gt=0)
    d_ff: int = key(512, "MLP hidden width (SwiGLU)", gt=0)
    max_len: int = key(128, "longest sequence the rotary table covers", gt=0)
    rope_theta: float = key(10000.0, "rotary base, as in Llama", gt=0, internal=True)
    norm_eps: float = key(1e-5, "RMSNorm epsilon", gt=0, internal=True)

    def check(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model = {self.d_model} is invalid: it must be divisible by n_heads = {self.n_heads}")

    def to_hf(self, pad_id: int, bos_id: int, eos_id: int) -> dict:
        """The `config.json` of the equivalent `LlamaForCausalLM`."""
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "vocab_size": self.vocab_size, "hidden_size": self.d_model, "intermediate_size": self.d_ff,
            "num_hidden_layers": self.n_layers, "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_heads, "max_position_embeddings": self.max_len,
            "rope_theta": self.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.norm_eps, "attention_bias": False, "mlp_bias": False,
            "tie_word_embeddings": False, "initializer_range": 0.02, "torch_dtype": "float32",
            "pad_token_id": pad_id, "bos_token_id": bos_id, "eos_token_id": eos_id,
        }

    @classmethod
    def from_hf(cls, hf: dict) -> "ModelConfig":
        theta = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        return cls(vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
                   n_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
                   max_len=hf["max_position_embeddings"], rope_theta=float(theta), norm_eps=hf["rms_norm_eps"])


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):  # normalise in fp32, as Llama does
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, self.H = cfg.d_model, cfg.n_heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(D, D, bias=False) for _ in range(4))

    def forward(self, x, cos, sin):  # x [B, T, D]; cos, sin [T, Dh]
        B, T, D = x.shape
        q, k, v = (p(x).view(B, T, self.H, D // self.H).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin  # [B, H, T, Dh]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x):  # [B, T, D] -> [B, T, F] -> [B, T, D]
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)


class CausalLM(nn.Module):
    """`model.*` + `lm_head`: the parameter layout of `LlamaForCausalLM`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        Dh = cfg.d_model // cfg.n_heads
        inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, Dh, 2, dtype=torch.float32) / Dh)
        angles = torch.outer(torch.arange(cfg.max_len, dtype=torch.float32), inv_freq)  # [max_len, Dh/2]
        angles = torch.cat((angles, angles), dim=-1)  # [max_len, Dh]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Llama's init: N(0, 0.02) for every matrix, ones for norm gains."""
        for name, p in self.named_parameters():
            if p.ndim == 2:
                nn.init.normal_(p, mean=0.0, std=0.02)
            else:
                nn.init.ones_(p)

    def forward(self, input_ids: torch.Tensor, hidden_layer: int | None = None):
        """Logits [B, T, V]; with `hidden_layer` = ℓ also the residual stream after block ℓ [B, T, D]."""
        T = input_ids.shape[1]
        if T > self.cfg.max_len:
            raise ValueError(f"sequence of {T} tokens exceeds model.max_len = {self.cfg.max_len}")
        cos, sin = self.cos[:T], self.sin[:T]
        x = self.model.embed_tokens(input_ids)
        hidden = None
        for i, block in enumerate(self.model.layers):
            x = block(x, cos, sin)
            if i == hidden_layer:
                hidden = x
        logits = self.lm_head(self.model.norm(x))
        return logits if hidden_layer is None else (logits, hidden)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(cfg: ModelConfig, seed: int) -> CausalLM:
    torch.manual_seed(seed)
    return CausalLM(cfg)

