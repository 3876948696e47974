"""The interface every unlearning method implements."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

REGISTRY: dict[str, type["UnlearnMethod"]] = {}


def register(cls: type["UnlearnMethod"]) -> type["UnlearnMethod"]:
    REGISTRY[cls.name] = cls
    return cls


@dataclass(frozen=True)
class UnlearnMethod:
    """Hyperparameters shared by all methods; subclasses add their own fields and `loss`."""

    name: ClassVar[str] = ""
    uses_retain: ClassVar[bool] = True  # whether `loss` reads the retain batch

    steps: int = 100  # optimizer steps of unlearning
    lr: float = 1e-4  # constant learning rate after a short warm-up
    retain_weight: float = 1.0  # λ on the retain cross-entropy term

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps <= 0:
            raise ValueError(f"unlearn.methods.{self.name}.steps must be a positive integer, got {self.steps!r}")
        if not self.lr > 0:
            raise ValueError(f"unlearn.methods.{self.name}.lr must be > 0, got {self.lr!r}")
        if self.retain_weight < 0:
            raise ValueError(f"unlearn.methods.{self.name}.retain_weight must be >= 0, got {self.retain_weight!r}")

    @classmethod
    def from_params(cls, params: dict) -> "UnlearnMethod":
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"unlearn.methods.{cls.name}: unknown keys {unknown}; allowed: {sorted(allowed)}")
        return cls(**params)

    def loss(self, model: torch.nn.Module, forget: dict, retain: dict) -> torch.Tensor:
        """The scalar to minimise on one forget batch and one retain batch ({input_ids, labels} [B, T])."""
        raise NotImplementedError
