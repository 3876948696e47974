"""What the `wmdp` setting reads from outside: a pretrained model (hub id or local directory), text
corpora through `datasets` (hub data sets, or local JSON files with `path: json`), and lm-eval tasks.

`WmdpConfig` is the typed form of the config's `wmdp` section; `check_sources` runs when the DAG is
built and fails, before any job starts, naming each model or data set that cannot be loaded (offline,
gated, misspelled or missing) and how to provide it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .section import Section, key

LOCAL_BUILDERS = ("json", "csv", "text", "parquet")  # `datasets` builders that read `data_files`


def _fail(key: str, value, allowed: str) -> None:
    raise ValueError(f"{key} = {value!r} is invalid: it must be {allowed}")


@dataclass(frozen=True, kw_only=True)
class Corpus(Section):
    """One text corpus, loaded with `datasets.load_dataset(path, subset, split=split, data_files=...)`."""

    op: str = key(doc="group label of its rows (per-group CE, balanced batches), e.g. bio, cyber, wikitext",
                  pattern="[a-z][a-z0-9_]*")
    path: str = key(doc="hub data set id (e.g. cais/wmdp-corpora) or a local builder (json) with data_files",
                    pattern=".+")
    subset: str | None = key(None, "the data set's configuration, e.g. cyber-forget-corpus")
    split: str = key("train", "the data set's split")
    text_field: str = key("text", "column holding the document text")
    data_files: str | list[str] | None = key(None, "local files for path: json")
    max_docs: int | None = key(None, "read at most this many documents (null: all)", gt=0)

    def check(self):
        if self.path in LOCAL_BUILDERS and not self.data_files:
            _fail("data_files", self.data_files, f"a file (or list) when path is {self.path!r}")

    def load(self) -> list[str]:
        """The non-empty document texts, in the data set's order."""
        import datasets

        ds = datasets.load_dataset(self.path, self.subset, split=self.split, data_files=self.data_files)
        if self.text_field not in ds.column_names:
            raise ValueError(f"corpus {self.op!r} ({self.path}): no column {self.text_field!r}; "
                             f"columns: {ds.column_names} (set text_field)")
        if self.max_docs is not None:
            ds = ds.select(range(min(self.max_docs, len(ds))))
        return [t for t in ds[self.text_field] if isinstance(t, str) and t.strip()]


@dataclass(frozen=True, kw_only=True)
class LmEvalConfig(Section):
    """What lm-eval-harness scores: forget tasks (WMDP) and retain tasks (MMLU)."""

    forget_tasks: dict[str, str] = key({"wmdp_bio": "wmdp_bio", "wmdp_cyber": "wmdp_cyber"},
                                       "metric name -> lm-eval task; accuracy, lower is better, 25 % is chance",
                                       nonempty=True)
    retain_tasks: dict[str, str] = key({"mmlu": "mmlu"}, "metric name -> lm-eval task (utility)", nonempty=True)
    limit: int | None = key(None, "questions per task (per MMLU subject); null: all", gt=0)
    batch_size: int = key(8, "lm-eval's batch of loglikelihood requests", gt=0)
    include_path: str | None = key(None, "directory of extra task YAMLs (local stand-ins)")
    builtin_tasks: bool = key(True, "index lm-eval's own tasks (about a minute); false when include_path has all")

    def check(self):
        if self.include_path is not None and not Path(self.include_path).is_dir():
            _fail("include_path", self.include_path, "an existing directory of task YAML files")
        if not self.builtin_tasks and self.include_path is None:
            _fail("builtin_tasks", False, "true unless include_path holds every task")


@dataclass(frozen=True, kw_only=True)
class Resources(Section):
    """Memory and wall time of every job that holds the pretrained model (GPUs come from cluster.gpu)."""

    mem_mb: int | None = key(None, "memory per job in MB", gt=0)
    runtime: int | None = key(None, "wall time per job in minutes", gt=0)


