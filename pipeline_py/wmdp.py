"""The WMDP setting: unlearn hazardous knowledge (WMDP bio/cyber corpora) from a pretrained Hugging Face
model while keeping general ability (wikitext), scored by lm-eval-harness on WMDP (forget: accuracy,
25 % is chance) and MMLU (retain), plus the cross-entropy on held-out forget and retain text.

Data rows: each document is cut at token boundaries into chunks of at most `chunk_tokens` tokens; a row
is {prompt: "", answer: chunk, op: corpus label, forget, doc}. Documents (not chunks) are split by a
stable hash into eval (`eval_fraction`), attack (`attack_fraction`, forget corpora only) and train, so no
text is shared between splits. `train` is the distillation mixture: every corpus, balanced per label.

`make_data` copies the base model's tokenizer and writes `lm_eval.json` (the tasks, limit and batch size
of the evaluation), which travels with every checkpoint: an evaluator finds it beside its tokenizer.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from .atomic import atomic_dir, atomic_path
from .batches import write_jsonl
from .checkpoint import make_record, save_checkpoint
from .evaluation import Evaluator
from .settings import Metrics, unit_hash
from .tokenizer import load_tokenizer
from .train import autocast, setup_runtime
from .wmdp_sources import WmdpConfig

log = logging.getLogger("pipeline_py")
# acc_forget: mean accuracy over the forget tasks (WMDP bio, cyber); acc_retain: over the retain tasks (MMLU)
METRICS = Metrics(retain="acc_retain", forget="acc_forget", higher_is_better=True)
LM_EVAL_FILE = "lm_eval.json"


def chunk_text(tok, text: str, n_tokens: int) -> list[str]:
    """Cut `text` at token boundaries into pieces of at most `n_tokens` tokens (no text is dropped)."""
    offsets = tok.encode(text, add_special_tokens=False).offsets  # (start, end) character span per token
    out = []
    for i in range(0, len(offsets), n_tokens):
        start = offsets[i][0] if i else 0
        end = offsets[i + n_tokens][0] if i + n_tokens < len(offsets) else len(text)
        if text[start:end].strip():
            out.append(text[start:end])
    return out


def split_rows(cfg: WmdpConfig, tok, docs: dict[tuple[str, bool], list[str]], seed: int) -> dict[str, list[dict]]:
    """Rows of every split from the documents of each (label, is_forget) corpus."""
    splits: dict[str, list[dict]] = {"train": [], "eval": [], "attack": []}
    for (op, forget), texts in docs.items():
        eval_rows = []
        for d, text in enumerate(texts):
            u = unit_hash(seed, op, d, text[:200])
            split = ("eval" if u < cfg.eval_fraction
                     else "attack" if forget and u < cfg.eval_fraction + cfg.attack_fraction else "train")
            rows = [{"prompt": "", "answer": c, "op": op, "forget": forget, "doc": f"{op}:{d}"}
                    for c in chunk_text(tok, text, cfg.chunk_tokens)]
            (eval_rows if split == "eval" else splits[split]).extend(rows)
        eval_rows.sort(key=lambda r: unit_hash(seed, "pick", r["answer"][:200]))
        splits["eval"] += eval_rows[: cfg.eval_per_op]
        for split in splits:
            if not any(r["op"] == op for r in splits[split]) and (split != "attack" or forget):
                raise ValueError(f"wmdp: corpus {op!r} has no {split} documents ({len(texts)} documents read); "
                                 "give it more documents (max_docs) or change eval_fraction/attack_fraction")
    return splits


def make_data(out_dir: str | Path, data: dict, seed: int) -> dict:
    """Read the corpora, write train/eval/attack JSONL, the base model's tokenizer and lm_eval.json."""
    from transformers import AutoTokenizer

    cfg = WmdpConfig.parse(data)
    out = Path(out_dir)
    hf_tok = AutoTokenizer.from_pretrained(cfg.base, revision=cfg.revision)
    with atomic_dir(out, last="tokenizer.json", prefix=".tokenizer-") as tmp:  # tokenizer.json last
        hf_tok.save_pretrained(str(tmp))
    tok = hf_tok.backend_tokenizer  # the fast `tokenizers` object: offsets for cutting at token boundaries
    docs = {}
    for forget, corpora in ((True, cfg.forget), (False, cfg.retain)):
        for c in corpora:
            docs[(c.op, forget)] = c.load()
            log.info("make_data: %s (%s %s) %d documents", c.op, c.path, c.subset or "", len(docs[(c.op, forget)]))
    for split, rows in split_rows(cfg, tok, docs, seed).items():
        write_jsonl(rows, out / f"{split}.jsonl")
    with atomic_path(out / LM_EVAL_FILE) as tmp:
        Path(tmp).write_text(json.dumps({**cfg.lm_eval.to_dict(), "eval_batch_size": cfg.eval_batch_size}, indent=2))
    return {"config": asdict(cfg)}


