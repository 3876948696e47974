"""Resumable training: a long stage saves its whole training state every N steps, and a restarted job
continues from it instead of starting over.

The state file lies in the stage's output directory, beside the rule's outputs but not one of them:
Snakemake deletes the outputs of a killed (incomplete) job before rerunning it, and leaves this file
alone. It holds everything the next step depends on, so a resumed run reproduces the uninterrupted one
bit for bit on CPU:

    weights, optimizer moments (AdamW exp_avg, exp_avg_sq, step counts), the step reached (the LR
    schedule is a function of the step), torch's CPU (and CUDA) RNG state, and the stage's data position
    (a PackedStream's numpy generator state, its buffer of pending tokens and its token count).

A fingerprint of everything that determines the run (stage arguments, digests of the input files) is
stored with it; a state written by a different configuration is discarded, never trusted. The file is
written atomically, so a kill during a save leaves the previous state intact, and the stage removes it
once its final checkpoint is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Callable

import torch

from .atomic import atomic_path

log = logging.getLogger("pipeline_py")

RESUME_NAME = "resume.pt"  # inside the stage's output directory, beside (not among) the rule's outputs
FORMAT = 1  # bumped if the layout of the state changes; older states are discarded


def resume_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / RESUME_NAME


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (inputs of a stage: data, checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


NOT_FINGERPRINTED = ("save_every", "log_every")  # TrainConfig fields that do not change the numbers


def _plain(value):
    if is_dataclass(value):
        return {k: v for k, v in asdict(value).items() if k not in NOT_FINGERPRINTED}
    return str(value)


def fingerprint(**what) -> str:
    """A stable hash of configs, seeds and input digests (dataclass configs minus their save/log cadence)."""
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=_plain).encode()).hexdigest()


@dataclass
class Resume:
    """Where and how often a training loop saves its state, and the stage's extra state (data position).

    `get_extra()` returns what the stage needs beyond the loop (e.g. `stream.state_dict()`);
    `set_extra(state)` puts it back. Both must cover everything the remaining steps draw from."""

    path: Path
    every: int  # steps between saves; 0 = never save (a state already on disk is still used)
    fingerprint: str
    get_extra: Callable[[], dict] = field(default=dict)
    set_extra: Callable[[dict], None] = field(default=lambda state: None)

    @classmethod
    def for_stream(cls, out_dir: str | Path, every: int, stream, inputs: list[str], **settings) -> "Resume":
        """The resume state of a stage that draws from one PackedStream: saved in `out_dir`, fingerprinted
        by `settings` and the bytes of the `inputs` files."""
        digests = {str(p): file_digest(p) for p in inputs}
        return cls(resume_path(out_dir), every, fingerprint(inputs=digests, **settings),
                   stream.state_dict, stream.load_state_dict)

    def save(self, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
        state = {
            "format": FORMAT, "fingerprint": self.fingerprint, "step": step,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "extra": self.get_extra(),
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def restore(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
        """Load a saved state into `model`, `opt` and the stage; return its step (0 when there is none).
        A state that cannot be read or was written by another configuration is removed, with a warning."""
        if not self.path.is_file():
            return 0
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # any unreadable file: start over rather than fail the job forever
            log.warning("resume state %s is unreadable (%s: %s); starting from step 0", self.path,
                        type(e).__name__, e)
            self.clear()
            return 0
        if state.get("format") != FORMAT or state.get("fingerprint") != self.fingerprint:
            log.warning("resume state %s was written by another configuration or version; starting from step 0",
                        self.path)
            self.clear()
            return 0
        device = next(model.parameters()).device
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])  # moves the moments onto the parameters' device
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.set_extra(state["extra"])
        log.info("resumed from %s at step %d", self.path, state["step"])
        return int(state["step"])

    def due(self, step: int, last: int) -> bool:
        """Save after `step`? Every `every` steps, never after the last one (the checkpoint follows)."""
        return self.every > 0 and step % self.every == 0 and step < last

    def clear(self) -> None:
        """Remove the state (the stage's checkpoint is written, or the state is unusable)."""
        if self.path.exists():
            os.remove(self.path)