@dataclass(frozen=True, kw_only=True)
class WmdpConfig(Section):
    """The wmdp setting: a pretrained Hugging Face model, WMDP corpora, lm-eval scores."""

    base: str = key(doc="the pretrained model: hub id (google/gemma-2-2b) or a local directory", pattern=".+")
    forget: list[Corpus] = key(doc="hazardous-knowledge corpora (WMDP bio and cyber forget corpora)", nonempty=True)
    retain: list[Corpus] = key(doc="general text (wikitext); with forget, the distillation mixture", nonempty=True)
    oracle: str | None = key(None, "optional reference model that never saw the forget data")
    revision: str | None = key(None, "hub revision of base and oracle (null: main)")
    pretrain_tokens: float = key(0.0, "tokens the named models were pretrained on (FLOPs of the lineage)", ge=0)
    chunk_tokens: int = key(256, "documents are cut into pieces of at most this many tokens", gt=0)
    eval_fraction: float = key(0.1, "share of documents held out for forget/retain CE", gt=0, lt=0.5)
    attack_fraction: float = key(0.2, "share of forget documents kept for the attacker only", gt=0, lt=0.5)
    eval_per_op: int = key(64, "CE evaluation chunks per corpus", gt=0)
    eval_batch_size: int = key(8, "sequences per forward pass when measuring CE", gt=0)
    lm_eval: LmEvalConfig = key(LmEvalConfig(), "the lm-eval evaluation")
    resources: Resources = key(Resources(), "Snakemake resources of the jobs that hold the model")

    def check(self):
        ops = [c.op for c in tuple(self.forget) + tuple(self.retain)]
        if len(set(ops)) != len(ops):
            _fail("forget/retain (their op labels)", ops, "distinct op labels")

    @classmethod
    def parse(cls, raw: dict) -> "WmdpConfig":
        return cls.from_dict(raw, "wmdp")


# ---------------------------------------------------------------------------------- load checks

HOW_MODEL = ("download it once with network access (`huggingface-cli download {name}`), or set {key} to a "
             "local directory holding config.json and the weights")
HOW_DATA = ("load it once with network access so it is cached, or copy it to a local file and set "
            "{key}.path: json with {key}.data_files: FILE")


def explain(key: str, name: str, err: Exception, how: str) -> str:
    """One line: which source failed, why (gated, misspelled/missing, offline) and how to provide it."""
    from huggingface_hub import errors as hub

    text = f"{type(err).__name__}: {err}"
    if isinstance(err, hub.GatedRepoError) or "gated" in text.lower():
        why = ("is gated on the Hugging Face Hub: request access on its hub page, then log in "
               "(`huggingface-cli login` or HF_TOKEN), or")
    elif os.environ.get("HF_HUB_OFFLINE") == "1" or isinstance(err, (hub.OfflineModeIsEnabled, hub.LocalEntryNotFoundError,
                                                                       ConnectionError)):
        why = "cannot be loaded offline (not in the local cache):"
    else:
        why = "was not found (misspelled, private or missing):"
    return f"{key} = {name!r} {why} {how}. ({text.splitlines()[0][:200]})"


def check_model(key: str, name: str, revision: str | None = None) -> str | None:
    if Path(name).exists() or name.startswith((".", "/")):
        if not (Path(name) / "config.json").is_file():
            return (f"{key} = {name!r} is not a model directory (no config.json there): "
                    f"{HOW_MODEL.format(name=name, key=key)}")
        return None
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(name, "config.json", revision=revision)
    except Exception as e:  # noqa: BLE001 - every failure is reported, classified
        return explain(key, name, e, HOW_MODEL.format(name=name, key=key))
    return None


def check_corpus(key: str, c: Corpus) -> str | None:
    if c.path in LOCAL_BUILDERS:
        files = [c.data_files] if isinstance(c.data_files, str) else list(c.data_files)
        missing = [f for f in files if not Path(f).is_file()]
        return f"{key}.data_files: missing local files {missing}" if missing else None
    import datasets

    try:
        datasets.load_dataset_builder(c.path, c.subset, data_files=c.data_files)
    except Exception as e:  # noqa: BLE001
        return explain(f"{key}.path", f"{c.path}" + (f" ({c.subset})" if c.subset else ""), e, HOW_DATA.format(key=key))
    return None


def check_sources(raw: dict) -> WmdpConfig:
    """Parse the `wmdp` section and try every named source; one error lists all that fail."""
    cfg = WmdpConfig.parse(raw)
    problems = [check_model("wmdp.base", cfg.base, cfg.revision)]
    if cfg.oracle:
        problems.append(check_model("wmdp.oracle", cfg.oracle, cfg.revision))
    for side in ("forget", "retain"):
        problems += [check_corpus(f"wmdp.{side}[{i}]", c) for i, c in enumerate(getattr(cfg, side))]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError("the wmdp setting cannot load its sources:\n  " + "\n  ".join(problems))
    return cfg
