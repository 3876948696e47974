"""A character-level tokenizer saved as `tokenizer.json`, loadable by `AutoTokenizer`.

`make_data` writes the Hugging Face tokenizer files once per setting; every checkpoint copies them,
so `AutoTokenizer.from_pretrained(checkpoint)` works. Training jobs read `tokenizer.json` with the
`tokenizers` library alone (no `transformers` import on the hot path).
"""
from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from .atomic import atomic_dir

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
    with atomic_dir(directory, last="tokenizer.json", prefix=".tokenizer-") as tmp:
        fast.save_pretrained(str(tmp))


class LoadedTokenizer:
    """A `tokenizers.Tokenizer` (every method passes through) that also knows the directory it came from
    and the ids of its pad/BOS/EOS tokens, read from `tokenizer_config.json` where one names them (a
    pretrained model's tokenizer) and the character tokenizer's fixed ids otherwise."""

    def __init__(self, tok: Tokenizer, directory: Path):
        self.tok, self.directory = tok, directory
        named = {}
        config = directory / "tokenizer_config.json"
        if config.is_file():
            for key, value in json.loads(config.read_text()).items():
                value = value.get("content") if isinstance(value, dict) else value
                if key in ("pad_token", "bos_token", "eos_token") and isinstance(value, str):
                    named[key] = tok.token_to_id(value)
        self.bos_id = named.get("bos_token", BOS_ID)
        self.eos_id = named.get("eos_token", EOS_ID)
        self.pad_id = named.get("pad_token", self.eos_id if "eos_token" in named else PAD_ID)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def load_tokenizer(directory: str | Path) -> LoadedTokenizer:
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}: run make_data for this setting first")
    return LoadedTokenizer(Tokenizer.from_file(str(path)), Path(directory))


def encode(tok, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (callers add BOS/EOS where they belong)."""
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
