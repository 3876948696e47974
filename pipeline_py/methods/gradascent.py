"""GradAscent: gradient ascent on the forget data (the simplest unlearning baseline, e.g. Jang et al. 2023).
L = −CE_forget.

The loss is unbounded below, so training diverges if left alone: `forget_ce_ceiling` stops training
cleanly (checkpoint written) after the first step whose forget CE reaches it; a NaN/inf loss still stops
the stage with an error and no checkpoint (train.py, save_checkpoint). No retain term: that is GradDiff.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..losses import token_ce
from .base import UnlearnMethod, is_number, register


@register
@dataclass(frozen=True)
class GradAscent(UnlearnMethod):
    name = "gradascent"
    retain_weight: float = 0.0  # must stay 0: gradient ascent with a retain term is graddiff
    forget_ce_ceiling: float = 5.0  # nats; stop once the forget CE reaches it (log V ≈ 4.4 is uniform)

    def __post_init__(self):
        super().__post_init__()
        self.check("retain_weight", self.retain_weight == 0, "0 (use graddiff for a retain term)")
        self.check("forget_ce_ceiling", is_number(self.forget_ce_ceiling) and self.forget_ce_ceiling > 0,
                   "a number > 0 (nats of forget cross-entropy)")

    def should_stop(self, loss: float) -> bool:
        return -loss >= self.forget_ce_ceiling

    def forget_loss(self, model, forget):
        return -token_ce(model(forget["input_ids"]), forget["labels"])
