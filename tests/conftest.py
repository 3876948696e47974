"""Shared fixtures: a tiny arithmetic corpus (built once per session) and a tiny model config.

The end-to-end workflow tests (marker `e2e`) take a few minutes; `pytest -m "not e2e"` leaves them out
for a quick local run.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from pipeline_py.stages.data import make_data  # noqa: E402
from pipeline_py.model import ModelConfig  # noqa: E402
from pipeline_py.tokenizer import load_tokenizer  # noqa: E402

torch.set_num_threads(1)

TINY_DATA = {"add_max": 10, "mul_max": 6, "eval_per_op": 20}


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end-to-end Snakemake run of the tiny study (minutes)")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Directory with train/eval/attack JSONL and the tokenizer files of a tiny arithmetic corpus."""
    out = tmp_path_factory.mktemp("data")
    make_data(*(str(out / n) for n in ("train.jsonl", "eval.jsonl", "attack.jsonl", "tokenizer.json")),
              dict(TINY_DATA), setting="arithmetic", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_data_params():
    """The data config the tiny_data fixture was built with."""
    return dict(TINY_DATA)


@pytest.fixture(scope="session")
def tok(tiny_data):
    """The `tokenizers` tokenizer written by make_data."""
    return load_tokenizer(tiny_data)


@pytest.fixture(scope="session")
def tiny_cfg(tok):
    """A 2-layer, 32-wide Llama over the corpus' vocabulary."""
    return ModelConfig(vocab_size=tok.get_vocab_size(), d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=64)
