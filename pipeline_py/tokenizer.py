"""A character-level tokenizer saved as `tokenizer.json`, loadable by `AutoTokenizer`.

`make_data` writes the Hugging Face tokenizer files once per setting; every checkpoint copies them,
so `AutoTokenizer.from_pretrained(checkpoint)` works. Training jobs read `tokenizer.json` with the
`tokenizers` library alone (no `transformers` import on the hot path).
"""
from __future__ import annotations

import os
import shutil
import string
import tempfile
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]  # ids 0..3, fixed so that code can rely on PAD_ID = 0
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
CHARSET = string.digits + string.ascii_letters + " .,?!'+-*/=:\n"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build_tokenizer(charset: str = CHARSET) -> Tokenizer:
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in charset:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one char per token
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    return tok


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> None:
    """Write the files `AutoTokenizer.from_pretrained` reads: into a temporary directory first, then each
    renamed into place, so a killed job never leaves a half-written tokenizer.json."""
    from transformers import PreTrainedTokenizerFast  # only make_data pays for this import

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   unk_token=UNK)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=directory))
    try:
        fast.save_pretrained(str(tmp))
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == "tokenizer.json"):  # tokenizer.json last
            os.replace(f, directory / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}: run make_data for this setting first")
    return Tokenizer.from_file(str(path))


def encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (callers add BOS/EOS where they belong)."""
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
