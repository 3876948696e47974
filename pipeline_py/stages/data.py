"""make_data (a setting's corpus, splits and tokenizer) and filter_data (the oracle's data, the labeled sets)."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..batches import read_jsonl, write_jsonl
from ..config import Filter
from ..settings import get_setting

log = logging.getLogger("pipeline_py")


def make_data(train: str, eval_data: str, attack: str, tokenizer: str, data: dict, setting: str, seed: int) -> None:
    """Build one setting's corpus (train/eval/attack JSONL, tokenizer; all in one directory, named by the
    outputs) from its data section, and a manifest with checksums."""
    out = Path(train).parent
    if any(Path(p) != out / name for p, name in ((train, "train.jsonl"), (eval_data, "eval.jsonl"),
                                                 (attack, "attack.jsonl"), (tokenizer, "tokenizer.json"))):
        raise ValueError(f"make_data writes train.jsonl, eval.jsonl, attack.jsonl and tokenizer.json into one "
                         f"directory; got {[train, eval_data, attack, tokenizer]}")
    out.mkdir(parents=True, exist_ok=True)
    extra = get_setting(setting).make_data(out, data, seed)
    manifest = {"setting": setting, "seed": seed, **extra, "files": {}}
    for f in sorted(out.glob("*.jsonl")) + [out / "tokenizer.json"]:
        manifest["files"][f.name] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
        if f.suffix == ".jsonl":
            manifest["files"][f.name]["examples"] = sum(1 for line in f.open() if line.strip())
            log.info("make_data: %s %d examples", f.name, manifest["files"][f.name]["examples"])
    with atomic_path(out / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2))


def filter_data(train: str, oracle: str, forget: str, retain: str, cfg: Filter, seed: int) -> None:
    """The oracle's data (forget examples removed) and the small labeled forget/retain sets."""
    rows = read_jsonl(train)
    write_jsonl([r for r in rows if not r["forget"]], oracle)
    rng = torch.Generator().manual_seed(seed)
    for flag, path in ((True, forget), (False, retain)):
        pool = [r for r in rows if r["forget"] == flag]
        pick = torch.randperm(len(pool), generator=rng)[:cfg.n_labeled].tolist()
        write_jsonl([pool[i] for i in sorted(pick)], path)
    log.info("filter_data: %d labeled of %d training examples per side", cfg.n_labeled, len(rows))


def share(src: str, out: str | list[str]) -> None:
    """Copy one pretraining's files into another seed's directory (`pretrain_seed`): a checkpoint directory
    whole (weights, record, config, tokenizer; not the models below it), or make_data's files (those its
    manifest lists, and the manifest). Each file is copied atomically, the declared outputs last."""
    src_dir = Path(src) if Path(src).is_dir() else Path(src).parent
    outs = [] if isinstance(out, str) else [Path(p) for p in out]  # a str: a checkpoint directory
    out_dir = Path(out) if isinstance(out, str) else outs[0].parent
    manifest = src_dir / "manifest.json"
    if manifest.exists():  # make_data's directory also holds later stages' files: copy only its own
        names = [*json.loads(manifest.read_text())["files"], manifest.name]
    else:
        names = [f.name for f in src_dir.iterdir() if f.is_file() and not f.name.startswith(".")]
    declared = {p.name for p in outs}
    missing = sorted(declared - set(names))
    if missing:
        raise FileNotFoundError(f"share: {src_dir} has no {missing}; was its pretraining run finished?")
    for name in sorted(names, key=lambda n: n in declared or n.endswith(".safetensors")):
        with atomic_path(out_dir / name) as tmp:
            shutil.copyfile(src_dir / name, tmp)
    log.info("share: %d files of %s copied into %s", len(names), src_dir, out_dir)
