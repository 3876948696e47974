"""Atomic output files: every file the pipeline writes appears at its final path complete, or not at all.

A killed or failing job must never leave a half-written file where Snakemake (which takes an existing
output for a finished one) or a later stage would read it. Both helpers write to a temporary name in the
destination's own directory (same filesystem, so `os.replace` is an atomic rename) and rename only when
the `with` block finishes:

- `atomic_path(path)`: one file.
- `atomic_dir(out_dir, last=...)`: a set of files written into a temporary directory (e.g. by a library's
  `save_pretrained`), moved into `out_dir` one by one with `last` moved last, so that the presence of
  `last` (the weights of a checkpoint, `tokenizer.json`) means the whole set is in place.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, last: str, prefix: str = ".tmp-"):
    """Yield a fresh temporary directory (a Path) inside `out_dir`; if the block finishes, move every entry
    written there onto `out_dir/<name>`, the one named `last` after all others. The temporary directory is
    removed whatever happens; leftovers of an earlier save that was killed (no `finally`), i.e. directories
    starting with `prefix`, are removed first: only the job that owns `out_dir` writes there."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f"{prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir))
    try:
        yield tmp
        for name in sorted(os.listdir(tmp), key=lambda n: n == last):  # stable: only `last` moves to the end
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
