"""Offline stand-ins for the wmdp setting's downloads, written into a directory:

- `model/`: a tiny randomly initialised `LlamaForCausalLM` with a character tokenizer (the "pretrained" base);
- `corpora/{bio,cyber,wikitext}.json`: small JSON-lines corpora of made-up documents (field `text`);
- `tasks/`: three lm-eval multiple-choice tasks over local JSON files (`tiny_wmdp_bio`, `tiny_wmdp_cyber`,
  `tiny_mmlu`: four choices each, so chance is 25 %), standing in for wmdp_bio, wmdp_cyber and mmlu;
- `wmdp.yaml`: a config overlay that runs the whole wmdp DAG on them in about a minute on a CPU.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import yaml

BIO = ("The {x} protein of strain {n} binds receptor {m} and doubles its uptake in culture.",
       "Samples of agent {x}-{n} were grown at {m} degrees before the assay of strain {x}.")
CYBER = ("Port {n} of service {x} accepts a crafted header of {m} bytes and skips the check.",
         "The {x} exploit chain starts with buffer {n} and writes {m} words past the end.")
WIKI = ("The river {x} flows {n} kilometres through the valley of {m} old towns.",
        "In year {n} the village of {x} built a bridge with {m} stone arches.")
NAMES = ("alder", "birch", "cedar", "dahl", "elm", "fern", "gorse", "hazel", "iris", "juniper")


def documents(templates: tuple[str, ...], n_docs: int, salt: int) -> list[dict]:
    """`n_docs` documents of 3-6 sentences filled from the templates (deterministic)."""
    docs = []
    for d in range(n_docs):
        sents = [templates[(d + k) % len(templates)].format(x=NAMES[(d * 7 + k + salt) % len(NAMES)],
                                                           n=(d * 13 + k * 5 + salt) % 97, m=(d + 3 * k) % 31)
                 for k in range(3 + d % 4)]
        docs.append({"text": " ".join(sents), "title": f"doc {d}"})
    return docs


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def questions(kind: str, n: int) -> list[dict]:
    """Four-choice questions whose right answer is always one of the listed numbers."""
    return [{"question": f"In the {kind} notes, which number goes with {NAMES[i % len(NAMES)]} {i}?",
             "choices": [str((i * 3 + j) % 50) for j in range(4)], "answer": i % 4} for i in range(n)]


TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def write_model(out: Path, arch: str = "llama") -> Path:
    """A tiny random HF causal LM and its character tokenizer, saved as a hub-style directory."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]  # deliberately not the pipeline's own id order
    vocab = {t: i for i, t in enumerate(specials + list(string.printable[:95]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")
    cfg = AutoConfig.for_model(arch, vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                               max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    import torch

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def write_fixtures(root: Path) -> dict:
    """Every stand-in under `root`; returns the `wmdp` config section that reads them."""
    root = Path(root)
    model = write_model(root / "model")
    for name, templates, n in (("bio", BIO, 40), ("cyber", CYBER, 40), ("wikitext", WIKI, 40)):
        write_jsonl(documents(templates, n, salt=len(name)), root / "corpora" / f"{name}.json")
    for task, kind in (("tiny_wmdp_bio", "bio"), ("tiny_wmdp_cyber", "cyber"), ("tiny_mmlu", "general")):
        write_jsonl(questions(kind, 12), root / "tasks" / f"{task}.json")
        (root / "tasks" / f"{task}.yaml").write_text(TASK_YAML.format(task=task, file=root / "tasks" / f"{task}.json"))
    corpus = lambda op: {"op": op, "path": "json", "data_files": str(root / "corpora" / f"{op}.json")}  # noqa: E731
    return {
        "base": str(model), "pretrain_tokens": 1.0e6, "chunk_tokens": 48, "eval_fraction": 0.2,
        "attack_fraction": 0.25, "eval_per_op": 8, "eval_batch_size": 8,
        "forget": [corpus("bio"), corpus("cyber")], "retain": [corpus("wikitext")],
        "lm_eval": {"forget_tasks": {"wmdp_bio": "tiny_wmdp_bio", "wmdp_cyber": "tiny_wmdp_cyber"},
                    "retain_tasks": {"mmlu": "tiny_mmlu"}, "limit": 8, "batch_size": 8,
                    "include_path": str(root / "tasks"), "builtin_tasks": False},
    }


def write_config(root: Path, results: Path) -> Path:
    """A config overlay (on config.yaml) running the wmdp DAG on the stand-ins in about a minute."""
    cfg = {
        "results": str(results), "setting": "wmdp", "precision": "fp32", "device": "cpu",
        "wmdp": write_fixtures(root), "filter": {"n_labeled": 16},
        "unlearn": {"batch_size": 4, "methods": ["maxent"],
                    "hparams": {"maxent": {"steps": 3, "lr": 1.0e-3, "retain_weight": 1.0}}},
        "noise": {"alphas": [0.25], "beta": 0.0, "fresh_init": False, "methods": ["maxent"]},
        "distill": {"steps": 4, "lr": 1.0e-3, "batch_size": 4, "seq_len": 48, "warmup": 0, "weight_decay": 0.0,
                    "stop_within": None, "check_every": 4},
        "attack": {"lrs": [1.0e-3], "families": ["forget"], "seeds": [0], "steps": 4, "eval_every": 4, "batch_size": 4,
                   "seq_len": 48},
        "report": {"budgets": [0, 4]}, "oracle_match": {"inits": []}, "era": None,  # as configs/wmdp.yaml
    }
    path = Path(root) / "wmdp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
