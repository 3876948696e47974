"""Where the English and Korean documents come from. Each source returns `(documents, manifest entries)`
with documents as dicts `{"doc": id, "lang": "en" | "ko", "paragraphs": [str, ...]}` (uncleaned by the
script filter; `make_data` applies it).

- `debian-docs`: Debian's documentation packages, fetched with `apt-get download` and unpacked with
  `dpkg-deb -x` into a cache directory (nothing is installed); offline once cached.
- `fineweb`: FineWeb-Edu (English) and FineWeb-2 `kor_Hang` (Korean), streamed with `datasets`, each
  capped at `max_tokens` (estimated as UTF-8 bytes / 3, the rate of a small byte-level BPE on Korean).
- `files`: the user's own text (`.txt`: documents separated by blank lines; `.jsonl`: one `text` per line).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from ..atomic import atomic_path
from .clean import faq_documents, html_paragraphs, mallard_paragraphs

SOURCES = ("debian-docs", "fineweb", "files")
# package -> [(language, directory inside the package, file pattern, format)]
DEBIAN_DOCS = {
    "libreoffice-help-en-us": [("en", "usr/share/libreoffice/help/en-US/text", "**/*.html", "html")],
    "libreoffice-help-ko": [("ko", "usr/share/libreoffice/help/ko/text", "**/*.html", "html")],
    "installation-guide-amd64": [("en", "usr/share/doc/installation-guide-amd64/en", "*.html", "html"),
                                 ("ko", "usr/share/doc/installation-guide-amd64/ko", "*.html", "html")],
    "gnome-user-docs": [("en", "usr/share/help/C", "**/*.page", "mallard"),
                        ("ko", "usr/share/help/ko", "**/*.page", "mallard")],
    "debian-faq": [("en", "usr/share/doc/debian/FAQ", "debian-faq.en.txt.gz", "faq")],
    "debian-faq-ko": [("ko", "usr/share/doc/debian/FAQ", "debian-faq.ko.txt.gz", "faq")],
}
FINEWEB = {"en": ("HuggingFaceFW/fineweb-edu", "sample-10BT"), "ko": ("HuggingFaceFW/fineweb-2", "kor_Hang")}


class SourceUnavailable(RuntimeError):
    """The configured source cannot be obtained on this machine."""


def unavailable(source: str, why: str) -> SourceUnavailable:
    others = [s for s in SOURCES if s != source]
    return SourceUnavailable(f"language.source={source!r} cannot be obtained: {why}. Use another source: "
                             f"{' or '.join(repr(s) for s in others)} (language.retain_files / language.forget_files "
                             f"for 'files')")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------- debian-docs


def fetch_debs(cache: Path, packages: list[str]) -> dict[str, Path]:
    """`apt-get download` each package not yet in `cache/debs`; returns package -> .deb path."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = {p: next(iter(sorted(debs.glob(f"{p}_*.deb"))), None) for p in packages}
    missing = [p for p, f in found.items() if f is None]
    if missing:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise unavailable("debian-docs", f"{tool} is not on PATH (not a Debian-based system)")
        proc = subprocess.run(["apt-get", "download", *missing], cwd=debs, capture_output=True, text=True)
        if proc.returncode != 0:
            raise unavailable("debian-docs", f"'apt-get download {' '.join(missing)}' failed "
                                             f"(no network or package lists?): {proc.stderr.strip()[-400:]}")
        found = {p: next(iter(sorted(debs.glob(f"{p}_*.deb"))), None) for p in packages}
        if any(f is None for f in found.values()):
            raise unavailable("debian-docs", f"apt-get left no .deb for {[p for p, f in found.items() if not f]}")
    return found


def unpack(deb: Path, root: Path) -> str:
    """`dpkg-deb -x` into `root/<package>` (once; a marker records completion); returns the version."""
    if shutil.which("dpkg-deb") is None:
        raise unavailable("debian-docs", "dpkg-deb is not on PATH (not a Debian-based system)")
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    marker = root / f".{deb.name}.done"
    if not marker.is_file():
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)
        with atomic_path(marker) as tmp:
            Path(tmp).write_text(version)
    return version


