"""The language setting on small committed fixtures: cleaners, script filter, splits, BPE tokenizer,
chunking, the evaluator, the three sources with the network and apt replaced, and a tiny study (e2e)."""
from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline_py import language, study
from pipeline_py.batches import read_jsonl
from pipeline_py.language import LanguageConfig, chunk, clean, sources, split_of, train_tokenizer
from pipeline_py.language.evaluate import hangul_token_mask
from pipeline_py.model import ModelConfig, build_model
from pipeline_py.settings import setting_of
from pipeline_py.stages.data import make_data
from pipeline_py.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "language"
SMALL = {"source": "files", "retain_files": [str(FIX / "english.txt")], "forget_files": [str(FIX / "korean.txt")],
         "eval_fraction": 0.3, "attack_fraction": 0.3, "vocab_size": 400, "chunk_tokens": 30, "eval_chunks": 8,
         "min_chars": 10}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("lang")
    make_data(*(str(out / n) for n in ("train.jsonl", "eval.jsonl", "attack.jsonl", "tokenizer.json")), dict(SMALL),
              setting="language", seed=0)
    return out


# ------------------------------------------------------------------------------------------ cleaners


def test_html_cleaner_keeps_body_paragraphs_and_drops_navigation_scripts_and_entities():
    paras = clean.html_paragraphs((FIX / "help_page.html").read_text())
    assert paras == ["인쇄 설정", "이 대화 상자에서 문서를 인쇄할 때 사용할 & 프린터와 용지를 고릅니다.",
                     "설정은 다음 문서에도 그대로 남습니다.",
                     "This page was not translated yet and still speaks English to the reader.",
                     "여백을 먼저 확인하십시오.", "양면 인쇄를 켜면 종이를 아낍니다.", "OK"]


def test_mallard_cleaner_reads_titles_and_paragraphs_outside_info():
    paras = clean.mallard_paragraphs((FIX / "print.page").read_bytes())
    assert paras == ["문서 인쇄하기", "파일 메뉴에서 인쇄를 누릅니다.", "프린터를 고르고 양면 인쇄를 켭니다.",
                     "인쇄가 끝날 때까지 컴퓨터를 끄지 마십시오."]
    with pytest.raises(ValueError, match="Mallard"):
        clean.mallard_paragraphs(b"<page><p>unclosed</page>")


def test_faq_cleaner_splits_sections_joins_wrapped_lines_and_drops_the_contents():
    docs = clean.faq_documents((FIX / "faq.txt").read_text())
    assert [h for h, _ in docs] == ["1.1. What is this FAQ?", "1.2. Who writes it?", "2.1. How do I begin?"]
    assert docs[0][1] == ["This document answers common questions about an imaginary operating system. It is "
                          "written as plain text and wrapped at seventy columns.",
                          "A second paragraph follows after a blank line."]


def test_script_filter_fractions_and_decisions():
    assert clean.script_fraction("한국어 text", "ko") == pytest.approx(3 / 7)
    assert clean.script_fraction("Café olé", "en") == 1.0
    assert clean.script_fraction("1234 !?", "ko") == 0.0  # no letters at all
    keep = [p for p in clean.html_paragraphs((FIX / "help_page.html").read_text())
            if clean.keep_paragraph(p, "ko", 0.6, 10)]
    assert "This page was not translated yet and still speaks English to the reader." not in keep
    assert "OK" not in keep and "양면 인쇄를 켜면 종이를 아낍니다." in keep
    assert clean.keep_paragraph("A mostly English line with one 단어 inside it.", "en", 0.6, 10)
    assert not clean.keep_paragraph("대부분 한국어로 쓴 문장에 word 하나.", "en", 0.6, 10)


# ------------------------------------------------------------------------------- splits, BPE, chunks


