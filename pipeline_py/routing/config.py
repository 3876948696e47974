"""The `era` config block: `EraConfig`, every key with its type, allowed values and meaning (the depth check
against the model is the study's: pipeline_py/config.py)."""
from __future__ import annotations

from dataclasses import dataclass

from ..section import Section, key

ROUTE_TOKENS = ("answer", "example")  # which targets of a labeled forget example are routed
ABLATE_KEYS = ("finetune_steps", "finetune_lr")  # the era keys only the ablation reads
WORKFLOW_KEYS = ("undo_alphas",)  # the era keys only the workflow reads (which students to distill)


def stage_keys(era: dict, stage: str) -> dict:
    """The entries of an era mapping that one stage reads: 'pretrain_routed' or 'ablate'. A rule passes only
    these, so changing the finetune reruns nothing before the ablation."""
    if stage == "ablate":
        return {k: v for k, v in era.items() if k in ABLATE_KEYS}
    return {k: v for k, v in era.items() if k not in ABLATE_KEYS + WORKFLOW_KEYS}


@dataclass(frozen=True, kw_only=True)
class EraConfig(Section):
    """Gradient routing (ERA: expand, route, ablate): a routed pretraining with the base's recipe, then ablation."""

    layers: list[int] = key([0, 1, 2, 3], "blocks whose MLP is expanded and routed", ge=0, nonempty=True, unique=True)
    steps_factor: float = key(1.0, "routed pretraining steps / the base's (the LR schedule stretches with them)", gt=0)
    extra: int = key(64, "k extra MLP hidden neurons per routed layer", gt=0)
    forget_weight: float = key(0.0, "gradient weight of the original neurons on routed tokens (paper: -0.75)", le=1)
    route_tokens: str = key("answer", "targets routed in a labeled forget example: the answer (+ EOS) or the "
                            "whole example", choices=ROUTE_TOKENS)
    soft: bool = key(False, "scale each token's routing by its forget/retain unigram frequency ratio")
    l1: float = key(1e-3, "L1 on the extra neurons' activations outside labeled forget examples", ge=0)
    l1_orig: float = key(1e-3, "L1 on the original neurons' activations at routed positions", ge=0)
    labeled_fraction: float = key(1.0, "share of forget examples whose label routing may use", ge=0, le=1)
    finetune_steps: int = key(100, "coherence finetune steps after ablation (0 = none)", ge=0)
    finetune_lr: float = key(1e-4, "its constant AdamW learning rate", gt=0)
    undo_alphas: list[float] = key([], "noise strengths of ERA + UNDO students", ge=0, le=1, unique=True)