def read_format(path: Path, fmt: str) -> list[tuple[str, list[str]]]:
    """(suffix of the document id, paragraphs) for each document in one file."""
    if fmt == "faq":
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            return [(f"#{heading.split()[0]}", paras) for heading, paras in faq_documents(f.read())]
    text = path.read_bytes()
    paras = mallard_paragraphs(text) if fmt == "mallard" else html_paragraphs(text.decode("utf-8", "replace"))
    return [("", paras)]


def debian_docs(cache_dir: str | Path, packages: list[str] | None = None) -> tuple[list[dict], dict]:
    packages = list(packages or DEBIAN_DOCS)
    unknown = sorted(set(packages) - set(DEBIAN_DOCS))
    if unknown:
        raise ValueError(f"language.packages: unknown packages {unknown}; known: {sorted(DEBIAN_DOCS)}")
    cache = Path(cache_dir)
    debs = fetch_debs(cache, packages)
    root = cache / "root"
    root.mkdir(parents=True, exist_ok=True)
    docs, manifest = [], {}
    for pkg in packages:
        version = unpack(debs[pkg], root)
        manifest[pkg] = {"version": version, "deb": debs[pkg].name, "sha256": sha256(debs[pkg])}
        for lang, sub, pattern, fmt in DEBIAN_DOCS[pkg]:
            for path in sorted((root / sub).glob(pattern)):
                rel = path.relative_to(root / sub).as_posix()
                for suffix, paras in read_format(path, fmt):
                    docs.append({"doc": f"{pkg}/{lang}/{rel}{suffix}", "lang": lang, "paragraphs": paras})
    return docs, {"packages": manifest}


# -------------------------------------------------------------------------------------------- fineweb


def open_stream(name: str, config: str):
    """The hub dataset as a streamed iterable of rows (network); tests replace this function."""
    from datasets import load_dataset

    return load_dataset(name, config, split="train", streaming=True)


def fineweb(max_tokens: int) -> tuple[list[dict], dict]:
    docs, manifest = [], {}
    for lang, (name, config) in FINEWEB.items():
        try:
            stream = open_stream(name, config)
            used = 0
            for i, row in enumerate(stream):
                if used >= max_tokens:
                    break
                text = row["text"]
                used += len(text.encode()) // 3
                paras = [p.strip() for p in text.split("\n") if p.strip()]
                docs.append({"doc": f"{name}/{row.get('id', i)}", "lang": lang, "paragraphs": paras})
        except ImportError as e:
            raise unavailable("fineweb", f"the datasets package is missing (pip install '.[hub]'): {e}") from e
        except (ConnectionError, OSError, TimeoutError) as e:  # requests/httpx errors derive from OSError
            raise unavailable("fineweb", f"streaming {name} ({config}) failed (no network?): {e}") from e
        manifest[lang] = {"dataset": name, "config": config, "estimated_tokens": used}
    return docs, {"datasets": manifest}


# ---------------------------------------------------------------------------------------------- files


def text_documents(path: Path) -> list[tuple[str, list[str]]]:
    """(id suffix, paragraphs) per document: blank-line separated blocks of a .txt, rows of a .jsonl."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [(f"#{r.get('id', i)}", [p for p in r["text"].split("\n") if p.strip()]) for i, r in enumerate(rows)]
    blocks = [b.strip() for b in path.read_text(encoding="utf-8").split("\n\n")]
    return [(f"#{i}", [p for p in b.split("\n") if p.strip()]) for i, b in enumerate(blocks) if b]


def files(retain_files: list[str], forget_files: list[str]) -> tuple[list[dict], dict]:
    docs, manifest = [], {}
    for lang, key, paths in (("en", "retain_files", retain_files), ("ko", "forget_files", forget_files)):
        if not paths:
            raise ValueError(f"language.{key} must list at least one file for language.source='files', got {paths!r}")
        for p in map(Path, paths):
            if not p.is_file():
                raise unavailable("files", f"language.{key} names {str(p)!r}, which is not a file")
            docs += [{"doc": f"{p.name}{suffix}", "lang": lang, "paragraphs": paras}
                     for suffix, paras in text_documents(p)]
            manifest[str(p)] = {"sha256": sha256(p)}
    return docs, {"files_in": manifest}
