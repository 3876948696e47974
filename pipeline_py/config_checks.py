"""Checks of a whole study config that its JSON schema cannot express, run when Snakemake builds the DAG
(workflow/rules/common.smk), so that no job starts on a config that cannot work.

The schema already rejects unknown keys, wrong types, out-of-range numbers, empty grids and unknown
settings. What is left are values that depend on a plugin (a method's hyperparameters) or on each other
(sequence lengths against the model's context). Every message names the key path, the value and what is
allowed.
"""
from __future__ import annotations

from .methods import get_method
from .model import ModelConfig
from .noise import check_alpha_beta
from .train import TrainConfig

LOOP_ONLY = ("stop_within", "check_every")  # distill keys read by the stage, not by the training loop
DEFAULT_SEQ_LEN = 64  # TrainConfig's and the relearn stage's default sequence length


def check_config(config: dict) -> None:
    """Raise ValueError naming the first key whose value cannot work."""
    for name, params in config["unlearn"]["methods"].items():
        get_method(name, params)
    for alpha in config["noise"]["alphas"]:
        check_alpha_beta(alpha, config["noise"]["beta"])
    unknown = sorted(set(config["noise"].get("methods") or []) - set(config["unlearn"]["methods"]))
    if unknown:
        raise ValueError(f"noise.methods names {unknown}, which are not unlearning methods of this study; "
                         f"allowed: {sorted(config['unlearn']['methods'])}")
    model = ModelConfig(**config["model"])  # d_model divisible by n_heads
    for section in ("pretrain", "distill"):
        try:
            TrainConfig(**{k: v for k, v in config[section].items() if k not in LOOP_ONLY})
        except ValueError as e:
            raise ValueError(f"{section}.{e}") from None
    # the pipeline's own Llama has model.max_len; a pretrained model (wmdp) brings its own context
    for section in ("pretrain", "distill", "attack") if config["setting"] != "wmdp" else ():
        seq_len = config[section].get("seq_len", DEFAULT_SEQ_LEN)
        if seq_len > model.max_len:
            raise ValueError(f"{section}.seq_len = {seq_len} is longer than the model's context "
                             f"model.max_len = {model.max_len}; allowed: 1..{model.max_len}")
    attack_steps = config["attack"]["steps"]
    too_long = [b for b in config["report"]["budgets"] if b > attack_steps]
    if too_long:
        raise ValueError(f"report.budgets = {config['report']['budgets']}: budgets {too_long} exceed the attack "
                         f"length attack.steps = {attack_steps}; allowed: 0..{attack_steps}")
