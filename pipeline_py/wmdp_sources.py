"""What the `wmdp` setting reads from outside: a pretrained model (hub id or local directory), text
corpora through `datasets` (hub data sets, or local JSON files with `path: json`), and lm-eval tasks.

`WmdpConfig` is the typed form of the config's `wmdp` section; `check_sources` runs when the DAG is
built and fails, before any job starts, naming each model or data set that cannot be loaded (offline,
gated, misspelled or missing) and how to provide it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

LOCAL_BUILDERS = ("json", "csv", "text", "parquet")  # `datasets` builders that read `data_files`


def _fail(key: str, value, allowed: str) -> None:
    raise ValueError(f"{key} = {value!r} is invalid: it must be {allowed}")


@dataclass(frozen=True)
class Corpus:
    """One text corpus, loaded with `datasets.load_dataset(path, subset, split=split, data_files=...)`."""

    op: str  # group label of its rows (per-group CE, balanced batches), e.g. "bio", "cyber", "wikitext"
    path: str  # hub data set id (e.g. cais/wmdp-corpora) or a local builder (json) with data_files
    subset: str | None = None  # the data set's configuration, e.g. cyber-forget-corpus
    split: str = "train"
    text_field: str = "text"  # column holding the document text
    data_files: str | list[str] | None = None  # local files for path: json
    max_docs: int | None = None  # read at most this many documents (None: all)

    @classmethod
    def parse(cls, key: str, raw: dict) -> "Corpus":
        if not isinstance(raw, dict):
            _fail(key, raw, "a mapping with keys op, path and optionally subset, split, text_field, data_files, max_docs")
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            _fail(f"{key}: keys {unknown}", raw, f"keys among {[f.name for f in fields(cls)]}")
        for k in ("op", "path"):
            if not isinstance(raw.get(k), str) or not raw[k]:
                _fail(f"{key}.{k}", raw.get(k), "a non-empty string")
        if raw["path"] in LOCAL_BUILDERS and not raw.get("data_files"):
            _fail(f"{key}.data_files", raw.get("data_files"), f"a file (or list) when path is {raw['path']!r}")
        md = raw.get("max_docs")
        if md is not None and (not isinstance(md, int) or isinstance(md, bool) or md <= 0):
            _fail(f"{key}.max_docs", md, "a positive integer or null")
        return cls(**raw)

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


@dataclass(frozen=True)
class WmdpConfig:
    base: str  # the pretrained model: hub id (google/gemma-2-2b) or a local directory
    forget: tuple[Corpus, ...]  # hazardous-knowledge corpora (WMDP bio and cyber forget corpora)
    retain: tuple[Corpus, ...]  # general text (wikitext); with forget, the distillation mixture
    oracle: str | None = None  # optional reference model that never saw the forget data
    revision: str | None = None  # hub revision of base and oracle (None: main)
    pretrain_tokens: float = 0.0  # tokens the named models were pretrained on (FLOPs of the lineage)
    chunk_tokens: int = 256  # documents are cut into pieces of at most this many tokens
    eval_fraction: float = 0.1  # share of documents held out for forget/retain CE
    attack_fraction: float = 0.2  # share of forget documents kept for the attacker only
    eval_per_op: int = 64  # CE evaluation chunks per corpus
    eval_batch_size: int = 8  # sequences per forward pass when measuring CE
    lm_eval: dict = field(default_factory=dict)  # see LmEvalConfig
    resources: dict = field(default_factory=dict)  # Snakemake resources of the GPU jobs (read by the rules)

    @classmethod
    def parse(cls, raw: dict) -> "WmdpConfig":
        raw = dict(raw)
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            _fail(f"wmdp: keys {unknown}", unknown, f"keys among {[f.name for f in fields(cls)]}")
        if not isinstance(raw.get("base"), str) or not raw["base"]:
            _fail("wmdp.base", raw.get("base"), "a Hugging Face model id or a local model directory")
        for side in ("forget", "retain"):
            items = raw.get(side)
            if not isinstance(items, list) or not items:
                _fail(f"wmdp.{side}", items, "a non-empty list of corpora")
            raw[side] = tuple(Corpus.parse(f"wmdp.{side}[{i}]", c) for i, c in enumerate(items))
        ops = [c.op for c in raw["forget"] + raw["retain"]]
        if len(set(ops)) != len(ops):
            _fail("wmdp.forget/retain op labels", ops, "distinct")
        raw["lm_eval"] = LmEvalConfig.parse(raw.get("lm_eval") or {}).__dict__
        cfg = cls(**raw)
        for k in ("eval_fraction", "attack_fraction"):
            if not 0.0 < getattr(cfg, k) < 0.5:
                _fail(f"wmdp.{k}", getattr(cfg, k), "a number in (0, 0.5)")
        for k in ("chunk_tokens", "eval_per_op", "eval_batch_size"):
            v = getattr(cfg, k)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                _fail(f"wmdp.{k}", v, "a positive integer")
        return cfg


@dataclass(frozen=True)
class LmEvalConfig:
    forget_tasks: dict = field(default_factory=lambda: {"wmdp_bio": "wmdp_bio", "wmdp_cyber": "wmdp_cyber"})
    retain_tasks: dict = field(default_factory=lambda: {"mmlu": "mmlu"})  # metric name -> lm-eval task
    limit: int | None = None  # questions per task (per MMLU subject); None: all
    batch_size: int = 8  # lm-eval's batch of loglikelihood requests
    include_path: str | None = None  # directory of extra task YAMLs (the tests' local stand-ins)
    builtin_tasks: bool = True  # index lm-eval's own tasks (slow: about a minute); false when include_path has all

    @classmethod
    def parse(cls, raw: dict) -> "LmEvalConfig":
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            _fail(f"wmdp.lm_eval: keys {unknown}", unknown, f"keys among {[f.name for f in fields(cls)]}")
        cfg = cls(**raw)
        for k in ("forget_tasks", "retain_tasks"):
            v = getattr(cfg, k)
            if not isinstance(v, dict) or not v or not all(isinstance(t, str) for t in v.values()):
                _fail(f"wmdp.lm_eval.{k}", v, "a non-empty mapping metric name -> lm-eval task name")
        if cfg.limit is not None and (not isinstance(cfg.limit, int) or cfg.limit <= 0):
            _fail("wmdp.lm_eval.limit", cfg.limit, "a positive integer or null (all questions)")
        if cfg.include_path is not None and not Path(cfg.include_path).is_dir():
            _fail("wmdp.lm_eval.include_path", cfg.include_path, "an existing directory of task YAML files")
        if not cfg.builtin_tasks and cfg.include_path is None:
            _fail("wmdp.lm_eval.builtin_tasks", False, "true unless include_path holds every task")
        return cfg


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
