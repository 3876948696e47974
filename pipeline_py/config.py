"""The study's config as typed sections: the one definition of every key of config.yaml.

`Study.from_dict(config)` builds and checks a whole config (Snakefile, at DAG build), naming the key path,
the value and what is allowed. The JSON schema Snakemake validates against is generated from these
sections:

    python -m pipeline_py.config > workflow/schemas/config.schema.yaml

The core sections live beside the code that reads them (`TrainConfig` in train.py, `ModelConfig` in
model.py, the settings' data sections, ERA's `EraConfig`); this module adds the stage sections and the study.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import yaml

from .arithmetic import ArithmeticConfig
from .language import LanguageConfig
from .model import ModelConfig
from .routing import EraConfig
from .section import Section, json_schema, key
from .train import PRECISIONS, TrainConfig
from .wmdp_sources import WmdpConfig

SETTINGS = ("arithmetic", "language", "wmdp")
FAMILIES = ("forget", "mix", "retain", "heldout", "quant")  # attack families (pipeline_py.stages.attack)
NAME = "[a-z][a-z0-9_]*"  # method names: they become directory names


@dataclass(frozen=True, kw_only=True)
class Runtime(Section):
    """Where and how a stage computes (not part of a stage's science: results do not depend on it)."""

    precision: str = key("auto", "bf16 autocast, fp32, or auto: the faster of the two for this model on this "
                         "machine, measured once and cached", choices=PRECISIONS)
    device: str = key("auto", "cpu, cuda[:N], or auto: cuda when a GPU is visible", pattern=r"auto|cpu|cuda(:[0-9]+)?")
    threads: int = key(1, "torch threads of the job", gt=0)


@dataclass(frozen=True, kw_only=True)
class Cluster(Section):
    """What each job asks SLURM for (workflow/profiles/slurm); a local run shares --cores out instead."""

    train_threads: int = key(2, "CPUs of a training job (pretrain, distill, match_oracle)", gt=0)
    gpu: int = key(0, "GPUs of each training job; 0 = CPU nodes", ge=0)


@dataclass(frozen=True, kw_only=True)
class Filter(Section):
    """The oracle's data filter and the labeling budget of unlearning."""

    n_labeled: int = key(doc="labeled forget and retain examples unlearning may use", gt=0)


@dataclass(frozen=True, kw_only=True)
class Unlearn(Section):
    """The unlearning methods of the study and their hyperparameters."""

    batch_size: int = key(32, "forget and retain examples per step", gt=0)
    warmup: int = key(10, "linear warm-up steps of every method (at most a tenth of its steps), then a constant LR",
                      ge=0)
    grad_clip: float = key(1.0, "max global gradient norm; 0 disables clipping", ge=0)
    methods: list[str] = key(doc="the methods this study runs, by name (each needs an entry in hparams)",
                             nonempty=True, unique=True, pattern=NAME)
    hparams: dict[str, dict] = key(doc="method name -> its hyperparameters (a module of pipeline_py/methods/, or "
                                   "a variant naming its module with `method`)", nonempty=True)

    def check(self):
        missing = [m for m in self.methods if m not in self.hparams]
        if missing:
            raise ValueError(f"methods = {self.methods!r} is invalid: {missing} have no entry in unlearn.hparams "
                             f"(entries: {sorted(self.hparams)})")


@dataclass(frozen=True, kw_only=True)
class Noise(Section):
    """Shrink-and-perturb of the unlearned model: the students' starting points."""

    alphas: list[float] = key(doc="noise strengths α (0 keeps the teacher, 1 destroys it)", ge=0, le=1, unique=True)
    beta: float = key(doc="noise scale β", ge=0)
    methods: list[str] | None = key(None, "unlearned models distilled into students (null: every method)",
                                    unique=True, pattern=NAME)
    fresh_init: bool = key(True, "also distill into a fresh random init (Unlearn-and-Distill)")


@dataclass(frozen=True, kw_only=True)
class Distill(TrainConfig):
    """Forward KL from the unlearned teacher into a student on the unlabeled pretraining mixture."""

    stop_within: float | None = key(doc="stop once the student's retain metric is within this of the teacher's "
                                    "(accuracy points, or relative CE); null = run every step", ge=0, le=1)
    check_every: int = key(doc="steps between those retain checks", gt=0)
    together: bool = key(True, "train every student of one unlearned model in one job, one teacher forward per "
                         "batch for all (false: one job per student, for students too large to share a device)")

    def train_config(self) -> TrainConfig:
        """The training loop's part of the section."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})


@dataclass(frozen=True, kw_only=True)
class Attack(Section):
    """The attacks: finetuning families over an LR grid, and weight quantization."""

    lrs: list[float] = key(doc="constant AdamW LRs of every finetuning attack; the worst case over them is "
                           "reported", gt=0, nonempty=True, unique=True)
    families: list[str] = key(["forget"], "attack families: finetuning on forget data, on a forget + retain mix, "
                              "on retain data only, on half the forget facts scored on the other (heldout), and "
                              "weight quantization (quant, no training)", choices=FAMILIES, nonempty=True, unique=True)
    mix_forget_fraction: float = key(0.5, "share of forget examples in the mix data", gt=0, lt=1)
    heldout_fraction: float = key(0.5, "share of the forget facts the heldout attacker does not get", gt=0, lt=1)
    quant_bits: list[int] = key([8, 4], "bit widths of the quantization attack (round to nearest, per output "
                                "channel)", choices=(2, 3, 4, 8), nonempty=True, unique=True)
    seeds: list[int] = key(doc="attack seeds (data order, drawn from 1000 x the study seed + the attack seed, so "
                           "below 1000 every pair draws its own)", ge=0, lt=1000, nonempty=True, unique=True)
    steps: int = key(doc="attack length in optimizer steps", gt=0)
    eval_every: int = key(doc="steps between evaluations (and at step 0)", gt=0)
    batch_size: int = key(16, "sequences per attack step", gt=0)
    seq_len: int = key(64, "tokens per packed attack sequence", gt=0)
    weight_decay: float = key(0.0, "AdamW decoupled weight decay of the attacker (matrices only)", ge=0)
    grad_clip: float = key(1.0, "the attacker's max global gradient norm; 0 disables clipping", ge=0)


@dataclass(frozen=True, kw_only=True)
class OracleMatch(Section):
    """The oracle distilled into the pretrained base and into a fresh init, both then attacked."""

    inits: list[str] = key(["base", "fresh"], "students: the pretrained base and/or a fresh init; [] = off",
                           choices=("base", "fresh"), unique=True)
    steps: int = key(750, "distillation steps (fixed budget, no early stop)", gt=0)


@dataclass(frozen=True, kw_only=True)
class Report(Section):
    """The summary tables and figures."""

    budgets: list[int] = key(doc="attack step budgets of the summary table and the Pareto figure", ge=0,
                             nonempty=True)
    forget_metric: str | None = key(None, "headline forget metric; null = the setting's", pattern="[a-z_]+")
    retain_metric: str | None = key(None, "headline retain metric; null = the setting's", pattern="[a-z_]+")
    higher_is_better: bool | None = key(None, "direction of the metrics; null = the setting's")


@dataclass(frozen=True, kw_only=True)
class Study(Section):
    """Configuration of the UNDO unlearning study (config.yaml says why each value is chosen)."""

    results: str = key(doc="root of all outputs; they live under <results>/<setting>/seed<N>/", pattern=".+")
    setting: str = key(doc="what is retained and forgotten, and how it is measured", choices=SETTINGS)
    seeds: list[int] = key(doc="one study per seed (data, inits, training order)", ge=0, nonempty=True, unique=True)
    pretrain_seed: int | None = key(None, "the seed of the one pretraining (data splits, base, oracle, routed model) "
                                    "every seed's later stages start from; null = each seed pretrains its own",
                                    ge=0)
    precision: str = key("auto", "bf16 autocast, fp32, or auto (the faster, measured once per machine and model "
                         "size)", choices=PRECISIONS)
    device: str = key("auto", "cpu, cuda[:N], or auto", pattern=r"auto|cpu|cuda(:[0-9]+)?")
    cluster: Cluster = key(Cluster(), "SLURM requests")
    arithmetic: ArithmeticConfig | None = key(None, "data of the arithmetic setting")
    language: LanguageConfig | None = key(None, "data of the language setting")
    wmdp: WmdpConfig | None = key(None, "model and data of the wmdp setting")
    filter: Filter = key(doc="labeling")
    model: ModelConfig = key(ModelConfig(), "the model trained from scratch (not read in the wmdp setting)")
    pretrain: TrainConfig = key(doc="the recipe of the base (all data) and the oracle (retain data only)")
    unlearn: Unlearn = key(doc="unlearning methods")
    noise: Noise = key(doc="students' starting points")
    distill: Distill = key(doc="distillation into the students")
    era: EraConfig | None = key(None, "gradient routing (expand, route, ablate); null = off")
    attack: Attack = key(doc="the relearning attack")
    oracle_match: OracleMatch = key(OracleMatch(), "oracle matching")
    report: Report = key(doc="tables and figures")

    schema_extra = {"allOf": [{"if": {"properties": {"setting": {"const": s}}}, "then": {"required": [s]}}
                              for s in SETTINGS]}

    def check(self):
        from .methods import get_method
        from .noise import check_alpha_beta

        if getattr(self, self.setting) is None:
            raise ValueError(f"{self.setting}: missing key (the {self.setting} setting reads its data from it)")
        for name in self.unlearn.methods:
            get_method(name, self.unlearn.hparams[name])
        for alpha in self.noise.alphas:
            check_alpha_beta(alpha, self.noise.beta)
        unknown = sorted(set(self.noise.methods or []) - set(self.unlearn.methods))
        if unknown:
            raise ValueError(f"noise.methods = {self.noise.methods!r} is invalid: {unknown} are not unlearning "
                             f"methods of this study; allowed: {self.unlearn.methods}")
        if self.setting != "wmdp":  # a pretrained model brings its own context
            for section in ("pretrain", "distill", "attack"):
                seq_len = getattr(self, section).seq_len
                if seq_len > self.model.max_len:
                    raise ValueError(f"{section}.seq_len = {seq_len} is invalid: it must be at most the model's "
                                     f"context model.max_len = {self.model.max_len}")
        too_long = [b for b in self.report.budgets if b > self.attack.steps]
        if too_long:
            raise ValueError(f"report.budgets = {self.report.budgets} is invalid: budgets {too_long} exceed the "
                             f"attack length attack.steps = {self.attack.steps}")
        unseen = [b for b in self.report.budgets if b % self.attack.eval_every and b != self.attack.steps]
        if unseen:
            raise ValueError(f"report.budgets = {self.report.budgets} is invalid: no evaluation falls on {unseen}; "
                             f"allowed: multiples of attack.eval_every = {self.attack.eval_every}, or attack.steps = "
                             f"{self.attack.steps}")
        if self.era is not None:
            if self.setting == "wmdp":
                raise ValueError("era: the wmdp setting starts from a pretrained model, so there is no pretraining "
                                 "to route; set era: null")
            bad = [i for i in self.era.layers if i >= self.model.n_layers]
            if bad:
                raise ValueError(f"era.layers = {list(self.era.layers)} is invalid: blocks {bad} do not exist "
                                 f"(model.n_layers = {self.model.n_layers})")

    @property
    def data(self) -> Section:
        """The data section of the study's setting."""
        return getattr(self, self.setting)

    @property
    def oracle(self) -> bool:
        """Whether the study has an oracle (a pretrained base may come without one)."""
        return self.setting != "wmdp" or bool(self.wmdp.oracle)


def main() -> None:
    header = "# Generated from pipeline_py/config.py by `python -m pipeline_py.config`: do not edit by hand.\n"
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **json_schema(Study)}
    sys.stdout.write(header + yaml.safe_dump(schema, sort_keys=False, allow_unicode=True, width=120,
                                    default_flow_style=None))


if __name__ == "__main__":
    main()
