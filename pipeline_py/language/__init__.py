"""The language setting: retain English, forget Korean, measured by validation cross-entropy.

`make_data` gathers documents from a source (`sources.py`), keeps paragraphs in the script of their
language (`clean.py`), splits documents by a stable hash of their id into train / eval / attack (attack:
Korean documents only; English documents of that hash bucket stay in train), trains a byte-level BPE on
the training split, and cuts every document into chunks of at most `chunk_tokens` tokens at paragraph
boundaries (a longer paragraph is cut at token boundaries). A row is one chunk:
`{"op": "en"|"ko", "forget": op == "ko", "prompt": "", "answer": chunk text, "doc": id, "chunk": k}`,
so packed pretraining, unlearning losses (on answer tokens) and evaluation (one padded chunk per row)
work on it unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..batches import write_jsonl
from ..section import Section, key
from ..settings import Metrics, unit_hash
from ..tokenizer import SPECIALS, save_tokenizer
from .clean import is_hangul, keep_paragraph
from .evaluate import LanguageEvaluator
from .sources import SOURCES, debian_docs, files, fineweb

METRICS = Metrics(retain="ce_retain", forget="ce_forget", higher_is_better=False)  # nats per token
LANGS = {"en": False, "ko": True}  # language -> is forget


@dataclass(frozen=True, kw_only=True)
class LanguageConfig(Section):
    """The language setting's data: retain English, forget Korean."""

    source: str = key("debian-docs", "where the text comes from: Debian's documentation packages (offline once "
                      "cached), FineWeb (network) or local files", choices=tuple(SOURCES))
    cache_dir: str = key("results/cache/debian-docs", "debian-docs: downloaded .deb files and their unpacked trees")
    packages: list[str] = key([], "debian-docs: subset of packages (empty: all)")
    max_tokens: int = key(2_000_000, "fineweb: estimated tokens streamed per language", gt=0)
    retain_files: list[str] = key([], "files: English (retain) text files")
    forget_files: list[str] = key([], "files: Korean (forget) text files")
    script_fraction: float = key(0.6, "a paragraph is kept if this share of its letters is in its language's script",
                                 gt=0, lt=1)
    min_chars: int = key(20, "shorter paragraphs (menu labels, headings) are dropped", gt=0)
    eval_fraction: float = key(0.05, "documents held out for evaluation", gt=0, lt=1)
    attack_fraction: float = key(0.1, "Korean documents reserved for the attacker (never pretrained on)", gt=0, lt=1)
    vocab_size: int = key(4096, "byte-level BPE vocabulary, special tokens included (256 bytes + specials + merges)",
                          ge=300)
    chunk_tokens: int = key(126, "tokens per row at most; BOS + chunk + EOS must fit the model's max_len", gt=0)
    eval_chunks: int = key(64, "evaluation chunks per language (subsampled by hash): the cost of each evaluation",
                           gt=0)

    def check(self):
        if self.eval_fraction + self.attack_fraction >= 1.0:
            raise ValueError(f"eval_fraction + attack_fraction = {self.eval_fraction} + {self.attack_fraction} is "
                             "invalid: it must be < 1")


def split_of(doc: str, lang: str, cfg: LanguageConfig, seed: int) -> str:
    """'eval', 'attack' (Korean only) or 'train', by a hash of the document id."""
    u = unit_hash(seed, "split", doc)
    if u < cfg.eval_fraction:
        return "eval"
    if u < cfg.eval_fraction + cfg.attack_fraction and LANGS[lang]:
        return "attack"
    return "train"


def load_documents(cfg: LanguageConfig) -> tuple[list[dict], dict]:
    if cfg.source == "debian-docs":
        return debian_docs(cfg.cache_dir, cfg.packages)
    if cfg.source == "fineweb":
        return fineweb(cfg.max_tokens)
    return files(cfg.retain_files, cfg.forget_files)


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE with the project's special tokens at ids 0-3 (PAD, BOS, EOS, UNK)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, f"special token {s} got id {tok.token_to_id(s)}, expected {i}"
    return tok