class WmdpEvaluator:
    """CE per corpus (macro-averaged into ce_forget / ce_retain) and lm-eval task accuracies."""

    def __init__(self, tok, rows: list[dict]):
        settings_file = Path(tok.directory) / LM_EVAL_FILE
        if not settings_file.is_file():
            raise FileNotFoundError(f"missing {settings_file}: the wmdp make_data writes it beside the tokenizer")
        self.settings = json.loads(settings_file.read_text())
        self.tok_dir = tok.directory
        self.ce = Evaluator(tok, rows, batch_size=self.settings["eval_batch_size"])
        self.task_manager = None

    def lm_eval_scores(self, model, precision: str, device) -> dict[str, float]:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
        from transformers import AutoTokenizer

        s = self.settings
        if self.task_manager is None:  # indexing the task YAMLs is slow: once per evaluator
            self.task_manager = TaskManager(include_path=s["include_path"], include_defaults=s["builtin_tasks"])
            self.hf_tok = AutoTokenizer.from_pretrained(self.tok_dir)
        tasks = {**s["forget_tasks"], **s["retain_tasks"]}  # metric name -> task
        lm = HFLM(pretrained=model.hf, tokenizer=self.hf_tok, batch_size=s["batch_size"])
        with torch.inference_mode(), autocast(precision, device):
            res = lm_eval.simple_evaluate(model=lm, tasks=sorted(set(tasks.values())), limit=s["limit"],
                                          task_manager=self.task_manager, log_samples=False, bootstrap_iters=0,
                                          verbosity="ERROR")["results"]
        out = {f"acc_{name}": float(res[task]["acc,none"]) for name, task in tasks.items()}
        for group in ("forget", "retain"):
            names = list(s[f"{group}_tasks"])
            out[f"acc_{group}"] = sum(out[f"acc_{n}"] for n in names) / len(names)
        return out

    def __call__(self, model, precision: str = "fp32", device=torch.device("cpu")) -> dict[str, float]:
        was_training = model.training
        ce = self.ce(model, precision, device)
        out = {k: v for k, v in ce.items() if k.startswith("ce_")}  # exact match of a whole chunk means nothing
        out.update(self.lm_eval_scores(model, precision, device))
        model.train(was_training)
        return out


def evaluator(tok, rows: list[dict]) -> WmdpEvaluator:
    return WmdpEvaluator(tok, rows)


def load_base(tokenizer: str, out: str, name: str, revision: str | None = None, pretrain_tokens: float = 0.0,
              role: str = "base") -> None:
    """Write a pretrained model as the pipeline's base (or oracle) checkpoint. Its FLOPs are those of its
    published pretraining (6·N·`pretrain_tokens`), the reference compute of the other stages."""
    from .hf_model import load_pretrained

    setup_runtime(1, "cpu")
    net = load_pretrained(name, revision)
    n_vocab = load_tokenizer(Path(tokenizer).parent).get_vocab_size()
    if n_vocab > net.hf.get_output_embeddings().weight.shape[0]:
        raise ValueError(f"wmdp.{role} = {name!r}: its vocabulary is smaller than the data's tokenizer "
                         f"({n_vocab} tokens); base and oracle must share the base model's tokenizer")
    rec = make_record(f"load_{role}", net, None, int(pretrain_tokens), source=name, revision=revision)
    save_checkpoint(net, Path(tokenizer).parent, out, rec)
