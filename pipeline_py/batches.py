"""Examples on disk (JSONL) → token tensors, tokenized once per stage.

Two batch shapes, both `{"input_ids": [B, T] long, "labels": [B, T] long}` with labels aligned to the
inputs (the loss shifts them) and -100 where no loss is taken:

- `PackedStream`: language-model batches; examples (BOS prompt answer EOS) are drawn with per-operation
  balancing and concatenated into rows of T tokens; a row's tail continues in the next row, so no
  document tail is ever dropped. Loss on every token.
- `ExampleBatches`: one example per row, right-padded; loss on the answer and its EOS only (prompt and
  padding are -100). Used by unlearning losses and evaluation.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, encode

IGNORE = -100


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path}: run make_data/filter_data first")
    rows = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:  # e.g. a file cut short by a copy that was killed
                    raise ValueError(f"corrupt data file {path}, line {n}: {e}") from None
    if not rows:
        raise ValueError(f"data file {path} holds no examples")
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def tokenize_examples(tok, rows: list[dict]) -> tuple[list[list[int]], list[int]]:
    """Per example: token ids [BOS, prompt..., answer..., EOS] and the prompt length (BOS included)."""
    prompts = encode(tok, [r["prompt"] for r in rows])
    answers = encode(tok, [r["answer"] for r in rows])
    bos, eos = getattr(tok, "bos_id", BOS_ID), getattr(tok, "eos_id", EOS_ID)  # a pretrained model's own ids
    ids = [[bos] + p + a + [eos] for p, a in zip(prompts, answers)]
    return ids, [1 + len(p) for p in prompts]


class PackedStream:
    """Infinite packed LM batches of shape [batch_size, seq_len], reproducible from `seed`."""

    def __init__(self, tok, rows: list[dict], batch_size: int, seq_len: int, seed: int, balance: bool = True,
                 weights: list[float] | None = None):
        """`weights` (one per row, optional) replace the per-operation balancing as sampling weights."""
        self.ids, self.prompt_lens = tokenize_examples(tok, rows)  # prompt lengths: BOS included
        counts = Counter(r["op"] for r in rows)
        if weights is not None:
            w = np.asarray(weights, dtype=float)
        else:
            w = np.array([1.0 / counts[r["op"]] if balance else 1.0 for r in rows])
        self.p = w / w.sum()  # each operation contributes equally when balanced
        self.B, self.T = batch_size, seq_len
        self.rng = np.random.default_rng(seed)
        self.buffer: list[int] = []
        self.tokens_seen = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        need = self.B * self.T
        while len(self.buffer) < need:
            for i in self.rng.choice(len(self.ids), size=max(64, need // 16), p=self.p):
                self.buffer.extend(self.ids[i])
        x = torch.tensor(self.buffer[:need], dtype=torch.long).view(self.B, self.T)
        del self.buffer[:need]
        self.tokens_seen += need
        return {"input_ids": x, "labels": x.clone()}

    def state_dict(self) -> dict:
        """The stream's position: generator state, pending tokens, tokens served (for resuming)."""
        return {"rng": self.rng.bit_generator.state, "buffer": list(self.buffer), "tokens_seen": self.tokens_seen}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.buffer = list(state["buffer"])
        self.tokens_seen = int(state["tokens_seen"])


def pad_examples(ids: list[list[int]], prompt_lens: list[int], pad_id: int = PAD_ID) -> dict[str, torch.Tensor]:
    """Right-pad examples into [N, T_max]; labels keep only answer tokens and EOS. The attention mask
    follows the lengths (a pretrained tokenizer's pad id may equal its EOS id)."""
    T = max(map(len, ids))
    x = torch.full((len(ids), T), pad_id, dtype=torch.long)
    y = torch.full((len(ids), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(zip(ids, prompt_lens)):
        x[i, : len(seq)] = torch.tensor(seq)
        y[i, n_prompt: len(seq)] = x[i, n_prompt: len(seq)]
        mask[i, : len(seq)] = 1
    return {"input_ids": x, "labels": y, "attention_mask": mask}


class ExampleBatches:
    """Infinite shuffled batches of single padded examples (answer-only labels)."""

    def __init__(self, tok, rows: list[dict], batch_size: int, seed: int):
        self.ids, self.prompt_lens = tokenize_examples(tok, rows)
        self.pad_id = getattr(tok, "pad_id", PAD_ID)
        self.B = min(batch_size, len(rows))
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        idx = self.rng.choice(len(self.ids), size=self.B, replace=False)
        return pad_examples([self.ids[i] for i in idx], [self.prompt_lens[i] for i in idx], self.pad_id)