def chunk(tok: Tokenizer, paragraphs: list[str], max_tokens: int) -> list[str]:
    """Greedy packing of paragraphs (joined by newlines) into texts of at most `max_tokens` tokens.
    A newline is its own pre-token, so a chunk's length is the sum of its paragraphs' plus the newlines."""
    pieces: list[tuple[str, int]] = []  # (text, tokens), every piece at most max_tokens
    for enc, text in zip(tok.encode_batch(paragraphs, add_special_tokens=False), paragraphs):
        # cut long paragraphs where a token starts (byte tokens of one character share its offsets, so a
        # cut may land before a character and the piece may need one more token: `fit` checks that)
        starts = list(range(0, len(enc.ids), max_tokens))
        for i, start in enumerate(starts):
            end = enc.offsets[starts[i + 1]][0] if i + 1 < len(starts) else len(text)
            pieces.append((text[enc.offsets[start][0]: end].strip(), min(max_tokens, len(enc.ids) - start)))
    out, cur, n = [], [], 0
    for text, k in pieces:
        if cur and n + 1 + k > max_tokens:
            out.append("\n".join(cur))
            cur, n = [], 0
        n += k + (1 if cur else 0)
        cur.append(text)
    if cur:
        out.append("\n".join(cur))
    return [piece for c in out for piece in fit(tok, c, max_tokens)]


def fit(tok: Tokenizer, text: str, max_tokens: int) -> list[str]:
    """`text` as it is if it encodes to at most `max_tokens` tokens, else halved at a token boundary until
    every part does (re-encoding a cut text can merge differently at its edges, so counts are re-checked)."""
    enc = tok.encode(text, add_special_tokens=False)
    if len(enc.ids) <= max_tokens:
        return [text] if text.strip() else []
    cut = enc.offsets[len(enc.ids) // 2][0]
    if cut <= 0 or cut >= len(text):  # a single character longer than the budget: cannot happen for bytes
        raise ValueError(f"language.chunk_tokens={max_tokens} is too small to hold {text[:20]!r}")
    return fit(tok, text[:cut], max_tokens) + fit(tok, text[cut:], max_tokens)


def make_data(out_dir: str | Path, data: dict, seed: int) -> dict:
    """Documents -> filtered paragraphs -> hashed splits -> BPE on train -> chunk rows; returns manifest entries."""
    cfg = LanguageConfig.from_dict(data, "language")
    docs, extra = load_documents(cfg)
    by_split: dict[str, list[dict]] = {"train": [], "eval": [], "attack": []}
    for d in docs:
        paras = [p for p in d["paragraphs"] if keep_paragraph(p, d["lang"], cfg.script_fraction, cfg.min_chars)]
        if paras:
            by_split[split_of(d["doc"], d["lang"], cfg, seed)].append(d | {"paragraphs": paras})
    stats = {s: {lang: sum(len("\n".join(d["paragraphs"]).encode()) for d in ds if d["lang"] == lang)
                 for lang in LANGS} for s, ds in by_split.items()}
    for split, lang in (("train", "en"), ("train", "ko"), ("eval", "en"), ("eval", "ko"), ("attack", "ko")):
        if not stats[split][lang]:
            raise ValueError(f"language: no {lang} text left in the {split} split after cleaning (source "
                             f"{cfg.source!r}); give more documents or lower language.eval_fraction/attack_fraction")
    tok = train_tokenizer([p for d in by_split["train"] for p in d["paragraphs"]], cfg.vocab_size)
    save_tokenizer(tok, Path(out_dir))
    for split, ds in by_split.items():
        rows = [{"op": d["lang"], "forget": LANGS[d["lang"]], "prompt": "", "answer": text, "doc": d["doc"],
                 "chunk": k} for d in ds for k, text in enumerate(chunk(tok, d["paragraphs"], cfg.chunk_tokens))]
        if split == "eval":  # a fixed-size, hash-chosen subset keeps each evaluation cheap
            rows.sort(key=lambda r: unit_hash(seed, "pick", r["doc"], r["chunk"]))
            rows = [r for lang in LANGS for r in [x for x in rows if x["op"] == lang][: cfg.eval_chunks]]
        write_jsonl(rows, Path(out_dir) / f"{split}.jsonl")
    return {"config": asdict(cfg), "source": extra, "utf8_bytes": stats,
            "documents": {s: len(ds) for s, ds in by_split.items()}}


def evaluator(tok, rows: list[dict]):
    """English CE (retain), Korean CE (forget) and Korean CE on Hangul-only tokens."""
    return LanguageEvaluator(tok, rows, hangul=is_hangul)
