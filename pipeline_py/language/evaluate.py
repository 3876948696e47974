"""Cross-entropy per language on evaluation chunks, and Korean CE restricted to Hangul-only tokens.

`ce_<lang>` is the mean NLL (nats) over every answer token of that language's chunks (EOS included);
`ce_retain` / `ce_forget` average the retain / forget languages; `ce_forget_hangul` is the forget CE over
target tokens that decode to Hangul syllables only (an optional leading space allowed), so Latin terms,
digits and punctuation inside Korean text do not dilute it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..evaluation import Evaluator


def hangul_token_mask(tok, is_hangul: Callable[[str], bool]) -> torch.Tensor:
    """[V] bool: does token id v decode to one or more Hangul characters and nothing else but a leading space?"""
    V = tok.get_vocab_size()
    mask = torch.zeros(V, dtype=torch.bool)
    for v in range(V):
        text = tok.decode([v], skip_special_tokens=True).removeprefix(" ")
        mask[v] = bool(text) and all(map(is_hangul, text))
    return mask


class LanguageEvaluator(Evaluator):
    """Holds the evaluation chunks tokenized and padded once (as `Evaluator`); call it on any model."""

    def __init__(self, tok, rows: list[dict], hangul: Callable[[str], bool], batch_size: int = 32):
        super().__init__(tok, rows, batch_size)
        self.hangul = hangul_token_mask(tok, hangul)  # [V]

    @torch.inference_mode()
    def __call__(self, model, precision: str = "fp32", device=torch.device("cpu")) -> dict[str, float]:
        was_training = model.training
        model.eval()
        hangul = self.hangul.to(device)
        out, sums = {}, {}
        for op, batches in self.batches.items():
            nll = n = nll_h = n_h = 0.0
            for pred, tgt, mask in self.predictions(model, batches, precision, device):
                tok_nll = F.cross_entropy(pred[mask], tgt[mask], reduction="none")  # [N]
                h = hangul[tgt[mask]]  # [N] bool
                nll, n = nll + tok_nll.sum().item(), n + mask.sum().item()
                nll_h, n_h = nll_h + tok_nll[h].sum().item(), n_h + h.sum().item()
            out[f"ce_{op}"] = nll / n
            sums[op] = (nll_h, n_h)
        for group, present in self.groups.items():
            if present:
                out[f"ce_{group}"] = sum(out[f"ce_{op}"] for op in present) / len(present)
        forget_h = [sums[op] for op in self.groups["forget"] if sums[op][1] > 0]
        if forget_h:
            out["ce_forget_hangul"] = sum(s for s, _ in forget_h) / sum(k for _, k in forget_h)
        model.train(was_training)
        return out
