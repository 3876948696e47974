"""The `era` config block: `EraConfig` validates each key on its own (naming the key, its value and what is
allowed), and `check_era` validates the block against the setting and the model's depth at DAG build time,
so a bad ERA config fails before any job runs.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..model import ModelConfig

ROUTE_TOKENS = ("answer", "example")  # which targets of a labeled forget example are routed


@dataclass(frozen=True)
class EraConfig:
    layers: tuple[int, ...] = (0, 1, 2, 3)  # blocks whose MLP is expanded and routed
    steps_factor: float = 1.0  # routed pretraining steps / the base's (the LR schedule stretches with them)
    extra: int = 64  # k extra MLP hidden neurons per routed layer
    forget_weight: float = 0.0  # gradient weight of the original neurons on routed tokens (<= 1; paper: -0.75)
    route_tokens: str = "answer"  # targets routed in a labeled forget example: "answer" (answer + EOS) or "example"
    soft: bool = False  # scale each token's routing by its forget/retain unigram frequency ratio
    l1: float = 1e-3  # L1 on the extra neurons' activations at positions outside labeled forget examples
    l1_orig: float = 1e-3  # L1 on the original neurons' activations at routed positions (weighted by strength)
    labeled_fraction: float = 1.0  # share of forget examples whose label routing may use
    finetune_steps: int = 100  # coherence finetune after ablation (0 = none)
    finetune_lr: float = 1e-4  # its constant AdamW learning rate
    undo_alphas: tuple[float, ...] = ()  # noise strengths of ERA + UNDO students (workflow only)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "undo_alphas", tuple(self.undo_alphas))
        self.check("layers", len(self.layers) > 0 and all(_is_int(i) and i >= 0 for i in self.layers)
                   and len(set(self.layers)) == len(self.layers), "a non-empty list of distinct block indices >= 0")
        self.check("steps_factor", _is_num(self.steps_factor) and self.steps_factor > 0, "a number > 0")
        self.check("extra", _is_int(self.extra) and self.extra > 0, "a positive integer")
        self.check("forget_weight", _is_num(self.forget_weight) and self.forget_weight <= 1, "a number <= 1")
        self.check("route_tokens", self.route_tokens in ROUTE_TOKENS, f"one of {list(ROUTE_TOKENS)}")
        self.check("soft", isinstance(self.soft, bool), "true or false")
        self.check("l1", _is_num(self.l1) and self.l1 >= 0, "a number >= 0")
        self.check("l1_orig", _is_num(self.l1_orig) and self.l1_orig >= 0, "a number >= 0")
        self.check("labeled_fraction", _is_num(self.labeled_fraction) and 0 <= self.labeled_fraction <= 1,
                   "a number in [0, 1]")
        self.check("finetune_steps", _is_int(self.finetune_steps) and self.finetune_steps >= 0, "an integer >= 0")
        self.check("finetune_lr", _is_num(self.finetune_lr) and self.finetune_lr > 0, "a number > 0")
        self.check("undo_alphas", all(_is_num(a) and 0 <= a <= 1 for a in self.undo_alphas), "numbers in [0, 1]")

    def check(self, key: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise ValueError(f"era.{key} = {getattr(self, key)!r} is invalid: it must be {allowed}")

    @classmethod
    def from_dict(cls, params: dict) -> "EraConfig":
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"era: unknown keys {unknown}; allowed: {sorted(allowed)}")
        return cls(**params)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def check_era(era: dict, model: dict, setting: str = "arithmetic") -> EraConfig:
    """The `era` config block, validated against itself, the setting and the model's depth (at DAG build time)."""
    if setting == "wmdp":
        raise ValueError("era: the wmdp setting starts from a pretrained model, so there is no pretraining to route; "
                         "set `era: null` in its config")
    ec = EraConfig.from_dict(era)
    n_layers = model.get("n_layers", ModelConfig.n_layers)
    bad = [i for i in ec.layers if i >= n_layers]
    if bad:
        raise ValueError(f"era.layers = {list(ec.layers)} is invalid: {bad} exceed the model's {n_layers} blocks "
                         f"(allowed 0..{n_layers - 1})")
    return ec