def test_splits_are_disjoint_deterministic_and_attack_is_korean_only(small):
    rows = {s: read_jsonl(small / f"{s}.jsonl") for s in ("train", "eval", "attack")}
    docs = {s: {r["doc"] for r in rs} for s, rs in rows.items()}
    assert not (docs["train"] & docs["eval"]) and not (docs["train"] & docs["attack"])
    assert not (docs["eval"] & docs["attack"])
    assert {r["op"] for r in rows["attack"]} == {"ko"} and all(r["forget"] for r in rows["attack"])
    assert {r["op"] for r in rows["eval"]} == {"en", "ko"}
    assert all(r["forget"] == (r["op"] == "ko") and r["prompt"] == "" for rs in rows.values() for r in rs)
    cfg = LanguageConfig(**SMALL)
    for s, ds in docs.items():
        for d in ds:
            lang = "ko" if d.startswith("korean") else "en"
            assert split_of(d, lang, cfg, 0) == s
    ids = [f"doc{i}" for i in range(2000)]
    share = sum(split_of(d, "ko", cfg, 0) == "eval" for d in ids) / len(ids)
    assert abs(share - cfg.eval_fraction) < 0.05
    assert sum(split_of(d, "en", cfg, 0) == "attack" for d in ids) == 0


def test_tokenizer_special_ids_round_trip_and_autotokenizer_load(small):
    from transformers import AutoTokenizer

    tok = load_tokenizer(small)
    assert [tok.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>", "<unk>")] == [PAD_ID, BOS_ID, EOS_ID, UNK_ID]
    assert tok.get_vocab_size() == 400
    text = "새들은 사월에 돌아옵니다. Birds return in April! 😀 ünïcödé"  # unseen characters still round-trip
    ids = tok.encode(text, add_special_tokens=False).ids
    assert UNK_ID not in ids and tok.decode(ids) == text
    hf = AutoTokenizer.from_pretrained(str(small))
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    assert hf.encode(text, add_special_tokens=False) == ids and hf.decode(ids) == text


def test_chunks_fit_the_budget_and_keep_every_character():
    tok = train_tokenizer([(FIX / "english.txt").read_text(), (FIX / "korean.txt").read_text()], 350)
    paras = [p for p in (FIX / "korean.txt").read_text().splitlines() if p.strip()]
    for budget in (8, 25, 60):
        chunks = chunk(tok, paras, budget)
        assert all(len(tok.encode(c, add_special_tokens=False).ids) <= budget for c in chunks)
        squeeze = lambda s: "".join(s.split())  # noqa: E731  cuts and joins only move whitespace
        assert squeeze("".join(chunks)) == squeeze("".join(paras))
    assert len(chunk(tok, paras, 100_000)) == 1


def test_rows_of_make_data_fit_chunk_tokens(small):
    tok = load_tokenizer(small)
    for s in ("train", "eval", "attack"):
        for r in read_jsonl(small / f"{s}.jsonl"):
            assert 0 < len(tok.encode(r["answer"], add_special_tokens=False).ids) <= SMALL["chunk_tokens"]


def test_manifest_records_setting_sources_and_bytes(small):
    m = json.loads((small / "manifest.json").read_text())
    assert m["setting"] == "language" and setting_of(small / "eval.jsonl") is language
    assert set(m["source"]["files_in"]) == set(SMALL["retain_files"] + SMALL["forget_files"])
    assert m["utf8_bytes"]["train"]["ko"] > 0 and m["utf8_bytes"]["attack"]["en"] == 0


# ---------------------------------------------------------------------------------------- evaluator


def test_evaluator_ce_matches_a_hand_computation_and_hangul_mask(small):
    tok = load_tokenizer(small)
    mask = hangul_token_mask(tok, clean.is_hangul)
    for v in range(tok.get_vocab_size()):
        text = tok.decode([v]).removeprefix(" ")
        if mask[v]:
            assert text and all(map(clean.is_hangul, text))
    assert mask.any() and not mask[:4].any()
    rows = read_jsonl(small / "eval.jsonl")
    net = build_model(ModelConfig(vocab_size=400, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=32), 0)
    out = language.evaluator(tok, rows)(net)
    # by hand: one chunk at a time, CE over the chunk tokens and EOS
    sums = {}
    for r in rows:
        ids = [BOS_ID] + tok.encode(r["answer"], add_special_tokens=False).ids + [EOS_ID]
        with torch.no_grad():
            logp = net(torch.tensor([ids])).log_softmax(-1)[0, :-1]
        nll = -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
        h = mask[torch.tensor(ids[1:])]
        s = sums.setdefault(r["op"], [0.0, 0, 0.0, 0])
        s[0] += nll.sum().item(); s[1] += len(nll); s[2] += nll[h].sum().item(); s[3] += h.sum().item()
    assert out["ce_en"] == pytest.approx(sums["en"][0] / sums["en"][1], rel=1e-4)
    assert out["ce_forget"] == out["ce_ko"] == pytest.approx(sums["ko"][0] / sums["ko"][1], rel=1e-4)
    assert out["ce_retain"] == out["ce_en"]
    assert out["ce_forget_hangul"] == pytest.approx(sums["ko"][2] / sums["ko"][3], rel=1e-4)
    assert language.METRICS.forget == "ce_forget" and not language.METRICS.higher_is_better


# ------------------------------------------------------------------------------------------ sources


def test_files_source_reads_txt_and_jsonl_documents(tmp_path):
    j = tmp_path / "ko.jsonl"
    j.write_text(json.dumps({"id": "a", "text": "첫 문단입니다.\n둘째 문단입니다."}) + "\n")
    docs, extra = sources.files([str(FIX / "english.txt")], [str(j)])
    en = [d for d in docs if d["lang"] == "en"]
    assert len(en) == 8 and en[0]["doc"] == "english.txt#0" and len(en[0]["paragraphs"]) == 2
    assert [d for d in docs if d["lang"] == "ko"] == [
        {"doc": "ko.jsonl#a", "lang": "ko", "paragraphs": ["첫 문단입니다.", "둘째 문단입니다."]}]
    assert set(extra["files_in"]) == {str(FIX / "english.txt"), str(j)}
    with pytest.raises(sources.SourceUnavailable, match="missing.txt.*'debian-docs' or 'fineweb'"):
        sources.files([str(tmp_path / "missing.txt")], [str(j)])
    with pytest.raises(ValueError, match="language.forget_files"):
        sources.files([str(j)], [])


def test_fineweb_source_streams_local_data_up_to_the_token_cap(tmp_path, monkeypatch):
    """The hub path replaced by `datasets` streaming local JSON files of the same schema."""
    from datasets import load_dataset

    local = {"en": [(FIX / "english.txt").read_text()] * 5, "ko": [(FIX / "korean.txt").read_text()] * 5}
    for lang, texts in local.items():
        (tmp_path / f"{lang}.jsonl").write_text(
            "".join(json.dumps({"id": f"{lang}{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    opened = []

    def fake_open(name, config):
        opened.append((name, config))
        lang = "en" if "edu" in name else "ko"
        return load_dataset("json", data_files=str(tmp_path / f"{lang}.jsonl"), split="train", streaming=True)

    monkeypatch.setattr(sources, "open_stream", fake_open)
    per_doc = len((FIX / "korean.txt").read_text().encode()) // 3  # estimated tokens of one Korean document
    docs, extra = sources.fineweb(max_tokens=2 * per_doc)
    assert opened == [sources.FINEWEB["en"], sources.FINEWEB["ko"]]
    ko = [d for d in docs if d["lang"] == "ko"]
    assert [d["doc"] for d in ko] == ["HuggingFaceFW/fineweb-2/ko0", "HuggingFaceFW/fineweb-2/ko1"]
    assert ko[0]["paragraphs"][0].startswith("강은 마을")
    assert extra["datasets"]["ko"]["estimated_tokens"] == 2 * per_doc
    assert 2 <= sum(d["lang"] == "en" for d in docs) <= 5


def test_fineweb_without_network_names_the_other_sources(monkeypatch):
    def offline(name, config):
        raise ConnectionError("Couldn't reach the Hugging Face Hub (offline mode)")

    monkeypatch.setattr(sources, "open_stream", offline)
    with pytest.raises(sources.SourceUnavailable, match="fineweb.*no network.*'debian-docs' or 'files'"):
        sources.fineweb(max_tokens=10)


def test_debian_docs_without_apt_names_the_other_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no apt-get, no dpkg-deb
    with pytest.raises(sources.SourceUnavailable, match="apt-get is not on PATH.*'fineweb' or 'files'"):
        sources.debian_docs(tmp_path / "cache", ["debian-faq"])
    with pytest.raises(ValueError, match="unknown packages.*'nope'"):
        sources.debian_docs(tmp_path / "cache", ["nope"])


def fake_deb_tools(bin_dir: Path, fail_download: bool = False) -> None:
    """apt-get and dpkg-deb stand-ins: `download` writes a .deb that is a tar of a FAQ tree."""
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\n" + ("echo 'E: Failed to fetch' >&2; exit 100\n" if fail_download else
                                     f'for p in "$@"; do [ "$p" = download ] || cp "{bin_dir}/payload.tar" "${{p}}_1.0_all.deb"; done\n'))
    (bin_dir / "dpkg-deb").write_text('#!/bin/sh\nif [ "$1" = -f ]; then echo 1.0; else tar -xf "$2" -C "$3"; fi\n')
    for f in ("apt-get", "dpkg-deb"):
        (bin_dir / f).chmod(0o755)


def test_debian_docs_fetches_unpacks_and_records_versions(tmp_path, monkeypatch):
    tree = tmp_path / "tree" / "usr/share/doc/debian/FAQ"
    tree.mkdir(parents=True)
    with gzip.open(tree / "debian-faq.en.txt.gz", "wt") as f:
        f.write((FIX / "faq.txt").read_text())
    bin_dir = tmp_path / "bin"
    fake_deb_tools(bin_dir)
    subprocess.run(["tar", "-cf", str(bin_dir / "payload.tar"), "-C", str(tmp_path / "tree"), "usr"], check=True)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    docs, extra = sources.debian_docs(tmp_path / "cache", ["debian-faq"])
    assert [d["doc"] for d in docs] == ["debian-faq/en/debian-faq.en.txt.gz#1.1.", "debian-faq/en/debian-faq.en.txt.gz#1.2.",
                                        "debian-faq/en/debian-faq.en.txt.gz#2.1."]
    pkg = extra["packages"]["debian-faq"]
    assert pkg["version"] == "1.0" and pkg["deb"] == "debian-faq_1.0_all.deb" and len(pkg["sha256"]) == 64
    fake = tmp_path / "bin2"
    fake_deb_tools(fake, fail_download=True)  # cached .deb: no second download is attempted
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    assert sources.debian_docs(tmp_path / "cache", ["debian-faq"])[0] == docs
    with pytest.raises(sources.SourceUnavailable, match="apt-get download debian-faq-ko.*failed.*'fineweb' or 'files'"):
        sources.debian_docs(tmp_path / "cache", ["debian-faq-ko"])


def test_bad_config_values_name_the_key():
    for bad, match in [({"source": "web"}, r"source = 'web' is invalid.*'debian-docs'"),
                       ({"eval_fraction": 1.5}, r"eval_fraction = 1.5 is invalid"),
                       ({"vocab_size": 100}, r"vocab_size = 100 is invalid: .*>= 300")]:
        with pytest.raises(ValueError, match="^" + match):  # built directly: the key
            LanguageConfig(**bad)
        with pytest.raises(ValueError, match=r"^language\." + match):  # from the config: the key path
            LanguageConfig.from_dict(bad, "language")


# ------------------------------------------------------------------------------------------- report


def test_report_worst_case_takes_the_lowest_korean_ce():
    from pipeline_py.report import worst_case

    curves = pd.DataFrame([{"seed": 0, "model": m, "lr": lr, "aseed": 0, "step": step, "metric": k, "value": v}
                           for m in ("base", "oracle")
                           for lr, ce in ((0.1, 3.0), (0.2, 2.0)) for step in (0, 10)
                           for k, v in (("ce_forget", ce + (1.5 if step == 0 and lr == 0.2 else 0.0)),
                                        ("ce_retain", lr * 10))])
    m = language.METRICS
    wc = worst_case(curves, m.forget, m.higher_is_better).set_index(["model", "step"])
    assert wc.loc[("base", 0), "lr"] == 0.1 and wc.loc[("base", 0), "ce_forget"] == 3.0
    assert wc.loc[("base", 10), "lr"] == 0.2 and wc.loc[("base", 10), "ce_retain"] == 2.0


# ------------------------------------------------------------------------------------------ tiny study


def test_language_config_validates_and_plans_the_study(tmp_path):
    """configs/language.yaml passes the schema and plans every job; an arithmetic key in its data fails."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "pareto_plot", "--configfile",
           str(REPO / "configs" / "language.yaml"), "--config", f"results={tmp_path}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "make_data" in proc.stdout and "pareto_plot" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting: language\nlanguage: {source: debian-docs, add_max: 10}\n")
    proc = subprocess.run(cmd[:-2] + [str(bad), "--config", f"results={tmp_path}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "add_max" in proc.stdout + proc.stderr
    assert not any(p.name != "bad.yaml" for p in tmp_path.iterdir())


@pytest.mark.e2e
def test_tiny_language_study_runs_end_to_end(tmp_path):
    """The whole DAG on the `files` source: CE summary, figures, worst case = lowest Korean CE."""
    overlay = {**{k: v for k, v in yaml_config().items()}, "results": str(tmp_path)}
    (tmp_path / "tiny_language.yaml").write_text(json.dumps(overlay))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "pareto_plot", "--configfile",
                           str(REPO / "configs" / "language.yaml"), str(tmp_path / "tiny_language.yaml")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-5000:]
    summary = pd.read_csv(tmp_path / "language" / "summary.csv")
    assert summary.forget_attacked.map(math.isfinite).all() and (summary.forget_attacked > 0).all()
    base = summary[(summary.model == "base")].set_index("budget")
    assert base.loc[0, "forget_attacked"] == pytest.approx(base.loc[0, "forget_before"], rel=1e-3)
    paths = sorted((tmp_path / "language/seed0/attack/base").glob("*.csv"))
    assert [p.name for p in paths] == ["forget.csv"]  # one file for the forget family: every LR x attack seed
    assert str(paths[0]) == study.curve(str(tmp_path / "language"), "base", "forget", 0)
    curves = pd.concat(pd.read_csv(p) for p in paths)
    assert set(zip(curves.data, curves.lr, curves.seed)) == {("forget", 3.0e-3, 0)}
    last = curves[(curves.metric == "ce_forget") & (curves.step == curves.step.max())]
    assert base.loc[base.index.max(), "forget_attacked"] == pytest.approx(last.value.min())
    for name in ("relearning_curves", "pareto", "robustness_vs_compute"):
        assert (tmp_path / "language" / "figures" / f"{name}.png").stat().st_size > 1000


def yaml_config() -> dict:
    """The smallest study of the language setting (seconds per job)."""
    return {"language": dict(SMALL), "precision": "fp32", "filter": {"n_labeled": 8},
            "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 32},
            "pretrain": {"steps": 30, "lr": 3.0e-3, "batch_size": 4, "seq_len": 32, "warmup": 3},
            "unlearn": {"batch_size": 4, "methods": ["maxent"],
                        "hparams": {"maxent": {"steps": 3, "lr": 3.0e-4, "retain_weight": 1.0}}},
            "noise": {"alphas": [0.5], "beta": 0.1, "fresh_init": False, "methods": ["maxent"]},  # 6 models
            "distill": {"steps": 10, "lr": 3.0e-3, "batch_size": 4, "seq_len": 32, "warmup": 2,
                        "stop_within": 0.1, "check_every": 5},
            "oracle_match": {"inits": [], "steps": 5},
            "attack": {"lrs": [3.0e-3], "families": ["forget"], "seeds": [0], "steps": 6, "eval_every": 3,
                       "batch_size": 4, "seq_len": 32},
            "report": {"budgets": [0, 6]}}
