"""Gradient routing (ERA: expand, route, ablate; Cloud et al. 2024): the routed model, its masks and data.

Expand: chosen layers get `extra` MLP hidden neurons beyond the `d_ff` originals. Route: on the MLP
hidden activation h [B, T, F+k] of those layers, h' = m ⊙ h + (1 − m) ⊙ stopgrad(h): the forward value
is h exactly (an identity whose backward multiplies by m), only the gradient is weighted per token.
Ablate: drop the extra neurons (rows of gate/up, columns of down) to get the standard architecture back.

One concern per module, in the order the pieces meet during `era.pretrain_routed`:

- `config`: the `era` config block (`EraConfig`).
- `masks`: per-token routing strengths → the gradient weights of the predicting positions (`targets`,
  `route_weights`), which forget examples carry a label (`labeled_mask`), soft routing (`unigram_weights`).
- `stream`: `RoutedStream`, the packed pretraining stream that also yields each token's strength.
- `model`: the routed architecture: the `RouteGrad` autograd op, `RoutedMLP`, `RoutedLM` with its L1
  penalty and its ablation back to a plain `CausalLM`.
- `checkpoint`: the routed checkpoint format (`save_routed`, `load_routed`), not a standard checkpoint.

Every public name is re-exported here, so `from pipeline_py.routing import ...` works for all of them.
"""
from __future__ import annotations

from .checkpoint import ROUTING, WEIGHTS, load_routed, save_routed
from .config import ROUTE_TOKENS, EraConfig, stage_keys
from .masks import labeled_mask, route_weights, targets, unigram_weights
from .model import RoutedLM, RoutedMLP, RouteGrad
from .stream import RoutedStream

__all__ = ["EraConfig", "ROUTE_TOKENS", "stage_keys",
           "targets", "route_weights", "labeled_mask", "unigram_weights",
           "RoutedStream",
           "RouteGrad", "RoutedMLP", "RoutedLM",
           "WEIGHTS", "ROUTING", "save_routed", "load_routed"]
