"""The interface every unlearning method implements.

A method is a frozen dataclass: its fields are its hyperparameters (validated in `__post_init__`),
`loss(model, forget, retain)` is the scalar to minimise. A method writes `forget_loss(model, forget)`;
`loss` adds the retain term `retain_loss(model, retain)` to it, λ·CE on the retain batch
(λ = `retain_weight`; nothing is added, and no retain batch drawn, when λ = 0). A method whose retain term
is another quantity overrides `retain_loss` (RMU: an MSE to the frozen model's hidden states).
Optional hooks, all with defaults, let a method go beyond a plain loss while `pipeline_py.train.train`
stays the only training loop:

- `prepare(model)`: called once before training. With `needs_frozen = True` it keeps a frozen deep
  copy of the starting model (the reference of NPO, the teacher of UnDIAL, RMU's retain anchor);
  `frozen(batch)` runs it under `torch.inference_mode` and counts its tokens in `run.frozen_tokens`
  (reported as `frozen_tokens`, 2·N FLOPs per token).
- `trainable(model)`: the parameters that train (default all; RMU: a few MLP down-projections).
- `backward(loss, recompute, params)`: the gradients of one step; with `sam_rho > 0` (any method)
  it is a sharpness-aware (SAM) step.
- `should_stop(loss)`: an early stop on the loss value of a step (GradAscent's divergence guard).
- `uses_retain`: whether `loss` reads the retain batch (default: retain_weight > 0).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, ClassVar

import torch

from ..losses import token_ce
from ..tokenizer import PAD_ID

REGISTRY: dict[str, type["UnlearnMethod"]] = {}


def register(cls: type["UnlearnMethod"]) -> type["UnlearnMethod"]:
    REGISTRY[cls.name] = cls
    return cls


def n_tokens(batch: dict) -> int:
    """Non-pad tokens of a batch (what a forward pass over it costs, as ExampleBatches counts it)."""
    return int(nonpad(batch).sum())


def nonpad(batch: dict) -> torch.Tensor:
    """[B, T] bool mask of the real tokens (BOS, prompt, answer, EOS) of a padded batch."""
    if "attention_mask" in batch:
        return batch["attention_mask"].bool()
    return batch["input_ids"] != PAD_ID


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class UnlearnMethod:
    """Hyperparameters shared by all methods; subclasses add their own fields and `forget_loss`."""

    name: ClassVar[str] = ""
    needs_frozen: ClassVar[bool] = False  # prepare() keeps a frozen copy of the starting model

    steps: int = 100  # optimizer steps of unlearning
    lr: float = 1e-4  # constant learning rate after a short warm-up
    retain_weight: float = 1.0  # λ on the retain term (0 drops it and no retain batch is drawn)
    sam_rho: float = 0.0  # SAM radius ρ of the weight perturbation (0 = plain gradient steps)

    def __post_init__(self):
        self.check("steps", is_int(self.steps) and self.steps > 0, "a positive integer")
        self.check("lr", is_number(self.lr) and self.lr > 0, "a number > 0")
        self.check("retain_weight", is_number(self.retain_weight) and self.retain_weight >= 0, "a number >= 0")
        self.check("sam_rho", is_number(self.sam_rho) and self.sam_rho >= 0, "a number >= 0 (0 = SAM off)")
        object.__setattr__(self, "run", SimpleNamespace(frozen=None, frozen_tokens=0))  # runtime state

    def check(self, key: str, ok: bool, allowed: str) -> None:
        """Refuse a hyperparameter, naming its config key, its value and what is allowed."""
        if not ok:
            raise ValueError(f"unlearn.hparams.{self.name}.{key} = {getattr(self, key)!r} is invalid: "
                             f"it must be {allowed}")

    @classmethod
    def from_params(cls, params: dict) -> "UnlearnMethod":
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"unlearn.hparams.{cls.name}: unknown keys {unknown}; allowed: {sorted(allowed)}")
        return cls(**params)

    @property
    def uses_retain(self) -> bool:
        """Whether `loss` reads the retain batch."""
        return self.retain_weight > 0

    # ------------------------------------------------------------------ hooks with defaults

    def prepare(self, model: torch.nn.Module) -> None:
        """Called once, before training, on the starting model (already on its device)."""
        self.run.frozen_tokens = 0
        if self.needs_frozen:
            self.run.frozen = copy.deepcopy(model).eval().requires_grad_(False)

    def trainable(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates; all others stay bit-identical."""
        return list(model.parameters())

    def frozen(self, batch: dict, **kw):
        """The frozen starting model on `batch` (no graph), counted as frozen tokens; same outputs as
        `model(batch['input_ids'], **kw)`, as plain tensors that autograd may save."""
        if self.run.frozen is None:
            raise RuntimeError(f"{self.name}: prepare(model) must run before the loss")
        with torch.inference_mode():
            out = self.run.frozen(batch["input_ids"], **kw)
        self.run.frozen_tokens += n_tokens(batch)
        return tuple(o.clone() for o in out) if isinstance(out, tuple) else out.clone()

    def should_stop(self, loss: float) -> bool:
        """True stops training after the current step (`loss` is that step's loss value)."""
        return False

    def backward(self, loss: torch.Tensor, recompute: Callable[[], torch.Tensor], params: list) -> None:
        """Fill `p.grad` for one optimizer step. With sam_rho > 0, SAM (Foret et al. 2021): take the
        gradient g at θ, move to θ + ρ·g/‖g‖, take the gradient there (`recompute()` re-evaluates the
        loss on the same batch), restore θ bit-exactly; the optimizer then steps with that gradient."""
        loss.backward()
        if not self.sam_rho:
            return
        params = [p for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = self.sam_rho / (norm.item() + 1e-12)
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                for p in params:
                    p.add_(p.grad, alpha=scale)
                    p.grad = None
            perturbed = recompute()
            if not torch.isfinite(perturbed):
                raise FloatingPointError(f"{self.name}: SAM loss at the perturbed weights is {perturbed.item()}")
            perturbed.backward()
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)

    # ------------------------------------------------------------------ the loss

    def loss(self, model: torch.nn.Module, forget: dict, retain: dict | None) -> torch.Tensor:
        """The scalar to minimise on one forget batch and one retain batch ({input_ids, labels} [B, T];
        `retain` is None when `uses_retain` is False): forget_loss + retain_loss (the latter only when
        retain_weight > 0)."""
        loss = self.forget_loss(model, forget)
        if self.retain_weight:
            loss = loss + self.retain_loss(model, retain)
        return loss

    def forget_loss(self, model: torch.nn.Module, forget: dict) -> torch.Tensor:
        """The method's own term on the forget batch (every method defines it)."""
        raise NotImplementedError

    def retain_loss(self, model: torch.nn.Module, retain: dict) -> torch.Tensor:
        """The retain term, already weighted: λ·CE of the model on the retain batch (λ = retain_weight)."""
        return self.retain_weight * token_ce(model(retain["input_ids"]), retain["labels"])
