"""The routed pretraining stream: `RoutedStream` packs the same tokens as the base's `PackedStream` and
carries each token's routing strength and forget label alongside them, both kept in its resume state so a
resumed run draws bit-identical batches.
"""
from __future__ import annotations

import numpy as np
import torch

from ..batches import PackedStream
from .config import EraConfig
from .masks import labeled_mask, unigram_weights


class RoutedStream(PackedStream):
    """PackedStream that also yields `strength` [B, T], each token's routing strength as a target, and
    `forget` [B, T], 1 on every token of a labeled forget example. Draws the same examples in the same order
    as PackedStream with the same seed, so tokens match the base's."""

    def __init__(self, tok, rows: list[dict], batch_size: int, seq_len: int, seed: int, era: EraConfig):
        super().__init__(tok, rows, batch_size, seq_len, seed)
        self.labeled = labeled_mask(rows, era.labeled_fraction, seed)
        start = self.prompt_lens if era.route_tokens == "answer" else [0] * len(self.ids)
        routable = [seq[s:] for seq, s in zip(self.ids, start)]  # the tokens routing may flag, per example
        token_w = unigram_weights(routable, self.labeled, tok.get_vocab_size()) if era.soft else None
        self.strengths = []  # plain floats: resume states hold them
        for seq, s, lab in zip(self.ids, start, self.labeled):
            w = np.zeros(len(seq))
            if lab:
                w[s:] = token_w[seq[s:]] if token_w is not None else 1.0
            self.strengths.append(w.tolist())
        self.s_buffer: list[float] = []
        self.f_buffer: list[float] = []
        self.routed_tokens = 0.0  # Σ of strengths drawn: how much of the stream was routed

    def __next__(self) -> dict[str, torch.Tensor]:
        need = self.B * self.T
        while len(self.buffer) < need:
            for i in self.rng.choice(len(self.ids), size=max(64, need // 16), p=self.p):
                self.buffer.extend(self.ids[i])
                self.s_buffer.extend(self.strengths[i])
                self.f_buffer.extend([float(self.labeled[i])] * len(self.ids[i]))
        x = torch.tensor(self.buffer[:need], dtype=torch.long).view(self.B, self.T)
        s = torch.tensor(self.s_buffer[:need], dtype=torch.float32).view(self.B, self.T)
        f = torch.tensor(self.f_buffer[:need], dtype=torch.float32).view(self.B, self.T)
        del self.buffer[:need], self.s_buffer[:need], self.f_buffer[:need]
        self.tokens_seen += need
        self.routed_tokens += float(s.sum())
        return {"input_ids": x, "labels": x.clone(), "strength": s, "forget": f}

    def state_dict(self) -> dict:
        """PackedStream's position plus the pending strengths and labels (for resuming)."""
        return {**super().state_dict(), "strengths": list(self.s_buffer), "forget": list(self.f_buffer),
                "routed_tokens": self.routed_tokens}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.s_buffer, self.f_buffer = list(state["strengths"]), list(state["forget"])
        self.routed_tokens = float(state["routed_tokens"])
